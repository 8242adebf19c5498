"""Per-host in-flight limits that adapt: fewer requests when a server says it is busy, more again once it copes.

A request that waits in the server's own queue hides the client's round trip, so the ceiling sits a little above the
server's parallel slots. A 503 lowers that host's limit by one (never below one) and a run of successes raises it
again; a refused connection takes the host out for a growing pause while the other hosts carry the work.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

RAISE_AFTER = 20  # successes in a row before a lowered limit goes up by one
DOWN_BASE_S = 0.5
DOWN_MAX_S = 15.0


class AllHostsDown(Exception):
    """No server has answered for longer than the run is willing to wait."""


@dataclass
class HostSlot:
    url: str
    ceiling: int
    limit: int
    in_flight: int = 0
    ok_streak: int = 0
    down_until: float = 0.0
    down_count: int = 0
    last_error: str = ""

    def free(self, now: float) -> int:
        return 0 if now < self.down_until else self.limit - self.in_flight


class HostPool:
    def __init__(self, hosts: tuple[str, ...], per_host: int, give_up_after_s: float = 120.0,
                 on_state=None):
        self.slots = [HostSlot(url=h, ceiling=per_host, limit=per_host) for h in hosts]
        self._changed = asyncio.Event()
        self.give_up_after_s = give_up_after_s
        self.last_ok = time.monotonic()
        self._on_state = on_state or (lambda *a: None)

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.slots)

    def try_acquire(self) -> HostSlot | None:
        now = time.monotonic()
        best = max(self.slots, key=lambda s: s.free(now))
        if best.free(now) > 0:
            best.in_flight += 1
            return best
        return None

    async def acquire(self) -> HostSlot:
        while True:
            slot = self.try_acquire()
            if slot is not None:
                return slot
            now = time.monotonic()
            if all(now < s.down_until for s in self.slots) and now - self.last_ok > self.give_up_after_s:
                raise AllHostsDown("; ".join(f"{s.url}: {s.last_error}" for s in self.slots))
            wake = min((s.down_until for s in self.slots if s.down_until > now), default=now + 1.0)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, min(wake - now, 1.0)))
            except TimeoutError:
                pass

    def _release(self, slot: HostSlot) -> None:
        slot.in_flight -= 1
        self._changed.set()

    def ok(self, slot: HostSlot) -> None:
        self._release(slot)
        self.last_ok = time.monotonic()
        if slot.down_count:
            slot.down_count = 0
            self._on_state(slot, "up", "")
        slot.ok_streak += 1
        if slot.limit < slot.ceiling and slot.ok_streak >= RAISE_AFTER:
            slot.limit += 1
            slot.ok_streak = 0
            self._on_state(slot, "up", f"in-flight limit raised to {slot.limit}")

    def busy(self, slot: HostSlot) -> None:
        self._release(slot)
        slot.ok_streak = 0
        if slot.limit > 1:
            slot.limit -= 1
            self._on_state(slot, "busy", f"server busy (503): in-flight limit lowered to {slot.limit}")

    def failed(self, slot: HostSlot, error: str, down: bool) -> None:
        """A request failed in transport. `down` (connection refused) takes the host out for a growing pause."""
        self._release(slot)
        slot.ok_streak = 0
        slot.last_error = error
        if down:
            slot.down_count += 1
            pause = min(DOWN_MAX_S, DOWN_BASE_S * 2 ** (slot.down_count - 1))
            slot.down_until = time.monotonic() + pause
            self._on_state(slot, "down", f"{error}; next try in {pause:.1f} s")

    def cancelled(self, slot: HostSlot) -> None:
        self._release(slot)
