"""The run loop in this process against a scripted backend: each note's replies are written down in advance (a valid
answer, one that is not JSON, a 503, a 5xx, a refused connection, a prompt too long, a reply that never comes), so
retry, the fallback answer, the 503 back-off, another host taking over, stop / hurry / abort and the truncation
count are checked without a server, a subprocess or a sleep longer than a few hundred milliseconds."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from app.backends.base import Backend, Busy, ModelInfo, PromptTooLong, Reply, Transient
from app.engine import runner as runner_module
from app.engine.bus import EventBus
from app.engine.events import BatchCommitted, Notice, UnitDone
from app.engine.runner import BUSY_BACKOFF_S, MAX_TRANSPORT_FAILURES, Runner, RunOptions
from app.experiment import load_experiment
from app.sources import open_source
from tests.helpers.notes import SOURCE, make_db, results
from tests.helpers.support import experiment_toml

A, B = "http://gpu-a:11434", "http://gpu-b:11434"
VALID = '{"response": "(2) Unlikely", "explanation": "clear"}'
NOT_JSON = "It looks like pneumonia to me."
FALLBACK = {"response": "(4) LLM output invalid", "explanation": "LLM output failed validation."}
HANG = object()  # a step that never answers unless the test releases it


def reply(content: str = VALID, truncated: bool = False, done_reason: str = "stop") -> Reply:
    return Reply(content=content, done_reason=done_reason, tokens_in=100, tokens_out=10, truncated=truncated)


class Scripted(Backend):
    """Answers note i (make_db's "CHEST X-RAY i: ...") with its script's next step, the last step again once the
    script runs out, a valid answer for notes without one. A step is a Reply, an exception to raise, or HANG.
    `down` hosts refuse every connection."""

    name = "scripted"
    default_concurrency = 4

    def __init__(self, script: dict[int, list] | None = None, hosts: tuple[str, ...] = (A,), down: tuple[str, ...] = ()):
        self.script = script or {}
        self.hosts = hosts
        self.down = set(down)
        self.calls: dict[int, list[str]] = defaultdict(list)  # note -> the host of each request
        self.hanging: set[int] = set()
        self.release = asyncio.Event()

    async def prepare(self) -> ModelInfo:
        return ModelInfo(model="scripted:latest", digest=None, server_version=None, hosts=self.hosts)

    async def chat(self, host, system, user, schema) -> Reply:
        note = int(re.search(r"CHEST X-RAY (\d+):", user).group(1))
        if host in self.down:
            raise Transient(f"{host}: connection refused", down=True)
        self.calls[note].append(host)
        steps = self.script.get(note) or [reply()]
        step = steps[min(len(self.calls[note]), len(steps)) - 1]
        if step is HANG:
            self.hanging.add(note)
            try:
                await self.release.wait()
            finally:
                self.hanging.discard(note)
            return reply()
        if isinstance(step, BaseException):
            raise step
        return step


class Run:
    """A run of `n` notes from a SQLite file under tmp_path, with the events it emitted."""

    def __init__(self, tmp_path: Path, backend: Scripted, n: int = 10, batch: int = 5, concurrency: int | None = None,
                 grace_s: float = 5):
        make_db(tmp_path / "notes.db", n=n)
        text = experiment_toml(source=SOURCE, hosts=list(backend.hosts),
                               results=f'table = "pna_results"\nbatch_size = {batch}',
                               run=f"concurrency = {concurrency}" if concurrency else "")
        path = tmp_path / "exp.toml"
        path.write_text(text.replace("grace_s = 5", f"grace_s = {grace_s}"))
        self.db = tmp_path / "notes.db"
        self.backend = backend
        self.events: list = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        self.source = open_source(load_experiment(path))
        self.runner = Runner(load_experiment(path), self.source, backend, bus, RunOptions(ledger_dir=tmp_path / "ledger"))

    def done(self) -> dict[int, UnitDone]:
        return {int(e.id): e for e in self.events if isinstance(e, UnitDone)}

    def rows(self) -> dict[int, dict]:
        return {r["note_id"]: r for r in results(self.db)}

    def committed(self) -> int:
        return sum(len(e.units) for e in self.events if isinstance(e, BatchCommitted))

    def notices(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, Notice)]

    def go(self):
        try:
            return asyncio.run(self.runner.run())
        finally:
            self.source.close()


TICK_S = 1234.5  # the progress ticker's period while sleeps are recorded: no back-off is ever this long


class Sleeps:
    """The runner's `asyncio` with its sleeps written down and cut to 10 ms: the back-off is asserted, not waited."""

    def __init__(self):
        self.asked: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        if seconds != TICK_S:
            self.asked.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))


@pytest.fixture
def sleeps(monkeypatch) -> Sleeps:
    recorder = Sleeps()
    monkeypatch.setattr(runner_module, "asyncio", recorder)
    monkeypatch.setattr(runner_module, "PROGRESS_EVERY_S", TICK_S)
    return recorder


async def ended(task: asyncio.Task, backend: Scripted, timeout: float):
    """The run's result once it ends; a run that does not end in time gets its hanging replies released (so the test
    fails instead of hanging: a cancelled run still drains what it has in flight) and fails the test."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        backend.release.set()
        await asyncio.wait({task}, timeout=5)
        raise AssertionError(f"the run did not end within {timeout} s")
    return task.result()


async def until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def test_a_reply_that_is_not_json_is_asked_again_and_the_valid_one_kept(tmp_path):
    run = Run(tmp_path, Scripted({3: [reply(NOT_JSON), reply()]}))
    result = run.go()
    assert result.status == "completed"
    assert (result.counts.valid, result.counts.invalid, result.counts.retried) == (10, 0, 1)
    assert len(run.backend.calls[3]) == 2 and all(len(run.backend.calls[i]) == 1 for i in range(10) if i != 3)
    assert (run.done()[3].outcome, run.done()[3].attempts) == ("valid", 2)
    assert (run.rows()[3]["valid"], run.rows()[3]["attempts"], run.rows()[3]["response"]) == (1, 2, "(2) Unlikely")
    assert run.done()[3].tokens_in == 200  # both attempts' prompts are counted


def test_two_replies_that_fail_validation_write_the_fallback_answer(tmp_path):
    run = Run(tmp_path, Scripted({2: [reply(NOT_JSON)], 7: [reply('{"response": "maybe", "explanation": "x"}')]}))
    result = run.go()
    assert result.status == "completed"
    assert (result.counts.valid, result.counts.invalid, result.counts.retried) == (8, 2, 2)
    assert len(run.backend.calls[2]) == len(run.backend.calls[7]) == 2  # max_attempts = 2, then no more
    assert sum(result.reasons.values()) == 2
    for note in (2, 7):
        row = run.rows()[note]
        assert {k: row[k] for k in FALLBACK} == FALLBACK and (row["valid"], row["attempts"]) == (0, 2)
        assert run.done()[note].outcome == "invalid" and run.done()[note].answer == {}
    assert run.rows()[0]["valid"] == 1


def test_a_503_backs_off_longer_each_time_and_is_not_an_attempt(tmp_path, sleeps):
    run = Run(tmp_path, Scripted({4: [Busy(), Busy(), Busy(), Busy(), reply()]}))
    result = run.go()
    assert result.status == "completed" and result.counts.valid == 10 and result.counts.retried == 0
    assert sleeps.asked == list(BUSY_BACKOFF_S[:4])  # 50, 100, 200, 400 ms: growing, and only for the busy note
    assert len(run.backend.calls[4]) == 5 and (run.done()[4].outcome, run.done()[4].attempts) == ("valid", 1)
    assert run.rows()[4]["attempts"] == 1


def test_5xx_failures_are_retried_with_back_off_then_the_note_is_left_as_an_error(tmp_path, sleeps):
    run = Run(tmp_path, Scripted({1: [Transient("HTTP 500"), reply()], 6: [Transient("HTTP 502")]}), concurrency=1)
    result = run.go()
    assert result.status == "completed"
    assert (result.counts.valid, result.counts.errors) == (9, 1)
    assert run.done()[1].outcome == "valid" and len(run.backend.calls[1]) == 2
    assert run.done()[6].outcome == "error" and run.done()[6].error == "transport"
    assert len(run.backend.calls[6]) == MAX_TRANSPORT_FAILURES
    assert 6 not in run.rows() and len(run.rows()) == 9  # an error leaves no row: the note stays to do
    assert sleeps.asked == [1.0, 1.0, 2.0, 4.0]  # note 1's one failure, then note 6's three before its fourth
    assert "HTTP 502" in result.last_error


def test_a_refused_host_is_paused_and_the_other_host_answers_every_note(tmp_path, sleeps):
    run = Run(tmp_path, Scripted(hosts=(A, B), down=(A,)))
    result = run.go()
    assert result.status == "completed" and result.counts.valid == 10
    assert {e.host for e in run.done().values()} == {B}
    assert all(hosts == [B] for hosts in run.backend.calls.values())  # A's refusals were never a note's attempt
    assert result.counts.retried == 0
    assert sleeps.asked == []  # a refusal pauses the host, not the note: it goes straight to B


def test_a_prompt_too_long_is_invalid_at_once_and_counted_truncated(tmp_path):
    run = Run(tmp_path, Scripted({5: [PromptTooLong("the input length exceeds the context length")]}))
    result = run.go()
    assert len(run.backend.calls[5]) == 1  # another attempt would be refused the same way
    assert (run.done()[5].outcome, run.done()[5].error, run.done()[5].truncated) == ("invalid", "too_long", True)
    assert (result.counts.invalid, result.counts.truncated) == (1, 1)
    assert run.rows()[5]["truncated"] == 1 and run.rows()[5]["valid"] == 0


def test_truncated_replies_are_counted_once_per_note(tmp_path):
    script = {0: [reply(truncated=True)], 3: [reply(truncated=True)],
              5: [reply(NOT_JSON, truncated=True), reply()],  # the first attempt was cut: the note counts as cut
              8: [reply(NOT_JSON, done_reason="length", truncated=True)]}  # cut twice, invalid: still one note
    run = Run(tmp_path, Scripted(script))
    result = run.go()
    assert result.counts.truncated == 4
    assert {i for i, e in run.done().items() if e.truncated} == {0, 3, 5, 8}
    assert {i for i, r in run.rows().items() if r["truncated"]} == {0, 3, 5, 8}
    assert (run.done()[5].outcome, run.done()[8].outcome) == ("valid", "invalid")


def test_a_stop_lets_the_notes_in_flight_finish_and_sends_no_more(tmp_path):
    run = Run(tmp_path, Scripted({i: [HANG] for i in range(10)}), concurrency=2)

    async def scenario():
        task = asyncio.create_task(run.runner.run())
        await until(lambda: len(run.backend.hanging) == 2, what="two notes in flight")
        run.runner.request_stop("SIGTERM")
        await asyncio.sleep(0.05)
        run.backend.release.set()
        return await ended(task, run.backend, 10)

    try:
        result = asyncio.run(scenario())
    finally:
        run.source.close()
    assert (result.status, result.reason) == ("interrupted", "SIGTERM")
    assert sum(len(c) for c in run.backend.calls.values()) == 2  # nothing was sent after the stop
    assert result.counts.valid == 2 and len(run.rows()) == 2  # the two in flight were answered and written
    assert not any("still in flight" in n for n in run.notices())


def test_notes_still_in_flight_when_the_grace_period_ends_are_left_to_do(tmp_path):
    run = Run(tmp_path, Scripted({i: [HANG] for i in range(10)}), concurrency=2, grace_s=0.3)

    async def scenario():
        task = asyncio.create_task(run.runner.run())
        await until(lambda: len(run.backend.hanging) == 2, what="two notes in flight")
        stopped = time.monotonic()
        run.runner.request_stop("SIGTERM")
        result = await ended(task, run.backend, 10)
        return result, time.monotonic() - stopped

    try:
        result, waited = asyncio.run(scenario())
    finally:
        run.source.close()
    assert result.status == "interrupted" and result.counts.done == 0 and run.rows() == {}
    assert waited >= 0.3  # the grace period was given
    assert "2 notes still in flight were left for the next run" in run.notices()


def test_hurry_does_not_wait_for_the_notes_in_flight(tmp_path):
    run = Run(tmp_path, Scripted({i: [HANG] for i in range(10)}), concurrency=2, grace_s=30)

    async def scenario():
        task = asyncio.create_task(run.runner.run())
        await until(lambda: len(run.backend.hanging) == 2, what="two notes in flight")
        run.runner.hurry()
        return await ended(task, run.backend, 5)  # far less than the 30 s of grace a plain stop would give

    try:
        result = asyncio.run(scenario())
    finally:
        run.source.close()
    assert (result.status, result.reason) == ("interrupted", "hurried")
    assert result.counts.done == 0 and run.rows() == {}
    assert "2 notes still in flight were left for the next run" in run.notices()


def test_abort_fails_the_run_and_writes_no_row_after_it(tmp_path):
    run = Run(tmp_path, Scripted({i: [HANG] for i in range(2, 10)}), batch=1, concurrency=2)

    async def scenario():
        task = asyncio.create_task(run.runner.run())
        await until(lambda: run.committed() == 2 and len(run.backend.hanging) == 2, what="2 rows written, 2 in flight")
        run.runner.abort("the run journal cannot be written", OSError(28, "No space left on device"))
        run.backend.release.set()
        return await ended(task, run.backend, 10)

    try:
        result = asyncio.run(scenario())
    finally:
        run.source.close()
    assert result.status == "failed"
    assert result.last_error.startswith("the run journal cannot be written") and "No space left" in result.last_error
    assert result.counts.valid == 4  # the two in flight were answered ...
    assert sorted(run.rows()) == [0, 1]  # ... but not written: no journal would record them
