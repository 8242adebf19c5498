"""Run `notes-tui ARGS…` with a fault planted at a chosen point, in a real process:

- `KILL_BEFORE_JOURNAL_BATCH=k`: SIGKILL the process when the k-th committed batch is about to be written to the
  journal, i.e. after the database committed it. A random kill hits that window (well under a millisecond per batch)
  too rarely to test; this hits it every time.
- `BUG_IN_WRITE=k`: the k-th results write raises an unexpected error (a stand-in for a bug), so the run takes the
  path that prints a traceback for a bug report.

    python -m tests.helpers.faultpoint --run exp.toml   (from the repository root: `app` is this checkout's)
"""

from __future__ import annotations

import os
import signal
import sys

from app.sources.base import Source
from ledger.journal import Journal


def _nth(env: str, fn, fault):
    """Wrap `fn` so that its n-th call (n from the environment variable `env`) does `fault` first."""
    seen = 0
    at = int(os.environ[env])

    def wrapped(*args, **kwargs):
        nonlocal seen
        seen += 1
        if seen == at:
            fault()
        return fn(*args, **kwargs)

    return wrapped


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _bug() -> None:
    raise RuntimeError("a planted bug in the results write")


def _plant() -> None:
    if os.environ.get("KILL_BEFORE_JOURNAL_BATCH"):
        Journal.append_units = _nth("KILL_BEFORE_JOURNAL_BATCH", Journal.append_units, _kill)  # type: ignore[method-assign]
    if os.environ.get("BUG_IN_WRITE"):
        for cls in _sources():
            cls.write_results = _nth("BUG_IN_WRITE", cls.write_results, _bug)  # type: ignore[method-assign]


def _sources() -> list[type[Source]]:
    from app.sources.mysql import MySQLSource
    from app.sources.sqlite import SqliteSource

    return [MySQLSource, SqliteSource]


if __name__ == "__main__":
    _plant()
    from app.cli import main

    sys.exit(main(sys.argv[1:]))
