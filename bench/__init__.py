"""Benchmarks: run from the repository root as `python -m bench.<name>`, so that `app` and `tests` import from it."""
