"""The per-host in-flight limits: lowered by a 503, raised again by a run of answers, paused by a refused connection."""

from __future__ import annotations

import asyncio

import pytest

from app.engine.hosts import RAISE_AFTER, AllHostsDown, HostPool


def run(coro):
    return asyncio.run(coro)


def test_busy_lowers_the_limit_and_successes_raise_it_back():
    async def scenario():
        pool = HostPool(("http://a:1",), per_host=4)
        slot = await pool.acquire()
        pool.busy(slot)
        pool.busy(await pool.acquire())
        assert slot.limit == 2
        for _ in range(RAISE_AFTER):
            pool.ok(await pool.acquire())
        assert slot.limit == 3
        for _ in range(RAISE_AFTER * 3):
            pool.ok(await pool.acquire())
        assert slot.limit == 4  # never above the ceiling
        return slot

    run(scenario())


def test_the_freer_host_gets_the_next_request_and_limits_hold():
    async def scenario():
        pool = HostPool(("http://a:1", "http://b:1"), per_host=2)
        got = [await pool.acquire() for _ in range(4)]
        assert sorted(s.url for s in got) == ["http://a:1", "http://a:1", "http://b:1", "http://b:1"]
        assert pool.try_acquire() is None
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        pool.ok(got[0])
        assert (await asyncio.wait_for(waiter, 1)).url == got[0].url

    run(scenario())


def test_a_refused_host_pauses_and_the_other_carries_on():
    async def scenario():
        pool = HostPool(("http://a:1", "http://b:1"), per_host=1)
        a = await pool.acquire()
        b = await pool.acquire()
        pool.failed(a, "connection refused", down=True)
        pool.ok(b)
        for _ in range(3):
            slot = await pool.acquire()
            assert slot.url == b.url
            pool.ok(slot)

    run(scenario())


def test_all_hosts_down_for_too_long_gives_up():
    async def scenario():
        pool = HostPool(("http://a:1",), per_host=1, give_up_after_s=0.3)
        for _ in range(10):
            slot = await pool.acquire()
            pool.failed(slot, "connection refused", down=True)

    with pytest.raises(AllHostsDown, match="connection refused"):
        run(asyncio.wait_for(scenario(), 30))
