"""The live feed as an engine subscriber: each finished note, a progress line a second and what the run waits on
(its servers, or writing its results), for the run monitor.

The journal records units per committed batch (it never claims a row the results table lacks), which can be minutes
apart; this writes every UnitDone at once to `<ledger>/live/<run>.jsonl` (format in ledger/feed.py), marked
provisional. Lines are buffered and appended at most every FLUSH_EVERY_S and at the end, never fsynced: the engine's
CPU per note must not notice it, and a crash may lose the last fraction of a second of a feed, never a result.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from app.engine.events import Progress, RunFinished, RunStarted, UnitDone, Waiting
from ledger.feed import FeedWriter, prune_feeds

FLUSH_EVERY_S = 0.2
HEADER_KEYS = ("experiment", "total", "model", "backend", "hosts", "hostname", "pid", "pid_start", "slurm",
               "shard", "started_at")


class LiveFeed:
    def __init__(self, ledger_dir: Path, flush_every_s: float = FLUSH_EVERY_S):
        self.ledger_dir = Path(ledger_dir)
        self.flush_every_s = flush_every_s
        self.writer: FeedWriter | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, event: object) -> None:
        try:
            self._feed(event)
        except OSError as exc:  # the feed is a convenience: losing it must not cost the run
            self._give_up(exc)

    def _feed(self, event: object) -> None:
        if isinstance(event, UnitDone):
            if self.writer is not None:
                self.writer.add("unit", event.record())
                self._flush_soon()
        elif isinstance(event, Progress):
            if self.writer is not None:
                c = event.counts
                line = {"counts": c.as_dict(), "in_flight": event.in_flight, "limits": event.limits,
                        "elapsed_s": round(event.elapsed_s, 3),
                        "rate": round(c.done / event.elapsed_s, 3) if event.elapsed_s > 0 else 0.0}
                if event.waiting:  # repeated each second, so a follower that attaches mid-wait knows it too
                    line["waiting"] = [w.record() for w in event.waiting]
                self.writer.add("progress", line)
                self._flush_soon()
        elif isinstance(event, Waiting):
            if self.writer is not None:
                self.writer.add("waiting", event.record())
                self._flush_soon()
        elif isinstance(event, RunStarted):
            prune_feeds(self.ledger_dir)
            header = {k: event.header.get(k) for k in HEADER_KEYS}
            self.writer = FeedWriter.create(self.ledger_dir, event.run_id, header)
        elif isinstance(event, RunFinished) and self.writer is not None:
            self._cancel_timer()
            self.writer.add("end", {"status": event.status, "reason": event.reason, "last_error": event.last_error,
                                    "counts": event.counts.as_dict(), "elapsed_s": round(event.elapsed_s, 3),
                                    "reasons": event.extra.get("reasons") or {}})
            self.writer.close()

    def _flush_soon(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside an event loop (a test feeding events by hand): write now
            self._flush()
            return
        self._timer = loop.call_later(self.flush_every_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self.writer is None:
            return
        try:
            self.writer.flush()
        except OSError as exc:
            self._give_up(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _give_up(self, exc: OSError) -> None:
        self._cancel_timer()
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass
        print(f"notes-tui: the live feed cannot be written ({exc.strerror or exc}); the run goes on, and monitors "
              "show it from the journal, batch by batch", file=sys.stderr, flush=True)
