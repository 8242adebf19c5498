"""The servers of a run and how many requests each gets at once: an adaptive limit per host (`limit.AdaptiveLimit`)
that finds the server's parallelism from how fast its answers come back, capped by the experiment's `concurrency`;
a refused connection takes the host out for a growing pause while the other hosts carry the work.

Each request holds a `Lease`: the host, when it was sent and how many were in flight then, so its answer can say
what that level of in-flight did to the server's latency.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from app.engine.limit import MAX_IN_FLIGHT, AdaptiveLimit

DOWN_BASE_S = 0.5
DOWN_MAX_S = 15.0


class AllHostsDown(Exception):
    """No server has answered for longer than the run is willing to wait."""


@dataclass
class HostSlot:
    url: str
    limiter: AdaptiveLimit
    in_flight: int = 0
    down_until: float = 0.0
    down_count: int = 0
    last_error: str = ""
    down_since: float | None = None  # its first refusal since it last answered (the pool's clock)
    down_error: str = ""  # what that refusal said, kept apart from errors of requests cut mid-answer
    seen_limits: Counter = field(default_factory=Counter)  # the limit at each answer: its min/median/max of the run

    @property
    def limit(self) -> int:
        return self.limiter.in_flight

    def free(self, now: float) -> int:
        return 0 if now < self.down_until else self.limit - self.in_flight

    def limits_summary(self) -> dict[str, int] | None:
        if not self.seen_limits:
            return None
        values = sorted(self.seen_limits.elements())
        return {"min": values[0], "median": int(statistics.median_low(values)), "max": values[-1]}


@dataclass
class Lease:
    """One request's hold on a host."""

    slot: HostSlot
    n_at_send: int
    epoch: int
    sent: float

    @property
    def url(self) -> str:
        return self.slot.url


class HostPool:
    def __init__(self, hosts: tuple[str, ...], initial: int | dict[str, int] = 1, cap: int | None = None,
                 give_up_after_s: float = 120.0, on_state=None, clock=time.monotonic):
        """`initial`: in flight at the start, per host or for all; `cap`: never more (the experiment's
        concurrency), MAX_IN_FLIGHT when it says nothing."""
        start = initial if isinstance(initial, dict) else dict.fromkeys(hosts, initial)
        self.slots = [HostSlot(url=h, limiter=AdaptiveLimit(start.get(h, 1), cap or MAX_IN_FLIGHT)) for h in hosts]
        self._changed = asyncio.Event()
        self.give_up_after_s = give_up_after_s
        self.clock = clock
        self.last_ok = clock()
        self._on_state = on_state or (lambda *a: None)

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.slots)

    def limits(self) -> dict[str, int]:
        return {s.url: s.limit for s in self.slots}

    def try_acquire(self) -> Lease | None:
        now = self.clock()
        best = max(self.slots, key=lambda s: s.free(now))
        if best.free(now) > 0:
            best.in_flight += 1
            return Lease(best, best.in_flight, best.limiter.epoch, now)
        return None

    async def acquire(self) -> Lease:
        while True:
            lease = self.try_acquire()
            if lease is not None:
                return lease
            now = self.clock()
            if all(now < s.down_until for s in self.slots) and now - self.last_ok > self.give_up_after_s:
                raise AllHostsDown("; ".join(f"{s.url}: {s.last_error}" for s in self.slots))
            wake = min((s.down_until for s in self.slots if s.down_until > now), default=now + 1.0)
            self._changed.clear()
            # not wait_for: on Python 3.11 it swallows a cancel that arrives as the event is set, and a worker that
            # missed its cancel keeps a stopping run waiting (asyncio.wait lets the cancel through)
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=max(0.01, min(wake - now, 1.0)))
            finally:
                waiter.cancel()

    def _release(self, lease: Lease) -> None:
        lease.slot.in_flight -= 1
        self._changed.set()

    def ok(self, lease: Lease) -> None:
        """An answer came back (valid or not: the server did its work)."""
        slot = lease.slot
        self._release(lease)
        now = self.clock()
        self.last_ok = now
        if slot.down_count:
            slot.down_count = 0
            slot.down_since = None
            self._on_state(slot, "up", "")
        slot.limiter.sample(now - lease.sent, lease.n_at_send, lease.epoch)
        slot.seen_limits[slot.limit] += 1

    def busy(self, lease: Lease) -> None:
        slot = lease.slot
        self._release(lease)
        before = slot.limit
        slot.limiter.busy(lease.n_at_send)
        if slot.limit < before:
            self._on_state(slot, "busy", f"server busy: in-flight limit lowered to {slot.limit}")

    def failed(self, lease: Lease, error: str, down: bool) -> None:
        """A request failed in transport. `down` (connection refused) takes the host out for a growing pause."""
        slot = lease.slot
        self._release(lease)
        slot.last_error = error
        if down:
            now = self.clock()
            slot.down_error = error
            if slot.down_since is None:
                slot.down_since = now
            if now < slot.down_until:
                # sent before the pause began: the host is already known down, its next try already set (counting
                # each such refusal would make one outage with 8 requests in flight pause the host 15 s at once, and
                # a server back after 3 s wait 15 s to be asked again)
                return
            slot.down_count += 1
            pause = min(DOWN_MAX_S, DOWN_BASE_S * 2 ** (slot.down_count - 1))
            slot.down_until = now + pause
            self._on_state(slot, "down", f"{error}; next try in {pause:.1f} s")

    def unreachable(self) -> tuple[float, float] | None:
        """While every host is down (refused since it last answered): (when the last of them went down, when the run
        gives up waiting), on the pool's clock; None while any host may answer."""
        if not self.slots or any(s.down_since is None for s in self.slots):
            return None
        return max(s.down_since for s in self.slots if s.down_since is not None), self.last_ok + self.give_up_after_s

    def cancelled(self, lease: Lease) -> None:
        self._release(lease)

    def limits_summary(self) -> dict[str, dict[str, int]]:
        """Each host's in-flight limit over the run, as its answers saw it: min, median, max."""
        return {s.url: summary for s in self.slots if (summary := s.limits_summary()) is not None}
