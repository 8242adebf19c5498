"""The run journal as an engine subscriber: header at start, a record per committed batch, checkpoints, close."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from app.engine.events import BatchCommitted, Progress, RunFinished, RunStarted
from ledger import Journal

CHECKPOINT_EVERY_S = 5.0


class JournalRecorder:
    """`on_failure` hears of a journal that cannot be written (disk full, NFS gone): a run that cannot be recorded
    must not go on as if it were."""

    def __init__(self, ledger_dir: Path, on_failure: Callable[[OSError], None] | None = None):
        self.ledger_dir = ledger_dir
        self.journal: Journal | None = None
        self._last_checkpoint = 0.0
        self.on_failure = on_failure

    def __call__(self, event: object) -> None:
        try:
            self._record(event)
        except OSError as exc:
            if self.on_failure is None:
                raise
            self.on_failure(exc)

    def _record(self, event: object) -> None:
        if isinstance(event, RunStarted):
            self.journal = Journal.create(self.ledger_dir, event.header, run_id=event.run_id)
            self._last_checkpoint = time.monotonic()
        elif self.journal is None:
            return
        elif isinstance(event, BatchCommitted):
            self.journal.append_units([u.record() for u in event.units])
        elif isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last_checkpoint >= CHECKPOINT_EVERY_S:
                self._last_checkpoint = now
                self.journal.checkpoint(event.counts.as_dict())
        elif isinstance(event, RunFinished):
            self.journal.close(event.status, event.counts.as_dict(), event.last_error)
