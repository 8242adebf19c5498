"""The run journal as an engine subscriber: header at start, a record per committed batch, checkpoints, close."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from app.engine.events import BatchCommitted, Counts, Progress, RunFinished, RunStarted, UnitDone
from ledger import Journal

CHECKPOINT_EVERY_S = 5.0


class JournalRecorder:
    """`on_failure` hears of a journal that cannot be written (disk full, NFS gone, or a bug): a run that cannot be
    recorded must not go on as if it were, so unlike other subscribers' errors, these stop the run.

    The counts it records are those of the committed batches, not the engine's live counts: those also hold notes
    answered but not yet written (or never written, when a write failed), and the journal must never claim a row
    the results table lacks. Every batch record carries them, so a run killed between checkpoints still has
    counts that add up to its rows."""

    def __init__(self, ledger_dir: Path, on_failure: Callable[[Exception], None] | None = None,
                 reserve_bytes: int = 0):
        self.ledger_dir = ledger_dir
        self.journal: Journal | None = None
        self._last_checkpoint = 0.0
        self.on_failure = on_failure
        self.reserve_bytes = reserve_bytes  # see Journal: room for the last batch and the close on a full disk
        self.saved = Counts()
        self._told_full = False

    def __call__(self, event: object) -> None:
        try:
            self._record(event)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the run is no longer recorded
            if self.on_failure is None:
                raise
            self.on_failure(exc)
            return
        full = self.journal.space_error if self.journal is not None else None
        if full is not None and not self._told_full:
            # this record went into the reserve: stop now, while there is still room to close the journal
            self._told_full = True
            if self.on_failure is None:
                raise full
            self.on_failure(full)

    def _record(self, event: object) -> None:
        if isinstance(event, RunStarted):
            self.saved = Counts(total=event.total)
            self.journal = Journal.create(self.ledger_dir, event.header, run_id=event.run_id,
                                          reserve_bytes=self.reserve_bytes)
            self._last_checkpoint = time.monotonic()
        elif self.journal is None:
            return
        elif isinstance(event, BatchCommitted):
            for unit in event.units:
                _tally(self.saved, unit)
            self.journal.append_units([u.record() for u in event.units], self._counts(event.counts))
        elif isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last_checkpoint >= CHECKPOINT_EVERY_S:
                self._last_checkpoint = now
                self.journal.checkpoint(self._counts(event.counts))
        elif isinstance(event, RunFinished):
            facts = {k: event.extra[k] for k in ("server", "in_flight", "model_load") if event.extra.get(k)}
            self.journal.close(event.status, self._counts(event.counts), event.last_error, facts=facts or None)

    def _counts(self, live: Counts) -> dict[str, int]:
        out = self.saved.as_dict()
        out["replaced_bytes"] = live.replaced_bytes  # a property of the notes read, not of the rows written
        out["total"] = max(self.saved.total, live.total)  # a duplicated id's copies are units the survey counted once
        return out


def _tally(c: Counts, u: UnitDone) -> None:
    c.done += 1
    if u.outcome in ("valid", "invalid", "empty"):
        setattr(c, u.outcome, getattr(c, u.outcome) + 1)
    else:
        c.errors += 1
    c.retried += u.attempts > 1
    c.truncated += bool(u.truncated)
    c.tokens_in += u.tokens_in or 0
    c.tokens_out += u.tokens_out or 0
