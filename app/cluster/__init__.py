"""Ollama servers without a screen: which are known, how they are, their models and pulls (and, with the Slurm
issue, the user's server jobs). The TUI and the `server` / `models` commands both call this package."""
