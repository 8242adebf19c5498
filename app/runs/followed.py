"""What a monitor knows of the one run it follows, built from its feed's updates: counts, total, rates, in-flight
and limits, label tallies, invalid reasons, how it ended — and each finished note as a log line. No UI here: the
Runs screen draws it, the tests check it without a terminal.

    followed = FollowedRun(ledger_dir, run_id)
    lines, _ = followed.apply(update)      # a FeedUpdate from followed.follower.poll(); returns the new log lines
    followed.eta_s, followed.fraction, followed.why_invalid(), followed.labels, followed.reasons
    followed.waiting, followed.waiting_words()   # what it waits on (its servers, writing its results), in words
"""

from __future__ import annotations

import collections
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from app.engine.events import Counts, Waiting
from app.runs.follow import FeedFollower, FeedUpdate

RATE_POINTS = 60  # the sparkline's history: one point per change of the recent rate


def log_line(unit: dict[str, Any]) -> str:
    """One finished note: time, id, outcome, labels, attempts, latency, tokens — never note text or free text."""
    t = unit.get("t")
    when = datetime.fromtimestamp(t).strftime("%H:%M:%S") if isinstance(t, int | float) else "--:--:--"
    labels = " ".join(f"{k}={v}" for k, v in (unit.get("answer") or {}).items()) or "-"
    latency = unit.get("latency_ms")
    took = f"{latency:.0f} ms" if isinstance(latency, int | float) else "- ms"
    extra = (" TRUNCATED" if unit.get("truncated") else "") + (f" ({unit['error']})" if unit.get("error") else "")
    return (f"{when} {unit.get('outcome', '?'):<7} {str(unit.get('id', '?'))[:24]}  {labels}  "
            f"a{unit.get('attempts', 0)} {took} {unit.get('tokens_in') or 0}/{unit.get('tokens_out') or 0} tok{extra}")


class FollowedRun:
    """The followed run's state; `apply` each update in the order the follower gave them."""

    def __init__(self, ledger_dir: Path, run_id: str, follower: FeedFollower | None = None):
        self.run_id = run_id
        self.ledger_dir = ledger_dir
        self.follower = follower or FeedFollower(ledger_dir, run_id)
        self.counts: Counts | None = None
        self.total: int | None = None
        self.rate: float | None = None
        self.in_flight: int | None = None
        self.limits: dict[str, int] = {}  # each host's in-flight limit now
        self.elapsed_s: float | None = None
        self.ended: dict | None = None
        self.waiting: list[Waiting] = []  # what the run waits on now: its servers, writing its results
        self.rates: collections.deque[float] = collections.deque(maxlen=RATE_POINTS)
        self.labels: dict[str, collections.Counter] = {}
        self.reasons: collections.Counter[str] = collections.Counter()  # invalid answers by reason (ledger.reasons)
        self.seen = 0
        self.start_error: str | None = None  # a run started here that ended before its feed did: why (its log)
        # one read of the feed at a time: a read slower than the poll interval (NFS, a busy node) would otherwise
        # overlap the next one, and both would hand out the same new lines
        self.reading = threading.Lock()
        self.header: dict = {}
        self.fields: list = []
        self.read_header()

    def read_header(self) -> None:
        """The journal's header (answer fields, server jobs): a run just started has none yet, so ask again."""
        from app.runs.running import journal_header
        from ledger.answers import answer_fields

        header = journal_header(self.ledger_dir, self.run_id)
        if header:
            self.header = header
            self.fields = [f for f in answer_fields(header.get("answer_schema")) if f.categorical]

    def apply(self, update: FeedUpdate) -> tuple[list[str], bool]:
        """Take one update; (the log lines of the notes it finished, whether the recent rate moved)."""
        if update.header:
            self.total = update.header.get("total", self.total)
        if update.counts is not None:
            self.counts = update.counts
        rate_moved = update.recent_rate is not None and update.recent_rate != self.rate
        if rate_moved:
            self.rates.append(update.recent_rate)
        self.rate = update.recent_rate if update.recent_rate is not None else (update.rate or self.rate)
        self.in_flight = update.in_flight if update.in_flight is not None else self.in_flight
        self.limits = update.limits if update.limits is not None else self.limits
        self.elapsed_s = update.elapsed_s if update.elapsed_s is not None else self.elapsed_s
        self.ended = update.ended or self.ended
        if update.waiting is not None:
            self.waiting = update.waiting
        if self.ended is not None:
            self.waiting = []
        for u in update.units:
            if u.get("outcome") == "invalid" and u.get("error"):
                self.reasons[str(u["error"])] += 1
            for field in self.fields:
                value = (u.get("answer") or {}).get(field.name)
                if value is not None:
                    self.labels.setdefault(field.name, collections.Counter())[value] += 1
        self.seen += len(update.units)
        return [log_line(u) for u in update.units], rate_moved

    @property
    def shown_counts(self) -> Counts:
        return self.counts or Counts()

    @property
    def shown_total(self) -> int:
        return self.total or self.shown_counts.total

    @property
    def fraction(self) -> float:
        total = self.shown_total
        return self.shown_counts.done / total if total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds to the end at the recent rate; None when ended, unknown or without a rate."""
        done, total = self.shown_counts.done, self.shown_total
        if self.ended is not None or not self.rate or not total or done >= total:
            return None
        return (total - done) / self.rate

    def waiting_words(self, now: float | None = None) -> list[str]:
        """What the run waits on, one line each (Waiting.words): which server or database, since when, the error,
        and when it gives up."""
        return [w.words(now) for w in self.waiting]

    def labels_scope(self) -> str:
        """The label tallies cover the notes seen since following began: say so when that is not all of them."""
        done = self.shown_counts.done or self.seen
        return "" if self.seen >= done else f" (the last {self.seen:,} notes)"

    def why_invalid(self) -> str:
        """Once most answers fail validation (or the run ended with some that did), the cause and what to do: the
        same words as the run's closing lines and ledger show."""
        from ledger.reasons import commonest, reason_text

        c = self.shown_counts
        reasons = (self.ended or {}).get("reasons") or self.reasons
        answered = c.valid + c.invalid
        if not reasons or not c.invalid or (self.ended is None and 2 * c.invalid <= answered):
            return ""
        return f"{c.invalid:,} invalid: {reason_text(commonest(reasons))}"
