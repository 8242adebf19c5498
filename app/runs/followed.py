"""What a monitor knows of the one run it follows, built from its feed's updates: counts, total, rates, in-flight
and limits, label tallies, invalid reasons, how it ended — and each finished note as a log line. No UI here: the
Runs screen draws it, the tests check it without a terminal.

    followed = FollowedRun(ledger_dir, run_id)
    lines, _ = followed.apply(update)      # a FeedUpdate from followed.follower.poll(); returns the new log lines
    followed.eta_s, followed.fraction, followed.why_invalid(), followed.labels, followed.reasons
    followed.waiting, followed.waiting_words()   # what it waits on (its servers, writing its results), in words
    followed.recorded = running_run        # the ledger's row (app.runs.running), refreshed every few seconds
    followed.state, followed.row_words()   # where it is in the ledger's words (app.runs.states): running, completed,
                                           # interrupted, failed: <why>, crashed — whoever told it first
    followed.duration_s, followed.final_rate, followed.rate_peak   # once it ended: how long, notes/s over the run
"""

from __future__ import annotations

import collections
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from app.engine.events import Counts, Waiting
from app.runs.follow import FeedFollower, FeedUpdate, counts_from
from app.runs.running import RunningRun
from app.runs.states import ENDED, RunState, run_state

RATE_POINTS = 60  # the sparkline's history: one point per change of the recent rate
QUIET_S = 2.0  # a run the ledger has closed whose feed grew by nothing for this long: its feed is read to the end


def waiting_state(waits: list[Waiting]) -> str:
    """The run's state in its row while it waits: servers first."""
    on = {w.on: w for w in waits}
    if "servers" in on:
        return "waiting for server" + ("s" if len(on["servers"].where) > 1 else "")
    if "model" in on:
        return "loading model"
    return "cannot write results"


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
        self.recorded: RunningRun | None = None  # the ledger's row, as of its last read
        self.exit_code: int | None = None  # a run this app started: its process's exit status, once it exited
        self.exit_line: str | None = None  # ... and the last line of its log
        self.feed_done = False  # the ledger closed the run and its feed had nothing more: stop reading it
        self._quiet_since: float | None = None
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
        # one point per change of the recent rate: each progress line's when a poll read many (a run followed
        # after it ended, a long backlog), so its curve is drawn, not only its last point
        rate_moved = False
        last = self.rates[-1] if self.rates else None
        for rate in update.recent_rates or ([update.recent_rate] if update.recent_rate is not None else []):
            if rate != last:
                self.rates.append(rate)
                last, rate_moved = rate, True
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

    def polled(self, bytes_read: int, now: float) -> None:
        """After each read of the feed: once the ledger says the run is over (closed, or crashed: no end line will
        come) and the feed has grown by nothing for QUIET_S, it is read to its end (`feed_done`): stop polling."""
        if bytes_read:
            self._quiet_since = None
            return
        if self._quiet_since is None:
            self._quiet_since = now
        if self.ended is not None or (self.state.over and now - self._quiet_since >= QUIET_S):
            self.feed_done = True

    @property
    def state(self) -> RunState:
        """Where the run is, in the ledger's words: the ledger once it has closed the run, else the feed's end line,
        else the exit status of the process this app started (app.runs.states); `starting` while the ledger has not
        heard of it."""
        r = self.recorded
        # a feed that has begun says the run is under way before the ledger's index does
        recorded = r.status if r is not None else "running" if self.follower_saw_run else None
        return run_state(recorded, r.last_error if r is not None else None,
                         self.ended, self.exit_code, self.exit_line)

    @property
    def follower_saw_run(self) -> bool:
        return self.counts is not None or self.total is not None or self.seen > 0

    def row_words(self) -> str:
        """What its row says: how it ended, or what it waits on, or running."""
        state = self.state
        if not state.over and self.waiting:
            return waiting_state(self.waiting)
        return state.row_words

    @property
    def shown_counts(self) -> Counts:
        """While it runs, the feed's counts (fresher than the journal's per batch); once the ledger has it over, the
        ledger's: the record, which a crash's feed may pass by the notes of a batch never written. Without either
        (a feed gone after 7 days), whatever is known: a run that ended keeps the counts it ended with."""
        r = self.recorded
        recorded = counts_from(r.counts) if r is not None and r.counts else None
        if recorded is not None and (r.status in ENDED or self.counts is None):
            return recorded
        return self.counts or recorded or Counts()

    @property
    def shown_total(self) -> int:
        recorded = self.recorded.total if self.recorded is not None else None
        return self.total or recorded or self.shown_counts.total

    @property
    def fraction(self) -> float:
        total = self.shown_total
        return self.shown_counts.done / total if total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds to the end at the recent rate; None when ended, unknown or without a rate."""
        done, total = self.shown_counts.done, self.shown_total
        if self.ended is not None or self.state.over or not self.rate or not total or done >= total:
            return None
        return (total - done) / self.rate

    @property
    def duration_s(self) -> float | None:
        """How long a run that ended took: the feed's end line, else the ledger's start to close; None while it
        runs."""
        if self.ended is not None and isinstance(self.ended.get("elapsed_s"), int | float):
            return float(self.ended["elapsed_s"])
        if self.state.over and self.recorded is not None:
            return self.recorded.duration_s
        return None

    @property
    def final_rate(self) -> float | None:
        """Notes/s over the whole of a run that ended (notes done / duration): a run of a few seconds never has a
        settled recent rate, this it has."""
        took = self.duration_s
        done = self.shown_counts.done
        return done / took if took and done else None

    @property
    def rate_peak(self) -> float | None:
        """The top of the sparkline's scale: it is drawn from 0 to the highest recent rate it holds."""
        return max(self.rates) if self.rates else None

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
