"""A run that waits says so, through the engine's events, its live feed and the headless printer: for its servers
(every one refuses: which host, since when, the error, when it gives up) and to write its results (the SQLite file
locked by another program) — once when the wait begins, not once per retry, and cleared when it ends and the run goes
on. In this process, against a scripted backend that refuses while the test says so."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import time

import pytest

from app.backends.base import Backend, ModelInfo, Reply, Transient
from app.engine.bus import EventBus
from app.engine.console import ConsolePrinter
from app.engine.events import Counts, HostState, Progress, RunFinished, UnitDone, Waiting
from app.engine.feed import LiveFeed
from app.engine.runner import Runner, RunOptions
from app.errors import BackendError
from app.experiment import load_experiment
from app.runs.follow import FeedFollower
from app.runs.followed import FollowedRun
from app.sources import open_source
from tests.helpers.notes import SOURCE, make_db, results
from tests.helpers.support import experiment_toml

A = "http://gpu-a:11434"
VALID = '{"response": "(2) Unlikely", "explanation": "clear"}'
GIVE_UP_S = 40


class Switchable(Backend):
    """Answers every note after `latency`; refuses every connection while `down` is set."""

    name = "switchable"
    default_concurrency = 2

    def __init__(self, latency: float = 0.01):
        self.latency = latency
        self.down = False
        self.refused = 0

    async def prepare(self) -> ModelInfo:
        return ModelInfo(model="scripted:latest", digest=None, server_version=None, hosts=(A,))

    async def chat(self, host, system, user, schema) -> Reply:
        if self.down:
            self.refused += 1
            raise Transient("connection refused", down=True)
        await asyncio.sleep(self.latency)
        return Reply(content=VALID, done_reason="stop", tokens_in=100, tokens_out=10, truncated=False)


class Run:
    """`backend` a Backend, or a function of the experiment that makes one (the real client to `hosts`)."""

    def __init__(self, tmp_path, backend, n: int, batch: int = 5, hosts: tuple[str, ...] = (A,)):
        make_db(tmp_path / "notes.db", n=n)
        path = tmp_path / "exp.toml"
        path.write_text(experiment_toml(source=SOURCE, hosts=list(hosts),
                                        results=f'table = "pna_results"\nbatch_size = {batch}',
                                        run=f"concurrency = 2\ngive_up_s = {GIVE_UP_S}"))
        if not isinstance(backend, Backend):
            backend = backend(load_experiment(path))
        self.ledger = tmp_path / "ledger"
        self.db = tmp_path / "notes.db"
        self.events: list = []
        self.out = io.StringIO()
        bus = EventBus()
        bus.subscribe(self.events.append)
        bus.subscribe(LiveFeed(self.ledger, flush_every_s=0.05))
        bus.subscribe(ConsolePrinter(self.out, every_s=0.0))  # every progress line printed: none may repeat a retry
        self.source = open_source(load_experiment(path))
        self.runner = Runner(load_experiment(path), self.source, backend, bus,
                             RunOptions(ledger_dir=self.ledger, run_id="01JWAITING0000000000000000"))

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def follower(self) -> FollowedRun:
        return FollowedRun(self.ledger, self.runner.opts.run_id, FeedFollower(self.ledger, self.runner.opts.run_id))


def written(db) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM pna_results").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()


async def until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def test_a_run_whose_server_refuses_says_it_waits_until_when_and_goes_on_when_it_answers(tmp_path):
    backend = Switchable()
    run = Run(tmp_path, backend, n=400)
    followed = run.follower()

    async def scenario():
        task = asyncio.create_task(run.runner.run())
        await until(lambda: len(run.of(UnitDone)) >= 20, what="notes answered")
        last_answer = time.time()
        backend.down = True  # the server job was killed
        killed = time.monotonic()
        await until(lambda: run.of(Waiting), what="the run to say it waits")
        said_after = time.monotonic() - killed
        # retries of the host while it waits (0.5, 1, 2 s apart)
        await until(lambda: len([e for e in run.of(HostState) if e.state == "down"]) >= 3
                    and any(p.waiting for p in run.of(Progress)), timeout=20, what="retries and a progress tick while waiting")
        followed.apply(followed.follower.poll())
        seen_on_feed = list(followed.waiting)
        backend.down = False  # the server is back
        await until(lambda: any(w.over for w in run.of(Waiting)), what="the wait to end")
        ticks_before = len(run.of(Progress))
        await until(lambda: len(run.of(Progress)) > ticks_before + 1, what="a progress tick after the wait")
        followed.apply(followed.follower.poll())
        seen_after = list(followed.waiting)
        result = await asyncio.wait_for(task, 60)
        return last_answer, said_after, seen_on_feed, seen_after, result

    try:
        last_answer, said_after, seen_on_feed, seen_after, result = asyncio.run(scenario())
    finally:
        run.source.close()
    assert said_after < 2.0  # the first refusal says it, not a fading rate

    begun = [w for w in run.of(Waiting) if not w.over]
    assert len(begun) == 1, begun  # once when it began, not once per retry
    wait = begun[0]
    assert wait.on == "servers" and wait.where == (A,) and wait.error == "connection refused"
    assert last_answer - 1 <= wait.since <= last_answer + 2
    assert abs(wait.give_up_at - (last_answer + GIVE_UP_S)) < 2  # give_up_s after the last answer
    words = wait.words(now=wait.since + 12)
    assert re.fullmatch(r"waiting for its server gpu-a:11434 \(connection refused\) since \d\d:\d\d:\d\d \S+ \(12s\); "
                        r"gives up at \d\d:\d\d:\d\d \S+ \(in \d\ds\)", words), words
    # every progress tick while waiting carries the same wait; the ones after the wait carry none
    waiting_ticks = [p for p in run.of(Progress) if p.waiting]
    assert waiting_ticks and all(p.waiting == (wait,) for p in waiting_ticks)
    over = [w for w in run.of(Waiting) if w.over]
    assert len(over) == 1 and over[0].since == wait.since
    after = run.events.index(over[0])
    assert not any(isinstance(e, Progress) and e.waiting for e in run.events[after:])
    # the feed carries it to a follower (the Runs screen), and the follower clears it when the wait ends
    assert [w.record() for w in seen_on_feed] == [wait.record()] and seen_after == []  # the feed keeps ms
    # the run went on: every note answered
    assert result.status == "completed" and result.counts.valid == 400 and len(results(run.db)) == 400
    assert isinstance(run.events[-1], RunFinished)
    assert len([e for e in run.of(HostState) if e.state == "down"]) >= 3  # the retries the printer does not repeat

    printed = run.out.getvalue().splitlines()
    assert len([line for line in printed if line.startswith(f"host {A}: connection refused")]) == 1
    assert len([line for line in printed if line.startswith("waiting for its server")]) == 1
    progress_waiting = [line for line in printed if line.startswith("[") and "waiting for its server" in line]
    assert progress_waiting and all("gives up at" in line and "notes/s" not in line for line in progress_waiting)
    assert any(line.startswith("its server answers again after") for line in printed)


def test_a_run_whose_results_file_is_locked_says_it_waits_and_goes_on_when_the_lock_goes(tmp_path):
    backend = Switchable()
    run = Run(tmp_path, backend, n=60, batch=5)
    followed = run.follower()
    other = sqlite3.connect(run.db, isolation_level=None, check_same_thread=False)  # another program's connection

    async def scenario():
        task = asyncio.create_task(run.runner.run())
        await until(lambda: written(run.db) >= 10, what="batches written")
        other.execute("BEGIN IMMEDIATE")  # it holds the write lock
        locked = time.monotonic()
        await until(lambda: run.of(Waiting), what="the run to say it waits")
        said_after = time.monotonic() - locked
        await until(lambda: any(p.waiting for p in run.of(Progress)), what="a progress tick while waiting")
        await asyncio.sleep(0.2)
        followed.apply(followed.follower.poll())
        seen_on_feed = list(followed.waiting)
        other.execute("COMMIT")  # the lock goes
        result = await asyncio.wait_for(task, 60)
        return said_after, seen_on_feed, result

    try:
        said_after, seen_on_feed, result = asyncio.run(scenario())
    finally:
        other.close()
        run.source.close()
    assert said_after < 3.0
    begun = [w for w in run.of(Waiting) if not w.over]
    assert len(begun) == 1, begun
    wait = begun[0]
    assert wait.on == "results" and wait.where == (f"pna_results in {run.db}",)
    assert wait.error.startswith("database is locked")
    assert 29 <= wait.give_up_at - wait.since <= 31  # the 30 s the busy timeout always gave
    assert wait.words(now=wait.since + 3).startswith(f"cannot write its results to pna_results in {run.db} "
                                                     "(database is locked")
    assert [w.record() for w in seen_on_feed] == [wait.record()]
    assert [w.over for w in run.of(Waiting)] == [False, True]
    assert result.status == "completed" and len(results(run.db)) == 60
    printed = run.out.getvalue().splitlines()
    assert len([line for line in printed if line.startswith("cannot write its results")]) == 1
    # the notes are still answered meanwhile: the progress line keeps its rate and says what it waits for
    assert any(line.startswith("[") and "notes/s" in line and "cannot write its results" in line for line in printed)
    assert any(line.startswith("its results are written again after") for line in printed)


def test_refusals_of_requests_sent_before_the_pause_do_not_lengthen_it():
    """Eight requests in flight when the server dies are refused together: one pause of 0.5 s, not 2^7 of them (15 s),
    so a server back after a few seconds is asked again within seconds."""
    from app.engine.hosts import DOWN_BASE_S, HostPool

    now = [100.0]

    async def scenario():
        pool = HostPool((A,), initial=8, cap=8, give_up_after_s=60, clock=lambda: now[0])
        leases = [pool.try_acquire() for _ in range(8)]
        assert all(leases)
        for lease in leases:
            pool.failed(lease, "connection refused", down=True)
        slot = pool.slots[0]
        assert slot.down_count == 1 and slot.down_until == 100.0 + DOWN_BASE_S
        assert pool.unreachable() == (100.0, 160.0)  # since the first refusal; gives up 60 s after the last answer
        now[0] = 100.0 + DOWN_BASE_S  # the pause is over: the next refusal doubles it
        pool.failed(pool.try_acquire(), "connection refused", down=True)
        assert slot.down_count == 2 and slot.down_until == now[0] + 2 * DOWN_BASE_S
        now[0] += 2 * DOWN_BASE_S
        pool.ok(pool.try_acquire())
        assert pool.unreachable() is None and slot.down_since is None

    asyncio.run(scenario())


def test_a_follower_reads_waits_from_waiting_and_progress_lines_and_never_fails_on_strange_ones(tmp_path):
    import json

    from ledger.feed import feed_path

    path = feed_path(tmp_path, "R1")
    path.parent.mkdir(parents=True)
    wait = {"on": "servers", "where": [A], "error": "connection refused", "since": 1000.0, "give_up_at": 1060.0,
            "over": False}

    def add(*lines):
        with open(path, "a") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))

    def progress(**extra):
        return {"type": "progress", "counts": {"total": 9, "done": 1}, "elapsed_s": 1.0, "rate": 1.0, **extra}

    add({"type": "feed", "run": "R1", "total": 9}, progress(waiting=5), {"type": "waiting", "on": "bogus"},
        {"type": "waiting", **wait, "since": "soon"})
    follower = FeedFollower(tmp_path, "R1")
    assert [w.since for w in follower.poll().waiting] == [0.0]  # a strange time is not a reason to fail
    add({"type": "waiting", **wait, "over": True})
    assert follower.poll().waiting == []
    late = FeedFollower(tmp_path, "R1")  # attached mid-wait: the progress line says what the run waits on
    add(progress(waiting=[wait]))
    assert [w.record() for w in late.poll().waiting] == [wait]
    add({"type": "end", "status": "interrupted", "reason": "no server answered", "counts": {"total": 9, "done": 1}})
    assert late.poll().waiting == []


def test_a_model_not_in_memory_is_loaded_before_the_first_note_and_the_run_says_so(tmp_path):
    """Ollama loads a model on its first request, seconds or minutes for a large one: the run loads it first (the
    empty chat Ollama loads with, with the run's options) and says so meanwhile, instead of 0 notes/s."""
    from app.backends import make_backend
    from tests.standin.standin_ollama import StandinOllama

    with StandinOllama(latency=0.01, slots=4, loaded=(), load_seconds=1.5) as server:
        run = Run(tmp_path, make_backend, n=40, hosts=(server.url,))
        followed = run.follower()

        async def scenario():
            task = asyncio.create_task(run.runner.run())
            await until(lambda: any(p.waiting for p in run.of(Progress)), what="a progress tick while loading")
            followed.apply(followed.follower.poll())
            seen = list(followed.waiting)
            return seen, await asyncio.wait_for(task, 60)

        try:
            seen, result = asyncio.run(scenario())
        finally:
            run.source.close()
        stats = server.stats()
    assert result.status == "completed" and len(results(run.db)) == 40
    began, ended = run.of(Waiting)
    assert began.on == "model" and began.where == (server.url,) and began.error == "not in memory" and ended.over
    assert [w.record() for w in seen] == [began.record()]  # the feed carries it to the Runs screen
    first_note = next(e for e in run.events if isinstance(e, UnitDone))
    assert run.events.index(ended) < run.events.index(first_note)  # no note was sent before the model was in
    assert stats["chat"] == 40 + 1 and stats["max_queued"] == 0  # the load, then the notes: none waited behind it
    printed = run.out.getvalue().splitlines()
    host = server.url.split("://")[1]
    assert any(re.fullmatch(rf"loading its model on {host} \(not in memory\) since \d\d:\d\d:\d\d \S+ \(\d+s\)",
                            line) for line in printed), printed
    assert any(re.fullmatch(r"its model is loaded after [12]s; the notes go out", line) for line in printed), printed
    assert not [line for line in printed if line.startswith("[") and "loading its model" in line and "notes/s" in line]
    # what the load cost, for the run's record (tests/engine/test_run_sqlite.py: `ledger show` says it)
    load = run.of(RunFinished)[0].extra["model_load"]
    assert load["hosts"] == [server.url] and load["outcome"] == "loaded" and 1.4 <= load["seconds"] <= 5
    assert re.search(rf"  model load: {load['seconds']} s on {host} before the first note", "\n".join(printed))


def test_a_model_in_memory_on_one_server_starts_there_at_once(tmp_path):
    from app.backends import make_backend
    from tests.standin.standin_ollama import StandinOllama

    with StandinOllama(latency=0.01, slots=4) as warm, \
            StandinOllama(latency=0.01, slots=4, loaded=(), load_seconds=1.0) as cold:
        run = Run(tmp_path, make_backend, n=40, hosts=(warm.url, cold.url))
        try:
            result = asyncio.run(run.runner.run())
        finally:
            run.source.close()
    assert result.status == "completed" and not run.of(Waiting)
    printed = run.out.getvalue()
    assert f"note: the model is not in memory on {cold.url}: the first answers there wait for it to load" in printed


def test_a_model_that_does_not_load_is_said_and_the_notes_go_out_anyway(tmp_path):
    """The load refused (here: the server no longer has the model): the wait ends saying so, and the notes go out
    and meet the error themselves: here the one line that ends the run and says how to fix it."""
    from app.backends import make_backend
    from tests.standin.standin_ollama import StandinOllama

    with StandinOllama(latency=0.01, slots=4, loaded=()) as server:
        run = Run(tmp_path, make_backend, n=10, hosts=(server.url,))
        backend = run.runner.backend
        prepare = backend.prepare

        async def prepare_then_lose_the_model():
            info = await prepare()
            server.configure(models=("qwen2.5:7b",))  # removed between the check and the load
            return info

        backend.prepare = prepare_then_lose_the_model
        try:
            with pytest.raises(BackendError, match="vanished from"):  # the first note's own error ends the run
                asyncio.run(run.runner.run())
        finally:
            run.source.close()
    began, ended = run.of(Waiting)
    assert began.on == "model" and ended.over and ended.error.startswith("load failed: ")
    printed = run.out.getvalue()
    assert re.search(r"its model did not load \(load failed: .*404.*\) after \d+s; the notes go out anyway", printed), printed
    assert f"note: loading the model on {server.url} failed" in printed


def test_a_run_stopped_while_its_model_loads_ends_at_once_with_no_note_sent(tmp_path):
    from app.backends import make_backend
    from tests.standin.standin_ollama import StandinOllama

    with StandinOllama(latency=0.01, slots=4, loaded=(), load_seconds=60) as server:
        run = Run(tmp_path, make_backend, n=10, hosts=(server.url,))

        async def scenario():
            task = asyncio.create_task(run.runner.run())
            await until(lambda: run.of(Waiting), what="the load to begin")
            stopped = time.monotonic()
            run.runner.request_stop("SIGTERM")
            result = await asyncio.wait_for(task, 30)
            return result, time.monotonic() - stopped

        try:
            result, took = asyncio.run(scenario())
        finally:
            run.source.close()
        stats = server.stats()
    assert result.status == "interrupted" and result.counts.done == 0 and took < 5
    assert stats["chat"] == 1 and written(run.db) == 0  # the load, no note
    assert [w.over for w in run.of(Waiting)] == [False]  # it ended waiting, as a run that gives up does


def test_the_printed_rate_and_eta_leave_out_the_seconds_the_model_loaded():
    printer = ConsolePrinter(io.StringIO(), every_s=0.0)
    printer(Waiting(on="model", where=(A,), error="not in memory", since=time.time() - 10.0, over=True))
    assert 9.9 <= printer.load_s <= 11
    progress = Progress(counts=Counts(total=100, done=50, valid=50), elapsed_s=15.0, in_flight=2)
    line = ConsolePrinter.progress_line(progress, load_s=10.0)
    assert "10.0 notes/s  ETA 00:00:05" in line, line
    assert "3.3 notes/s" in ConsolePrinter.progress_line(progress)  # the same run counted from its start
