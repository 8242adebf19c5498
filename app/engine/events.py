"""Everything the engine tells its subscribers (console printer, run journal, the TUI to come).

Events are frozen dataclasses, emitted on the event loop's thread in this order: RunStarted, then any number of
UnitDone / BatchCommitted / Progress / HostState / Notice, then RunFinished exactly once. No event carries note text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class Progress:
    counts: Counts
    elapsed_s: float
    in_flight: int
    limits: dict[str, int] = field(default_factory=dict)  # each host's in-flight limit now


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
