"""Following one run's live feed by new bytes only (the feed's format: ledger/feed.py).

    follower = FeedFollower(ledger_dir, run_id)
    update = follower.poll()      # every 0.5-1 s; never blocks on the run, never raises on a strange line
    update.units                  # the unit lines finished since the last poll, oldest first (dicts)
    update.counts                 # the run's Counts now, or None until known
    update.ended                  # the feed's end line once the run closed (status, reason, counts), else None
    update.waiting                # what the run waits on now (its servers, writing its results): Waiting, or []

The follower keeps no history: memory stays flat however long the run, and the caller keeps the last few thousand
unit lines it wants to show. Counts are exact: each progress line carries the run's counts, and the units after it
are tallied on top (the feed is written in the engine's event order).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.engine.events import Counts, Waiting
from ledger.feed import Tail, feed_path, parse_line, read_first_line, read_new_bytes

GLANCE_BYTES = 256 << 10  # a glance reads this much of a feed's end: a second of notes at 1,000 notes/s
RATE_WINDOW_S = 10.0  # the recent rate spans this much run time: a run at 0.5 notes/s finishes 0 or 1 note a second
BACKLOG_BYTES = 1 << 20  # attaching to a running feed: read at most its last MiB (~4,000 notes), not hours of them
_COUNT_FIELDS = frozenset(f.name for f in fields(Counts))


def waits_from(record: dict[str, Any]) -> list[Waiting]:
    """What a progress line says the run waits on (none when it says nothing, or nothing that reads as a wait)."""
    listed = record.get("waiting")
    return [w for w in map(Waiting.from_record, listed if isinstance(listed, list) else []) if w is not None]


def counts_from(record: Any) -> Counts | None:
    if not isinstance(record, dict):
        return None
    return Counts(**{k: v for k, v in record.items() if k in _COUNT_FIELDS and isinstance(v, int)})


@dataclass(frozen=True)
class Glance:
    """A running run nobody follows, from its feed's last progress line: its counts (the index has them only as of
    its last batch) and what it waits on (the index has nothing of that)."""

    counts: Counts | None
    waiting: tuple[Waiting, ...] = ()


def glance(path: Path, tail_bytes: int = GLANCE_BYTES) -> Glance | None:
    """The last progress line of the feed at `path`, or None: no feed, no progress line in its last `tail_bytes`, or
    an end line after it (the run closed: the index says how)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    start = max(0, size - tail_bytes)
    got = read_new_bytes(path, start, tail_bytes)
    if got is None:
        return None
    lines = got[1].split(b"\n")
    if start > 0:
        lines = lines[1:]  # begun mid-line
    for line in reversed(lines):
        record = parse_line(line) if line.strip() else None
        kind = record.get("type") if record else None
        if kind == "end":
            return None
        if kind == "progress":
            return Glance(counts_from(record.get("counts")), tuple(waits_from(record)))
    return None


@dataclass
class FeedUpdate:
    units: list[dict[str, Any]] = field(default_factory=list)
    counts: Counts | None = None
    in_flight: int | None = None
    limits: dict[str, int] | None = None  # each host's in-flight limit, as the run found it (engine/limit.py)
    elapsed_s: float | None = None
    rate: float | None = None  # notes/s since the run started
    recent_rate: float | None = None  # notes/s over the last RATE_WINDOW_S of progress lines (sparkline, ETA)
    recent_rates: list[float] = field(default_factory=list)  # each recent rate this poll read, oldest first (one
    # poll of a run that ended, or of a long backlog, reads many progress lines: the sparkline gets each of them)
    header: dict[str, Any] | None = None  # the feed's first line: experiment, total, model, hostname, pid, ...
    ended: dict[str, Any] | None = None
    waiting: list[Waiting] | None = None  # what the run waits on now; None: not told (a hand-made update)
    bytes_read: int = 0  # by this poll


class FeedFollower:
    def __init__(self, ledger_dir: Path, run_id: str, backlog_bytes: int = BACKLOG_BYTES):
        self.path = feed_path(ledger_dir, run_id)
        self.run_id = run_id
        self.backlog_bytes = backlog_bytes
        self.tail = Tail(self.path)
        self.header: dict[str, Any] | None = None
        self.counts: Counts | None = None
        self.ended: dict[str, Any] | None = None
        self._progress: dict[str, Any] = {}
        self.waiting: dict[str, Waiting] = {}  # by Waiting.on
        self._recent_rate: float | None = None
        self._rates: list[float] = []  # the recent rates of this poll's progress lines
        self._ticks: collections.deque[tuple[int, float]] = collections.deque()  # (done, elapsed_s) of progress lines
        self._attached = False

    @property
    def bytes_read(self) -> int:
        """Everything this follower read from the feed so far."""
        return self.tail.bytes_read

    def poll(self) -> FeedUpdate:
        before = self.tail.bytes_read
        if not self._attached:
            self._attach()
        units: list[dict[str, Any]] = []
        self._rates = []
        for line in self.tail.read():
            record = parse_line(line)
            if record is not None:
                self._take(record, units)
        p = self._progress
        limits = p.get("limits")
        return FeedUpdate(units=units, counts=self.counts.snapshot() if self.counts is not None else None,
                          in_flight=p.get("in_flight"), limits=limits if isinstance(limits, dict) else None,
                          elapsed_s=p.get("elapsed_s"), rate=p.get("rate"),
                          recent_rate=self._recent_rate, recent_rates=self._rates, header=self.header,
                          ended=self.ended,
                          waiting=list(self.waiting.values()), bytes_read=self.tail.bytes_read - before)

    def _attach(self) -> None:
        """The first poll that finds the feed: a long one is read from within backlog_bytes of its end (its header
        line apart), a short one from its start."""
        size = self.tail.size()
        if size is None:
            return  # not written yet (the run is still starting): look again next poll
        self._attached = True
        if size > self.backlog_bytes:
            first = read_first_line(self.path)
            if first is not None:
                self.tail.bytes_read += len(first)
                self.header = parse_line(first)
            self.tail.skip_to_tail(self.backlog_bytes)

    def _rate_over_window(self, done: int, elapsed: float) -> float | None:
        """Notes/s from the oldest progress line still within RATE_WINDOW_S of this one (or the one just before the
        window, so a full window is spanned once the run is that old)."""
        if self._ticks and elapsed <= self._ticks[-1][1]:
            self._ticks.clear()  # not later than the last line: a new feed, or a clock gone back
        self._ticks.append((done, elapsed))
        while len(self._ticks) > 2 and elapsed - self._ticks[1][1] >= RATE_WINDOW_S:
            self._ticks.popleft()
        first_done, first_at = self._ticks[0]
        return (done - first_done) / (elapsed - first_at) if elapsed > first_at else self._recent_rate

    def _take(self, record: dict[str, Any], units: list[dict[str, Any]]) -> None:
        kind = record.get("type")
        if kind == "unit":
            units.append(record)
            if self.counts is not None:
                self.counts.tally(str(record.get("outcome")), _int(record.get("attempts")),
                                  bool(record.get("truncated")), _int(record.get("tokens_in")),
                                  _int(record.get("tokens_out")))
        elif kind == "progress":
            counts = counts_from(record.get("counts"))
            if counts is not None:
                elapsed = record.get("elapsed_s")
                if isinstance(elapsed, (int, float)):
                    self._recent_rate = self._rate_over_window(counts.done, float(elapsed))
                    if self._recent_rate is not None:
                        self._rates.append(self._recent_rate)
                self.counts = counts
                self._progress = record
            # the run's waits as of this line: a follower that attached mid-wait learns of it here
            self.waiting = {w.on: w for w in waits_from(record)}
        elif kind == "waiting":
            wait = Waiting.from_record(record)
            if wait is not None and wait.over:
                self.waiting.pop(wait.on, None)
                if wait.on == "model":  # the recent rate starts with the first notes, not with the seconds of loading
                    self._ticks.clear()
            elif wait is not None:
                self.waiting[wait.on] = wait
        elif kind == "feed":
            self.header = record
            if self.counts is None:  # from the very start: every unit line follows, so tallying from zero is exact
                self.counts = Counts(total=_int(record.get("total")))
        elif kind == "end":
            self.ended = record
            self.waiting = {}  # a run that ended waits for nothing (one that gave up says so in its end line)
            self.counts = counts_from(record.get("counts")) or self.counts


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
