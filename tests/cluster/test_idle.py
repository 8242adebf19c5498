"""Idle server jobs end themselves (issue 25): the idle clock with a fake clock, the framing that tells the proxy when
a request starts and its answer ends, the proxy in front of the stand-in counting what is in flight (and not the
questions a listing asks), `GET /_notes-tui/idle`, and a whole server job outside Slurm: one that ends itself when
idle, one for a single run (`submit --with-server`), each leaving its GPU-hours in the ledger dir."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx
import pytest

from app.cluster import tokens
from app.cluster.framing import CHUNKED, INTERIM, NONE, OPAQUE, UNTIL_CLOSE, MessageStream, request_framing, response_framing
from app.cluster.idle import IdleState, IdleTracker, counts_as_use, fetch_idle, watch
from app.settings.user import idle_seconds
from tests.cluster.test_proxy import ProxyThread
from tests.helpers.runhelp import journal_records, ledger_runs
from tests.helpers.support import TESTS, experiment_toml, make_notes_db
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama


class FakeClock:
    """Monotonic seconds that move only when the code under test sleeps; `at` schedules what happens meanwhile
    (applied at its own moment, in order)."""

    def __init__(self, t: float = 1000.0):
        self.t = t
        self.slept: list[float] = []
        self.events: list[tuple[float, object]] = []

    def __call__(self) -> float:
        return self.t

    def at(self, when: float, action) -> None:
        self.events = sorted([*self.events, (when, action)], key=lambda e: e[0])

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.t + seconds
        while self.events and self.events[0][0] <= target:
            when, action = self.events.pop(0)
            self.t = when
            action()
        self.t = target
        await asyncio.sleep(0)


def clock() -> FakeClock:
    return FakeClock()


# -- the limit as written ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("45m", 2700), ("2h", 7200), ("1h30m", 5400),
                                               ("90s", 90), ("1d", 86400), ("20s", 20), ("0", None), ("0m", None)])
def test_idle_limits_read_as_seconds(text, seconds):
    assert idle_seconds(text) == seconds


@pytest.mark.parametrize("text", ["abc", "45", "", "1.5h", "-1m", "m", "30 minutes"])
def test_an_idle_limit_without_a_unit_or_a_number_is_refused(text):
    with pytest.raises(ValueError, match="is not a duration"):
        idle_seconds(text)


def test_a_profile_takes_idle_and_defaults_to_30_minutes():
    from app.settings.user import Profile

    assert Profile().idle_s == 1800
    assert Profile(idle="45m").idle_s == 2700 and Profile(idle="0").idle_s is None and Profile(idle=0).idle_s is None
    with pytest.raises(ValueError, match="is not a duration"):
        Profile(idle="soon")
    with pytest.raises(ValueError, match="is not a duration"):
        Profile(idle=45)


# -- the idle clock --------------------------------------------------------------------------------------------------


def test_idle_counts_from_the_server_answering_then_from_the_last_request_end():
    c = clock()
    t = IdleTracker(60, clock=c)
    assert t.idle_s() is None and t.stops_in_s() is None  # starting: neither idle nor due
    c.t += 100
    t.ready()
    c.t += 10
    assert t.idle_s() == 10 and t.stops_in_s() == 50 and not t.due()
    t.begin()
    c.t += 500  # a long answer: busy however long it takes
    assert t.idle_s() is None and t.stops_in_s() is None and not t.due()
    t.begin()  # a second in flight
    t.end()
    assert t.idle_s() is None  # one still in flight
    c.t += 5
    t.end()
    assert t.idle_s() == 0 and t.stops_in_s() == 60
    c.t += 59.5
    assert not t.due()
    c.t += 0.5
    assert t.due() and t.stops_in_s() == 0
    assert t.requests == 2
    assert t.seconds() == {"starting_s": 100, "busy_s": 505, "idle_s": 70}
    t.end()  # an end too many (a connection closed twice) changes nothing
    assert t.in_flight == 0 and t.requests == 2


def test_no_limit_is_never_due_but_still_counts_the_hours():
    c = clock()
    t = IdleTracker(None, clock=c)
    t.ready()
    t.begin()
    c.t += 30
    t.end()
    c.t += 10 ** 6
    assert not t.due() and t.stops_in_s() is None and t.idle_s() == 10 ** 6
    assert t.seconds()["busy_s"] == 30 and t.seconds()["idle_s"] == 10 ** 6
    snap = t.snapshot()
    assert snap["limit_s"] is None and snap["stops_in_s"] is None and snap["in_flight"] == 0


def test_the_watcher_ends_the_job_on_time_and_not_while_a_request_is_in_flight():
    c = clock()
    t = IdleTracker(20, clock=c)
    t.ready()
    c.at(1015, t.begin)  # at 15 s a request starts and takes 100 s: the job must outlive it
    c.at(1115, t.end)
    idle = asyncio.run(asyncio.wait_for(watch(t, sleep=c.sleep), 5))
    assert idle == pytest.approx(20)
    assert c.t == pytest.approx(1115 + 20)  # due exactly 20 s after the last request ended, not later
    assert all(s <= 30 for s in c.slept)


def test_a_limit_longer_than_the_watchers_step_still_ends_on_time():
    c = clock()
    t = IdleTracker(1800, clock=c)
    t.ready()
    c.at(1100, t.begin)
    c.at(1101, t.end)
    asyncio.run(asyncio.wait_for(watch(t, sleep=c.sleep), 5))
    assert c.t == pytest.approx(1101 + 1800)


def test_the_watcher_of_a_job_without_a_limit_never_returns():
    t = IdleTracker(None)
    t.ready()

    async def go():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watch(t), 0.2)

    asyncio.run(go())


def test_the_readers_state_counts_on_from_what_the_proxy_said():
    state = IdleState.from_json({"in_flight": 0, "idle_s": 100.0, "limit_s": 1800, "stops_in_s": 1700.0,
                                 "requests": 3, "busy_s": 12.0}, fetched_at=50.0)
    assert state.idle_now(now=110.0) == 160.0 and state.stops_in_now(now=110.0) == 1640.0
    assert state.idle_text(now=110.0) == "2m40s" and state.stop_text(now=110.0) == "in 27m20s"
    assert state.as_json()["stops_at"].endswith("Z")
    busy = IdleState.from_json({"in_flight": 2, "idle_s": None, "limit_s": 1800, "stops_in_s": None,
                                "requests": 5, "busy_s": 1.0}, fetched_at=0.0)
    assert busy.idle_text() == "busy (2 in flight)" and busy.stop_text() == "30m00s after the last request"
    assert busy.stops_at is None
    never = IdleState.from_json({"in_flight": 0, "idle_s": 5.0, "limit_s": None, "stops_in_s": None,
                                 "requests": 0, "busy_s": 0.0})
    assert never.stop_text() == "never"
    assert IdleState.from_json({"in_flight": "x"}) is None


def test_status_questions_do_not_count_as_use():
    for path in (b"/api/version", b"/api/tags", b"/api/ps", b"/api/show", b"/v1/models", b"/health", b"/"):
        assert not counts_as_use(path)
    for path in (b"/api/chat", b"/api/generate", b"/api/pull", b"/api/embed", b"/v1/chat/completions"):
        assert counts_as_use(path)


# -- where messages begin and end -----------------------------------------------------------------------------------


def _events(kind_of, stream_bytes: bytes, step: int | None) -> list:
    seen: list = []

    def head(h: bytes):
        seen.append(("head", h.split(b"\r\n", 1)[0].decode()))
        return kind_of(h)

    s = MessageStream(head, lambda: seen.append("end"))
    if step is None:
        s.feed(stream_bytes)
    else:
        for i in range(0, len(stream_bytes), step):
            s.feed(stream_bytes[i:i + step])
    return seen


REQUESTS = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
            b"GET /api/ps HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /api/pull HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            b"\r\nGET / HTTP/1.1\r\n\r\n")

ANSWERS = (b"HTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}\r\n"
           b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"7\r\n{\"a\":1}\r\n14;ext=1\r\n{\"status\":\"success\"}\r\n0\r\nX-Trailer: 1\r\n\r\n"
           b"HTTP/1.1 204 No Content\r\n\r\n"
           b"HTTP/1.1 200 OK\r\n\r\nuntil the end")


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_requests_are_framed_however_the_bytes_arrive(step):
    seen = _events(request_framing, REQUESTS, step)
    assert seen == [("head", "POST /api/chat HTTP/1.1"), "end", ("head", "GET /api/ps HTTP/1.1"), "end",
                    ("head", "POST /api/pull HTTP/1.1"), "end", ("head", "GET / HTTP/1.1"), "end"]


@pytest.mark.parametrize("step", [None, 1, 2, 5])
def test_answers_are_framed_however_the_bytes_arrive(step):
    seen = _events(lambda h: response_framing(h, b"POST"), ANSWERS, step)
    assert seen == [("head", "HTTP/1.1 100 Continue"), ("head", "HTTP/1.1 200 OK"), "end",
                    ("head", "HTTP/1.1 200 OK"), "end", ("head", "HTTP/1.1 204 No Content"), "end",
                    ("head", "HTTP/1.1 200 OK")]  # the last ends with the connection


def test_framing_words():
    assert response_framing(b"HTTP/1.1 200 OK\r\nContent-Length: 9", b"HEAD") == NONE
    assert response_framing(b"HTTP/1.1 200 OK", b"GET") == UNTIL_CLOSE
    assert response_framing(b"HTTP/1.1 100 Continue", b"GET") == INTERIM
    assert response_framing(b"HTTP/1.1 101 Switching Protocols", b"GET") == OPAQUE
    assert response_framing(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4", b"GET") == OPAQUE
    assert response_framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked", b"GET") == CHUNKED
    assert request_framing(b"garbage") == OPAQUE
    s = MessageStream(lambda h: CHUNKED, lambda: None)
    s.feed(b"HTTP/1.1 200 OK\r\n\r\nzz\r\n")
    assert s.opaque  # a chunk size that is not hex: stop watching rather than guess


# -- the proxy, in front of the stand-in ----------------------------------------------------------------------------


@pytest.fixture
def tracked(tmp_path, monkeypatch):
    """A stand-in (1 s an answer) behind a proxy with an idle tracker, and the job record holding its token."""
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(tmp_path / "config" / "config.toml"))
    with StandinOllama(latency=1.0, pull_seconds=1.0) as server:
        token = tokens.new_token()
        proxy = ProxyThread(server.port, token)
        tracker = IdleTracker(600)
        tracker.ready()
        proxy.proxy.tracker = tracker
        tokens.write_record(tokens.record_path("4343"), {"job_id": "4343", "url": proxy.url, "token": token})
        try:
            yield proxy, tracker, {"Authorization": f"Bearer {token}"}
        finally:
            proxy.close()


CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_the_proxy_counts_answers_in_flight_and_not_status_questions(tracked):
    proxy, tracker, auth = tracked

    async def go():
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=auth) as client:
            for path in ("/api/version", "/api/tags", "/api/ps"):
                assert (await client.get(path)).status_code == 200
            assert tracker.requests == 0 and tracker.in_flight == 0
            chats = [asyncio.ensure_future(client.post("/api/chat", json=CHAT)) for _ in range(3)]
            await asyncio.sleep(0.5)
            in_flight = tracker.in_flight  # each takes 1 s at the stand-in
            idle_meanwhile = tracker.idle_s()
            assert all(r.status_code == 200 for r in await asyncio.gather(*chats))
            after = tracker.in_flight
            # a streamed pull is in flight from its first byte to its last
            async with client.stream("POST", "/api/pull", json={"model": "qwen2.5:7b"}) as resp:
                lines = 0
                async for _ in resp.aiter_lines():
                    lines += 1
                    if lines == 2:
                        pulling = tracker.in_flight
            return in_flight, idle_meanwhile, after, pulling

    in_flight, idle_meanwhile, after, pulling = asyncio.run(go())
    assert in_flight == 3 and idle_meanwhile is None
    assert after == 0 and pulling == 1 and tracker.in_flight == 0
    assert tracker.requests == 4 and tracker.idle_s() < 1.0
    assert tracker.busy_s() >= 1.9  # the chats (~1 s) and the pull (~1 s)


def test_a_client_that_leaves_mid_answer_ends_its_request(tracked):
    proxy, tracker, auth = tracked

    async def go():
        client = httpx.AsyncClient(base_url=proxy.url, timeout=0.3, headers=auth)
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/api/chat", json=CHAT)  # gives up after 0.3 s of a 1 s answer, and closes
        await client.aclose()

    asyncio.run(go())
    wait_for(lambda: tracker.in_flight == 0, 5, "the dropped request to end")
    assert tracker.requests == 1


def test_the_idle_endpoint_wants_the_token_and_says_how_idle_the_job_is(tracked):
    proxy, tracker, auth = tracked
    assert httpx.get(f"{proxy.url}/_notes-tui/idle", timeout=5).status_code == 401
    doc = httpx.get(f"{proxy.url}/_notes-tui/idle", headers=auth, timeout=5).json()
    assert doc["in_flight"] == 0 and doc["limit_s"] == 600 and doc["requests"] == 0
    assert 0 <= doc["idle_s"] < 5 and 595 < doc["stops_in_s"] <= 600
    assert tracker.requests == 0  # asking does not keep the job alive
    state = asyncio.run(fetch_idle(proxy.url))  # the token found by URL, as server list does
    assert state is not None and state.limit_s == 600 and state.in_flight == 0
    assert asyncio.run(fetch_idle("http://127.0.0.1:9")) is None  # not a job of ours: nothing to say


# -- a whole server job, outside Slurm -----------------------------------------------------------------------------


class NoSlurm:
    """Where a job sets its Comment: remembered instead of `scontrol update`."""

    def __init__(self):
        self.comments: list[str] = []

    def set_comment(self, job_id: str, comment: str) -> None:
        self.comments.append(comment)


STANDIN = f"{sys.executable} {TESTS / 'standin' / 'standin_ollama.py'} --latency 0.05 --port {{port}}"


def _job_env(tmp_path, job_id: str) -> dict[str, str]:
    import os

    # the user config and the ledger of the test (private_ledger), as a job has the submitter's
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_JOB_NAME="ollama-standin", SLURM_GPUS_ON_NODE="2")
    env.pop("NOTES_TUI_RUN_SERVER", None)
    return env


def test_a_server_job_with_no_request_for_its_limit_ends_itself_and_records_its_hours(tmp_path, private_ledger):
    from app.cluster.serverjob import serve
    from ledger.serverjobs import job_record

    slurm = NoSlurm()
    env = _job_env(tmp_path, "5151")
    t0 = time.monotonic()
    code = asyncio.run(asyncio.wait_for(serve(STANDIN, env, 30, slurm=slurm, isolated=False, idle_s=2), 60))
    took = time.monotonic() - t0
    assert code == 0 and slurm.comments and slurm.comments[0].startswith("ollama:")
    assert 2 <= took < 15
    rec = job_record(private_ledger, "5151")
    assert rec["status"] == "ended" and rec["ended_by"] == "idle" and rec["idle_limit_s"] == 2
    assert rec["gpus"] == 2 and rec["requests"] == 0 and rec["busy_s"] == 0
    assert 2 <= rec["idle_s"] < 5 and rec["gpu_hours"]["used"] == 0
    assert rec["gpu_hours"]["idle"] == pytest.approx(2 * rec["idle_s"] / 3600, abs=1e-4)
    assert tokens.job_record("5151") is None and tokens.ended_path("5151").exists()  # the token went with the job


def test_a_job_kept_busy_outlives_its_limit(tmp_path, private_ledger):
    """idle = 2 s, and a chat every 0.5 s for 5 s: the job is still there after them, then ends on its own."""
    from app.cluster.serverjob import serve
    from ledger.serverjobs import job_record

    env = _job_env(tmp_path, "5252")

    async def go():
        job = asyncio.ensure_future(serve(STANDIN, env, 30, slurm=NoSlurm(), isolated=False, idle_s=2))
        record = await asyncio.to_thread(wait_for, lambda: tokens.job_record("5252"), 30, "the job to serve")
        auth = {"Authorization": f"Bearer {record['token']}"}
        async with httpx.AsyncClient(base_url=record["url"], timeout=10, headers=auth) as client:
            for _ in range(10):
                assert (await client.post("/api/chat", json=CHAT)).status_code == 200
                await asyncio.sleep(0.5)
                assert not job.done()
        last = time.monotonic()
        code = await asyncio.wait_for(job, 30)
        return code, time.monotonic() - last

    code, after = asyncio.run(go())
    assert code == 0 and 1.5 <= after < 10
    rec = job_record(private_ledger, "5252")
    assert rec["ended_by"] == "idle" and rec["requests"] == 10 and rec["busy_s"] > 0.4


def test_a_job_for_one_run_serves_it_alone_and_ends_with_it(tmp_path, private_ledger):
    """`--then-run` (what `submit --with-server` runs): no address published, the run uses this job's server
    whatever the file says, and the job ends when the run does, its record saying so."""
    from app.cluster.serverjob import serve
    from ledger.serverjobs import job_record

    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    source = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
    exp.write_text(experiment_toml(source=source, hosts=["http://gpu-elsewhere:11434"]))
    slurm = NoSlurm()
    env = _job_env(tmp_path, "5353")
    code = asyncio.run(asyncio.wait_for(serve(STANDIN, env, 30, slurm=slurm, isolated=False, idle_s=1,
                                              then_run=str(exp)), 120))
    assert code == 0 and slurm.comments == []  # nobody else finds this server
    (run,) = ledger_runs(private_ledger)
    assert run["status"] == "completed" and run["counts"]["valid"] == 1
    header = next(r for r in journal_records(private_ledger) if r["type"] == "header")["header"]
    assert header["hosts"][0].startswith("http://") and "gpu-elsewhere" not in header["hosts"][0]
    assert [j["job_id"] for j in header["server_jobs"]] == ["5353"] and header["server_jobs"][0]["gpus"] == 2
    rec = job_record(private_ledger, "5353")
    assert rec["ended_by"] == "run ended" and rec["idle_limit_s"] is None and rec["with_run"] == str(exp)
    assert rec["requests"] >= 1 and rec["busy_s"] > 0
    assert json.loads(json.dumps(rec))["gpu_hours"]["held"] > 0
