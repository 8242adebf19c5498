"""Run `notes-tui ARGS…` and SIGKILL the process at a chosen point: `KILL_BEFORE_JOURNAL_BATCH=k` kills it when
the k-th committed batch is about to be written to the journal, i.e. after the database committed it. A random
kill hits that window (well under a millisecond per batch) too rarely to test; this hits it every time.

    python tests/killpoint.py --run exp.toml
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.journal import Journal  # noqa: E402

_real = Journal.append_units
_seen = 0


def _append_units(self, units, counts=None):
    global _seen
    _seen += 1
    if _seen == int(os.environ["KILL_BEFORE_JOURNAL_BATCH"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _real(self, units, counts)


Journal.append_units = _append_units  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.cli import main

    sys.exit(main(sys.argv[1:]))
