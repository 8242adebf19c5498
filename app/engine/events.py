"""Everything the engine tells its subscribers (console printer, run journal, the TUI to come).

Events are frozen dataclasses, emitted on the event loop's thread in this order: RunStarted, then any number of
UnitDone / BatchCommitted / Progress / HostState / Waiting / Notice, then RunFinished exactly once. No event carries
note text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ledger.clock import format_duration


@dataclass
class Counts:
    total: int = 0
    done: int = 0
    valid: int = 0
    invalid: int = 0
    retried: int = 0
    empty: int = 0
    truncated: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    replaced_bytes: int = 0

    def tally(self, outcome: str, attempts: int, truncated: bool, tokens_in: int | None,
              tokens_out: int | None) -> None:
        """Count one finished unit (the runner as notes finish; a feed follower from the unit lines it reads)."""
        self.done += 1
        if outcome == "valid":
            self.valid += 1
        elif outcome == "invalid":
            self.invalid += 1
        elif outcome == "empty":
            self.empty += 1
        else:
            self.errors += 1
        if attempts > 1:
            self.retried += 1
        if truncated:
            self.truncated += 1
        self.tokens_in += tokens_in or 0
        self.tokens_out += tokens_out or 0

    def snapshot(self) -> Counts:
        return Counts(**self.__dict__)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    experiment: str
    total: int
    header: dict[str, Any]  # what the journal's header record holds: model, digest, prompt hash, options, ...


@dataclass(frozen=True)
class UnitDone:
    """One unit reached its outcome: valid | invalid (fallback written) | empty (not sent) | error (not written)."""

    id: str
    outcome: str
    answer: dict[str, Any]  # labels and numbers only; never free text
    attempts: int
    latency_ms: float
    tokens_in: int | None
    tokens_out: int | None
    truncated: bool
    error: str | None
    host: str | None

    def record(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BatchCommitted:
    units: tuple[UnitDone, ...]  # the units whose results rows this transaction wrote (errors are not written)
    counts: Counts


WAITS_ON = ("servers", "results", "model")
LOAD_FAILED = "load failed"  # the error of a model wait that ended without the model in memory


@dataclass(frozen=True)
class Waiting:
    """The run cannot go on and waits: `on` "servers" (none of its servers can be reached: `where` names each, with
    its error), "results" (writing a batch of results keeps failing: `where` names the table and database) or
    "model" (no server holds the model in memory: `where` names those loading it, before the first note). Emitted
    when a wait begins or what it waits on changes, never once per retry; `over` when it ends (the run goes on). A run
    that gives up ends (RunFinished) without an `over`. Times are Unix seconds: `since` the wait began, `give_up_at`
    when the run stops waiting (give_up_s after the last answer; the database's retry limit for results)."""

    on: str  # servers | results | model
    where: tuple[str, ...]
    error: str
    since: float
    give_up_at: float | None = None
    over: bool = False

    def record(self) -> dict[str, Any]:
        """As the live feed writes it."""
        return {"on": self.on, "where": list(self.where), "error": self.error, "since": round(self.since, 3),
                "give_up_at": None if self.give_up_at is None else round(self.give_up_at, 3), "over": self.over}

    @classmethod
    def from_record(cls, record: Any) -> Waiting | None:
        """A feed's record back (None for anything that is not one: feeds are followed, never trusted)."""
        if not isinstance(record, dict) or record.get("on") not in WAITS_ON:
            return None
        since, give_up = record.get("since"), record.get("give_up_at")
        where = record.get("where")
        return cls(on=record["on"], where=tuple(str(w) for w in where) if isinstance(where, list) else (),
                   error=str(record.get("error") or ""), since=float(since) if _number(since) else 0.0,
                   give_up_at=float(give_up) if _number(give_up) else None, over=record.get("over") is True)

    def words(self, now: float | None = None) -> str:
        """One line for the console and the Runs screen, e.g. `waiting for its server gpu-a:11434 (connection
        refused) since 14:03:05 UTC (12s); gives up at 14:04:05 UTC (in 48s)`."""
        now = time.time() if now is None else now
        where = ", ".join(_host_label(w) for w in self.where) or "?"
        if self.on == "servers":
            head = f"waiting for its server{'s' if len(self.where) > 1 else ''} {where}"
        elif self.on == "model":
            head = f"loading its model on {where}"
        else:
            head = f"cannot write its results to {where}"
        text = f"{head} ({self.error or 'no answer'}) since {_clock(self.since)} ({_ago(now - self.since)})"
        if self.give_up_at is not None:
            left = self.give_up_at - now
            verb = "gives up at" if self.on == "servers" else "retries until"
            text += f"; {verb} {_clock(self.give_up_at)}" + (f" (in {_ago(left)})" if left > 0 else " (now)")
        return text

    def over_words(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.on == "model" and self.error.startswith(LOAD_FAILED):
            return f"its model did not load ({self.error}) after {_ago(now - self.since)}; the notes go out anyway"
        if self.on == "model":
            return f"its model is loaded after {_ago(now - self.since)}; the notes go out"
        what = "its server answers again" if self.on == "servers" else "its results are written again"
        return f"{what} after {_ago(now - self.since)} of waiting; the run goes on"

    @property
    def stalls(self) -> bool:
        """Nothing is answered meanwhile: a rate or an ETA would mean nothing."""
        return self.on in ("servers", "model")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _host_label(url: str) -> str:
    return url.split("://", 1)[-1]


def _clock(t: float) -> str:
    """Local time with its zone: what the user's other clocks (the log, Servers) say."""
    return time.strftime("%H:%M:%S %Z", time.localtime(t))


def _ago(seconds: float) -> str:
    return format_duration(max(0.0, seconds))


@dataclass(frozen=True)
class Progress:
    counts: Counts
    elapsed_s: float
    in_flight: int
    limits: dict[str, int] = field(default_factory=dict)  # each host's in-flight limit now
    waiting: tuple[Waiting, ...] = ()  # what the run waits on now (each Waiting's latest, none over)


@dataclass(frozen=True)
class HostState:
    host: str
    state: str  # up | busy | down
    limit: int
    detail: str = ""


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: str  # completed | interrupted | failed
    counts: Counts
    elapsed_s: float
    last_error: str | None = None
    reason: str | None = None  # why a run stopped early: "SIGTERM", "no server answered", ...
    extra: dict[str, Any] = field(default_factory=dict)
