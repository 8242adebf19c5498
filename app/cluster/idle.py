"""Idle server jobs end themselves. The proxy in front of a server job (app/cluster/proxy.py) sees every request to
the server: it counts those in flight and notes when the last one ended; a job with no request in flight for its
profile's `idle` (default 30m; "0": never; `server start --idle 45m`) ends itself and frees its GPU.

What counts as using the server: every request but the questions a listing asks (`/api/version`, `/api/tags`,
`/api/ps`, `/api/show`, `/v1/models`, `/health`, …), from its first byte until the last byte of its answer — a chat,
a generation, an embedding, a pull. So the Servers screen polling every 5 s does not keep a job alive, and a run
does, for as long as it sends notes (a long answer in flight counts, however long it takes).

The state is published by the proxy itself: `GET /_notes-tui/idle` with the job's token answers it as JSON (read by
`server list` and the Servers screen through `fetch_idle`), live, costing Slurm nothing — no `scontrol update` per
request or per minute, and the job's Comment stays the address other tools read.

The same clock gives the GPU-hours of the job for the ledger (ledger/serverjobs.py): time with a request in flight
is used, the rest after the server answered idle, the time before it answered starting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

IDLE_PATH = b"/_notes-tui/idle"
# questions about the server, not work for it: they neither keep a job alive nor count as its use
STATUS_PATHS = frozenset({b"", b"/", b"/api/version", b"/api/tags", b"/api/ps", b"/api/show", b"/v1/models",
                          b"/health", b"/version", b"/props", b"/metrics", b"/slots"})
WATCH_MAX_S = 30.0  # the watcher looks again at least this often while the job is busy


def counts_as_use(path: bytes) -> bool:
    return path.rstrip(b"/") not in STATUS_PATHS


class IdleTracker:
    """In the job: requests in flight, when the last one ended, and the time used and idle. `clock` is monotonic
    seconds (a fake in tests)."""

    def __init__(self, limit_s: float | None, clock: Callable[[], float] = time.monotonic):
        self.limit_s = limit_s or None  # None: never ends for idleness
        self.clock = clock
        self.started = clock()
        self.ready_at: float | None = None
        self.in_flight = 0
        self.requests = 0
        self.last_end: float | None = None
        self._busy_since: float | None = None
        self._busy_total = 0.0

    def ready(self) -> None:
        """The server answers: from now on the job is idle unless a request is in flight."""
        if self.ready_at is None:
            self.ready_at = self.clock()

    def begin(self) -> None:
        if self.in_flight == 0:
            self._busy_since = self.clock()
        self.in_flight += 1
        self.requests += 1

    def end(self) -> None:
        if self.in_flight <= 0:
            return
        self.in_flight -= 1
        if self.in_flight == 0:
            now = self.clock()
            if self._busy_since is not None:
                self._busy_total += now - self._busy_since
            self._busy_since = None
            self.last_end = now

    def idle_s(self, now: float | None = None) -> float | None:
        """Seconds since the last request ended (or the server answered); None while one is in flight or before."""
        if self.in_flight or self.ready_at is None:
            return None
        now = self.clock() if now is None else now
        since = self.ready_at if self.last_end is None else max(self.last_end, self.ready_at)
        return max(0.0, now - since)

    def stops_in_s(self, now: float | None = None) -> float | None:
        """Seconds until the job ends for idleness; None while busy, before it answers, or with no limit."""
        idle = self.idle_s(now)
        if idle is None or self.limit_s is None:
            return None
        return max(0.0, self.limit_s - idle)

    def due(self, now: float | None = None) -> bool:
        return self.stops_in_s(now) == 0.0

    def busy_s(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return self._busy_total + (now - self._busy_since if self._busy_since is not None else 0.0)

    def seconds(self, now: float | None = None) -> dict[str, float]:
        """How the job's time so far splits: starting (before the server answered), used, idle."""
        now = self.clock() if now is None else now
        starting = (self.ready_at if self.ready_at is not None else now) - self.started
        up = now - self.ready_at if self.ready_at is not None else 0.0
        busy = min(self.busy_s(now), up)
        return {"starting_s": round(starting, 3), "busy_s": round(busy, 3), "idle_s": round(max(0.0, up - busy), 3)}

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """What `GET /_notes-tui/idle` answers. Durations only: the reader adds them to its own clock, so the
        clocks of the login node and the GPU node need not agree."""
        now = self.clock() if now is None else now
        idle = self.idle_s(now)
        stops = self.stops_in_s(now)
        return {"in_flight": self.in_flight, "idle_s": None if idle is None else round(idle, 3),
                "limit_s": self.limit_s, "stops_in_s": None if stops is None else round(stops, 3),
                "requests": self.requests, "ready": self.ready_at is not None, **self.seconds(now)}


async def watch(tracker: IdleTracker, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> float:
    """Returns once the job has had no request in flight for its limit (never, without one): the seconds idle.
    Sleeps until the moment it would be due, so it ends on time however long the limit."""
    if tracker.limit_s is None:
        await asyncio.Event().wait()
    assert tracker.limit_s is not None
    while True:
        left = tracker.stops_in_s()
        if left is not None and left <= 0:
            return tracker.idle_s() or 0.0
        await sleep(min(left if left is not None else tracker.limit_s, WATCH_MAX_S))


# -- the reader's side: `server list`, the Servers screen ------------------------------------------------------------


@dataclass(frozen=True)
class IdleState:
    """A server job's idleness as its proxy said it at `fetched_at` (monotonic seconds of this process)."""

    in_flight: int
    idle_s: float | None  # None while a request is in flight
    limit_s: float | None  # None: the job never ends for idleness
    stops_in_s: float | None  # None while busy, or with no limit
    requests: int
    busy_s: float
    fetched_at: float = field(default=0.0, compare=False)
    fetched_wall: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any], fetched_at: float | None = None) -> IdleState | None:
        try:
            return cls(in_flight=int(doc.get("in_flight") or 0), idle_s=_num(doc.get("idle_s")),
                       limit_s=_num(doc.get("limit_s")), stops_in_s=_num(doc.get("stops_in_s")),
                       requests=int(doc.get("requests") or 0), busy_s=_num(doc.get("busy_s")) or 0.0,
                       fetched_at=time.monotonic() if fetched_at is None else fetched_at)
        except (TypeError, ValueError):
            return None

    def _elapsed(self, now: float | None) -> float:
        return max(0.0, (time.monotonic() if now is None else now) - self.fetched_at)

    def idle_now(self, now: float | None = None) -> float | None:
        """Idle seconds now (`now`: monotonic), counting on from what the proxy said; None while busy."""
        return None if self.idle_s is None else self.idle_s + self._elapsed(now)

    def stops_in_now(self, now: float | None = None) -> float | None:
        """Seconds until the job ends for idleness, unless a request comes first; None: busy, or never."""
        return None if self.stops_in_s is None else max(0.0, self.stops_in_s - self._elapsed(now))

    @property
    def stops_at(self) -> datetime | None:
        """When the job ends for idleness (UTC), unless a request comes first."""
        return None if self.stops_in_s is None else self.fetched_wall + timedelta(seconds=self.stops_in_s)

    def idle_text(self, now: float | None = None) -> str:
        """`busy (2 in flight)` or how long it has been idle: `4m12s`."""
        from ledger.clock import format_duration

        if self.in_flight:
            return f"busy ({self.in_flight} in flight)"
        return format_duration(self.idle_now(now))

    def stop_text(self, now: float | None = None) -> str:
        """`in 25m48s`, `never` (idle = 0), or while busy `30m after the last request`."""
        from ledger.clock import format_duration

        if self.limit_s is None:
            return "never"
        left = self.stops_in_now(now)
        if left is None:
            return f"{format_duration(self.limit_s)} after the last request"
        return f"in {format_duration(left)}"

    def as_json(self) -> dict[str, Any]:
        from ledger.clock import iso_utc

        at = self.stops_at
        return {"in_flight": self.in_flight, "idle_s": self.idle_s, "limit_s": self.limit_s,
                "stops_in_s": self.stops_in_s, "stops_at": iso_utc(at) if at else None, "requests": self.requests,
                "busy_s": self.busy_s}


def _num(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value)


FETCH_TIMEOUT_S = 3.0


async def fetch_idle(url: str, environ: dict[str, str] | None = None,
                     timeout_s: float = FETCH_TIMEOUT_S) -> IdleState | None:
    """Ask a server job's proxy how idle it is (its token, found by URL, is sent); None when it is not a job of
    this notes-tui or does not answer. A connection of its own: the proxy answers and closes it."""
    import httpx

    from app.cluster.tokens import auth_headers

    headers = auth_headers(url, environ)
    if not headers:
        return None
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers) as client:
            resp = await client.get(IDLE_PATH.decode())
            fetched = time.monotonic()
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        doc = resp.json()
    except ValueError:
        return None
    return IdleState.from_json(doc, fetched) if isinstance(doc, dict) else None


async def fetch_idle_all(urls: Iterable[str], environ: dict[str, str] | None = None) -> dict[str, IdleState | None]:
    """Every job at once: the slowest costs one timeout, not the sum."""
    urls = list(dict.fromkeys(urls))
    states = await asyncio.gather(*(fetch_idle(u, environ) for u in urls))
    return dict(zip(urls, states))
