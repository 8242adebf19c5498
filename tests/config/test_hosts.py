"""The hosts of a run: leases, the freer host first, a refused host paused while the others carry on, giving up when
none answers; and the adaptive in-flight limit (app.engine.limit) against servers simulated in virtual time — a
64-slot server, a one-slot Ollama, two hosts of unequal speed, a 503 queue, a server that slows down mid-run —
and inside the real run loop against a scripted backend whose latency depends on how many requests it holds."""

from __future__ import annotations

import asyncio
import heapq
import random
import time

import pytest

from app.engine.hosts import AllHostsDown, HostPool
from app.engine.limit import AdaptiveLimit


def run(coro):
    return asyncio.run(coro)


def test_the_freer_host_gets_the_next_request_and_limits_hold():
    async def scenario():
        pool = HostPool(("http://a:1", "http://b:1"), initial=2)
        got = [await pool.acquire() for _ in range(4)]
        assert sorted(s.url for s in got) == ["http://a:1", "http://a:1", "http://b:1", "http://b:1"]
        assert [g.n_at_send for g in got if g.url == "http://a:1"] == [1, 2]
        assert pool.try_acquire() is None
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        pool.ok(got[0])
        assert (await asyncio.wait_for(waiter, 1)).url == got[0].url

    run(scenario())


def test_a_refused_host_pauses_and_the_other_carries_on():
    async def scenario():
        pool = HostPool(("http://a:1", "http://b:1"), initial=1)
        a = await pool.acquire()
        b = await pool.acquire()
        pool.failed(a, "connection refused", down=True)
        pool.ok(b)
        for _ in range(3):
            lease = await pool.acquire()
            assert lease.url == b.url
            pool.ok(lease)

    run(scenario())


def test_all_hosts_down_for_too_long_gives_up():
    async def scenario():
        pool = HostPool(("http://a:1",), initial=1, give_up_after_s=0.3)
        for _ in range(10):
            lease = await pool.acquire()
            pool.failed(lease, "connection refused", down=True)

    with pytest.raises(AllHostsDown, match="connection refused"):
        run(asyncio.wait_for(scenario(), 30))


# -- the limit against simulated servers (virtual time: exact, and seconds of run in milliseconds of test) --------

class Fixed:
    """Today's fixed limit, for comparison: never decides anything."""

    def __init__(self, n: int):
        self.in_flight, self.epoch = n, 0

    def sample(self, *_) -> bool:
        return False

    def busy(self, *_) -> None:
        return None


def simulate(servers: list[dict], n: int, cap: int = 256, initial: int = 1, slow_down: tuple | None = None,
             seed: int = 0, fixed: int | None = None) -> dict:
    """A run of `n` notes against servers of `slots` parallel slots answering in `latency` s (× a lognormal of
    `sigma`), FIFO queue of `queue` (beyond it: busy at once), the model loading until `cold` s. The client keeps
    each host at its limit, as the engine does. `slow_down`: (time, host, new latency). Returns the share of
    capacity and what each server saw."""
    rng = random.Random(seed)
    events: list = []
    hosts = []
    for s in servers:
        limiter = Fixed(fixed) if fixed else AdaptiveLimit(initial, cap)
        hosts.append(dict(s, active=0, waiting=[], in_flight=0, limiter=limiter, max_queue=0, limits=[]))
    sent = done = seq = 0
    now = 0.0

    def start(h: dict, i: int, req: dict) -> None:
        nonlocal seq
        h["active"] += 1
        took = h["latency"] * (rng.lognormvariate(0, h["sigma"]) if h.get("sigma") else 1.0)
        took += max(0.0, h.get("cold", 0.0) - now)  # the model loads until `cold` s: what starts before waits
        seq += 1
        heapq.heappush(events, (now + took, seq, i, req))

    def dispatch() -> None:
        nonlocal sent, seq
        while sent < n:
            free = [(h["limiter"].in_flight - h["in_flight"], i) for i, h in enumerate(hosts)]
            room, i = max(free)
            if room <= 0:
                return
            h = hosts[i]
            h["in_flight"] += 1
            sent += 1
            req = {"sent": now, "n": h["in_flight"], "epoch": h["limiter"].epoch}
            if h["active"] < h["slots"]:
                start(h, i, req)
            elif len(h["waiting"]) < h.get("queue", 10**9):
                h["waiting"].append(req)
                h["max_queue"] = max(h["max_queue"], len(h["waiting"]))
            else:  # busy: refused at once, retried later
                h["in_flight"] -= 1
                sent -= 1
                h["limiter"].busy(req["n"])
                seq += 1
                heapq.heappush(events, (now + 0.05, seq, -1, None))
                return

    dispatch()
    while events:
        now, _, i, req = heapq.heappop(events)
        if slow_down and now >= slow_down[0]:
            hosts[slow_down[1]]["latency"] = slow_down[2]
            slow_down = None
        if i >= 0:
            h = hosts[i]
            h["active"] -= 1
            h["in_flight"] -= 1
            done += 1
            h["limiter"].sample(now - req["sent"], req["n"], req["epoch"])
            h["limits"].append((now, h["limiter"].in_flight))
            if h["waiting"]:
                start(h, i, h["waiting"].pop(0))
        dispatch()
    capacity = sum(s["slots"] / s["latency0"] for s in servers)
    return {"share": n / now / capacity, "seconds": now, "hosts": hosts}


def servers(*specs: dict) -> list[dict]:
    return [dict(s, latency0=s["latency"]) for s in specs]


def test_a_64_slot_server_is_found_and_kept_full():
    """Starting at 16 (what a continuous-batching server gets), the limit passes 64 within a second and holds above
    it: ≥ 0.97 of capacity over 3,000 notes, ramp-up included (a fixed 6 in flight gives 0.09)."""
    out = simulate(servers(dict(slots=64, latency=0.2)), 3000, initial=16)
    assert out["share"] >= 0.97
    limits = out["hosts"][0]["limits"]
    assert next(t for t, lim in limits if lim >= 64) < 1.0
    late = [lim for t, lim in limits if t > 3.0]
    assert min(late) >= 64 and max(late) <= 110  # full, and not hoarding: a few waiting, not dozens


def test_a_one_slot_ollama_gets_at_most_two_waiting():
    """Started at 3, as an Ollama server is (two wait from the first moment), and never more after that."""
    out = simulate(servers(dict(slots=1, latency=0.2)), 300, initial=3)
    assert out["share"] >= 0.95 and out["hosts"][0]["max_queue"] <= 2
    assert out["hosts"][0]["limiter"].floor == pytest.approx(0.2)  # the first floor from the first request sent


def test_a_four_slot_ollama_is_full_after_one_round():
    out = simulate(servers(dict(slots=4, latency=0.2)), 200, initial=3)
    assert out["share"] >= 0.98 and out["hosts"][0]["max_queue"] <= 4


def test_two_hosts_of_unequal_speed_share_the_notes_by_speed():
    out = simulate(servers(dict(slots=4, latency=0.2), dict(slots=4, latency=0.8)), 2000, initial=3)
    fast, slow = out["hosts"]
    assert out["share"] >= 0.95
    assert fast["max_queue"] <= 4 and slow["max_queue"] <= 4  # the slow host does not hoard notes in its queue


def test_a_503_queue_of_two_lowers_the_limit_and_every_note_is_answered():
    out = simulate(servers(dict(slots=4, latency=0.2, queue=2)), 1000, initial=16)
    h = out["hosts"][0]
    assert out["share"] >= 0.95 and h["max_queue"] <= 2 and h["limiter"].in_flight <= 8


def test_a_server_that_slows_down_is_followed_within_seconds():
    """At t = 5 s another user's run makes every answer take twice as long: the limit dips, finds that fewer in
    flight are no faster, takes the new pace as the floor and is back at the server's slots within seconds."""
    out = simulate(servers(dict(slots=64, latency=0.2)), 6000, initial=16, slow_down=(5.0, 0, 0.4))
    limits = out["hosts"][0]["limits"]
    back = next(t for t, lim in limits if t > 6.0 and lim >= 64)
    assert back < 5.0 + 5.0
    assert min(lim for t, lim in limits if t > back) >= 60
    ideal = 5.0 + (6000 - 5.0 * 320) / 160
    assert out["seconds"] <= ideal * 1.08


def test_notes_of_varying_length_are_not_taken_for_a_queue():
    """Answers spread like real ones (a lognormal of sigma 0.4 around 200 ms): the limit stays near the slots, and
    the run is within 8 % of a generous fixed limit (96) on the same draws."""
    spread = servers(dict(slots=64, latency=0.2, sigma=0.4))
    adaptive = simulate(spread, 3000, initial=16, seed=3)
    generous = simulate(servers(dict(slots=64, latency=0.2, sigma=0.4)), 3000, seed=3, fixed=96)
    assert adaptive["share"] >= 0.92 * generous["share"]
    assert min(lim for t, lim in adaptive["hosts"][0]["limits"] if t > 3.0) >= 56


@pytest.mark.parametrize("slots, initial", [(1, 3), (4, 3), (12, 16), (64, 16), (64, 64)])
def test_a_model_loading_before_the_first_answers_is_not_taken_for_the_floor(slots, initial):
    """A cold server: the first answers wait 8 s for the model to load, and every round after looks fast beside
    them. Taken for the floor, that locked a 12-slot server at the cap of 256 in flight (244 waiting) and a one-slot
    Ollama at 27–36. A round at half the floor restarts the search from a probe one request at a time."""
    out = simulate(servers(dict(slots=slots, latency=0.2, cold=8.0)), 3000, initial=initial)
    h = out["hosts"][0]
    assert h["limiter"].floor == pytest.approx(0.2)
    late = [lim for t, lim in h["limits"] if t > 16.0]
    assert max(late) - slots <= max(2, 0.75 * slots)  # a few waiting, not the cap's worth
    assert min(late) >= 0.9 * slots  # and full: a cut may dip one below for a round
    ideal = 8.0 + 3000 / (slots / 0.2)
    assert out["seconds"] <= ideal * 1.1


def test_the_cap_is_never_passed():
    out = simulate(servers(dict(slots=64, latency=0.2)), 1000, cap=24, initial=16)
    assert max(lim for _, lim in out["hosts"][0]["limits"]) == 24
    assert out["share"] == pytest.approx(24 / 64, rel=0.05)


# -- inside the real run loop: a scripted backend whose latency grows with what it holds -------------------------

class ScriptedServer:
    """`slots` answered at once in `latency` s; more wait their turn (a FIFO queue, as in Ollama)."""

    def __init__(self, slots: int, latency: float):
        self.slots = asyncio.Semaphore(slots)
        self.latency = latency
        self.holding = self.max_holding = 0

    async def answer(self) -> str:
        self.holding += 1
        self.max_holding = max(self.max_holding, self.holding)
        try:
            async with self.slots:
                await asyncio.sleep(self.latency)
        finally:
            self.holding -= 1
        return '{"response": "(2) Unlikely", "explanation": "clear"}'


@pytest.mark.slow  # seconds of real time
def test_the_run_loop_finds_a_scripted_servers_slots(tmp_path):
    from app.backends.base import Backend, ModelInfo, Reply
    from app.engine.bus import EventBus
    from app.engine.events import RunFinished
    from app.engine.runner import Runner, RunOptions
    from app.experiment import load_experiment
    from app.sources import open_source
    from tests.helpers.support import experiment_toml

    server = ScriptedServer(slots=12, latency=0.05)

    class Scripted(Backend):
        name = "scripted"
        hosts = ("http://scripted:1",)

        async def prepare(self) -> ModelInfo:
            return ModelInfo(model="m", digest=None, server_version=None, hosts=self.hosts)

        async def chat(self, host, system, user, schema) -> Reply:
            return Reply(content=await server.answer(), done_reason="stop", tokens_in=10, tokens_out=5,
                         truncated=False)

    import sqlite3

    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"note {i}") for i in range(1200)])
    conn.commit()
    conn.close()
    path = tmp_path / "exp.toml"
    path.write_text(experiment_toml(source='kind = "sqlite"\npath = "notes.db"\ntable = "notes"\n'
                                           'id_columns = ["note_id"]\ntext_column = "note_text"',
                                    hosts=["http://scripted:1"], results='table = "r"\nbatch_size = 200'))
    exp = load_experiment(path)
    finished = []
    bus = EventBus()
    bus.subscribe(lambda e: finished.append(e) if isinstance(e, RunFinished) else None)
    source = open_source(exp)
    t0 = time.monotonic()
    result = asyncio.run(Runner(exp, source, Scripted(), bus, RunOptions(ledger_dir=tmp_path / "ledger")).run())
    took = time.monotonic() - t0
    source.close()
    assert result.status == "completed" and result.counts.valid == 1200
    limits = finished[0].extra["in_flight"]["http://scripted:1"]
    assert limits["min"] <= 2 and 12 <= limits["median"] <= 20 and limits["max"] <= 64
    assert server.max_holding <= 64
    assert 1200 / took >= 0.8 * 12 / 0.05  # the slots kept busy (start and the database's work included)
