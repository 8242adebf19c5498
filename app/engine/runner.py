"""The one run loop: units stream in from the source, go out to the backend's hosts, come back validated, and are
written in batches. Front ends only subscribe to its events; the TUI and the headless printer see the same run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.backends.base import Backend, Busy, ModelInfo, PromptTooLong, Transient
from app.engine.answer import AnswerSpec
from app.engine.bus import EventBus
from app.engine.events import (
    BatchCommitted,
    Counts,
    HostState,
    Notice,
    Progress,
    RunFinished,
    RunStarted,
    UnitDone,
    Waiting,
)
from app.engine.hosts import AllHostsDown, HostPool, HostSlot, Lease
from app.engine.modelload import describe, load_model
from app.engine.prompt import Template, prompt_hash
from app.engine.runinfo import run_header
from app.errors import UserError
from app.experiment import Experiment
from app.sources.base import ResultRow, RunStamp, Source, Unit, unit_uid
from ledger import new_run_id

MAX_TRANSPORT_FAILURES = 4  # per unit: 5xx, timeouts, dropped connections (refused connections only pause the host)
BUSY_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
PROGRESS_EVERY_S = 1.0
READ_AHEAD_CHUNKS = 2


@dataclass(frozen=True)
class RunOptions:
    limit: int | None = None
    rerun_invalid: bool = False
    ledger_dir: Path | None = None  # where this run is recorded: also where a killed predecessor's journal is
    run_id: str | None = None  # given when the caller must know it before the run starts (a detached run, stop files)


@dataclass
class RunResult:
    run_id: str | None
    status: str
    counts: Counts
    elapsed_s: float
    reason: str | None = None
    last_error: str | None = None
    exception: BaseException | None = None  # what failed the run, for a bug report
    reasons: dict[str, int] = field(default_factory=dict)  # invalid answers by reason (ledger.reasons)


class _Stop(Exception):
    pass


class Runner:
    def __init__(self, exp: Experiment, source: Source, backend: Backend, bus: EventBus,
                 options: RunOptions = RunOptions()):
        self.exp = exp
        self.source = source
        self.backend = backend
        self.bus = bus
        self.opts = options
        self.answer = AnswerSpec(exp.spec.answer)
        self.template = Template(exp.spec.prompt.user)
        self.system = exp.spec.prompt.system
        self.counts = Counts()
        self.stop_reason: str | None = None
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._pending: list[tuple[UnitDone, ResultRow | None, tuple]] = []
        self._last_error: str | None = None
        self.reasons: Counter[str] = Counter()
        self._fatal: BaseException | None = None
        self._unrecorded = False  # set by abort(): batches still to commit are dropped, their notes stay to do
        self._tasks: set[asyncio.Task] = set()
        # keys this run holds: read ahead, in flight or awaiting commit (dropped once committed), and failed ones
        # (kept), so a read that starts over after a lost connection does not hand them out twice
        self._taken: set[tuple] = set()
        # what the run waits on now, by Waiting.on, and what each said (on the monotonic clock), so a retry that
        # changes nothing says nothing
        self._waiting: dict[str, Waiting] = {}
        self.model_load: dict[str, Any] | None = None  # the model loaded before the first note: where, how long
        self._waiting_key: dict[str, tuple] = {}

    def request_stop(self, reason: str) -> None:
        """Stop dispatching; notes in flight may finish within the grace period. Safe to call more than once.
        Call it on the run's event loop; from another thread (a TUI worker's owner) use loop.call_soon_threadsafe."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()

    def hurry(self) -> None:
        """Stop now: notes in flight are not waited for (they stay to do for the next run)."""
        self.request_stop("hurried")
        self._hurry.set()

    def abort(self, reason: str, error: BaseException) -> None:
        """Fail the run from outside the loop's own work (its journal cannot be written): stop, write no more rows
        (rows no journal records would make the ledger's counts disagree with the table), then close."""
        self._fatal = self._fatal or error
        self._last_error = self._last_error or f"{reason}: {error}"
        self._unrecorded = True
        self.request_stop(reason)

    async def run(self) -> RunResult:
        t0 = time.monotonic()
        # the server check and the count of notes to do side by side: each is a round trip to another host
        ready = await asyncio.gather(self.backend.prepare(),
                                     asyncio.to_thread(self.source.survey, self.opts.rerun_invalid),
                                     return_exceptions=True)
        for outcome in ready:  # the server's error first, as when they ran one after the other
            if isinstance(outcome, BaseException):
                raise outcome
        info: ModelInfo = ready[0]  # type: ignore[assignment]
        survey = ready[1]
        run_id = self.opts.run_id or new_run_id()
        # a second run of this experiment stops here, before the results table; a run refused for a server problem
        # (above) has written nothing to the database, not even its lock record
        killed = await asyncio.to_thread(self.source.lock_run, run_id)
        await asyncio.to_thread(self.source.ensure_results_table)
        notices = [] if killed is None or not killed.run_id else await self._forget_unrecorded(killed.run_id)
        if notices:  # a killed run's rows may have been given back: count again
            survey = await asyncio.to_thread(self.source.survey, self.opts.rerun_invalid)
        total = survey.todo if self.opts.limit is None else min(survey.todo, self.opts.limit)
        self.counts.total = total
        schema = self.answer.schema
        options = self.exp.spec.model.options.as_dict()
        phash = prompt_hash(self.system, self.exp.spec.prompt.user, schema, options, self.exp.spec.model.think)
        cap = min(self.exp.spec.run.concurrency or self.backend.max_in_flight, self.backend.max_in_flight)
        initial = {h: min(cap, self.backend.initial_in_flight(h)) for h in info.hosts}
        self.stamp = RunStamp(experiment=self.exp.name, run_id=run_id, model=info.model, prompt_hash=phash)
        header = run_header(self.exp, info, self.source.describe(), schema, phash, total, cap, self.source.shard)
        header["in_flight"] = {"adaptive": True, "initial": initial, "cap": cap}
        self.info = info
        self.bus.emit(RunStarted(run_id=run_id, experiment=self.exp.name, total=total, header=header))
        for notice in notices:
            self.bus.emit(Notice(notice))
        if survey.null_ids:
            self.bus.emit(Notice(f"{survey.null_ids} notes have a NULL id column and are skipped"))
        if survey.duplicate_keys:
            self.bus.emit(Notice(f"{len(survey.duplicate_keys)} ids occur more than once in the source; "
                                 "only the first note of each is answered"))
        self._dups = dict(survey.duplicate_groups)  # a note's key -> its id's group, as the database compares ids
        self._dups_seen: set[tuple] = set()
        self.pool = HostPool(info.hosts, initial, cap, self.exp.spec.run.give_up_s, on_state=self._host_state)
        self._t0 = t0
        self._commit_queue: asyncio.Queue = asyncio.Queue()
        self._hear_write_trouble(asyncio.get_running_loop())
        committer = asyncio.create_task(self._committer())
        ticker = asyncio.create_task(self._ticker())
        status = "completed"
        try:
            await self._load_model(info.hosts)
            await self._dispatch_all()
        except AllHostsDown as exc:
            self.request_stop("no server answered")
            self._last_error = f"no Ollama server answered for {self.exp.spec.run.give_up_s:g} s: {exc}"
        except UserError as exc:
            self.request_stop("error")
            self._fatal = exc
        except asyncio.CancelledError:
            self.request_stop("cancelled")
        except BaseException as exc:  # a bug or a database failure: the run closes as failed
            self._fatal = exc
        await self._drain_in_flight()
        self._flush_batch()
        await self._commit_queue.put(None)
        try:
            await committer
        except BaseException as exc:  # noqa: BLE001
            self._fatal = self._fatal or exc
        self.source.write_waiting = None
        ticker.cancel()
        if self._fatal is not None:
            status = "failed"
            self._last_error = self._last_error or describe(self._fatal)
        elif self.stop_reason is not None:
            status = "interrupted"
        elapsed = time.monotonic() - t0
        try:
            facts = await self.backend.facts()
        except Exception:  # noqa: BLE001 - what the server said of itself must never cost the run its close
            facts = {}
        self.bus.emit(RunFinished(run_id=run_id, status=status, counts=self.counts.snapshot(), elapsed_s=elapsed,
                                  last_error=self._last_error, reason=self.stop_reason,
                                  extra={"reasons": dict(self.reasons), "in_flight": self.pool.limits_summary(),
                                         **({"server": facts} if facts else {}),
                                         **({"model_load": self.model_load} if self.model_load else {})}))
        await self.backend.close()
        if isinstance(self._fatal, UserError):
            raise self._fatal
        return RunResult(run_id, status, self.counts.snapshot(), elapsed, self.stop_reason, self._last_error,
                         self._fatal, dict(self.reasons))

    async def _load_model(self, hosts: tuple[str, ...]) -> None:
        """Every server lacks the model in memory: it is loaded first, and the run says so meanwhile, not a run
        stalled at 0 notes/s for the seconds or minutes a load takes (Ollama loads on the first request). With a
        warm server beside them the notes start there and a cold one loads under its first requests, as before.
        What it took goes in the run's record (GPU time before the first note; why a study's first cell of a model
        is slower than the next)."""
        cold = self.backend.cold_hosts()
        if not cold:
            return
        if set(hosts) - set(cold):
            self.bus.emit(Notice(f"the model is not in memory on {', '.join(cold)}: the first answers there wait for "
                                 "it to load"))
            return
        began = time.monotonic()
        self._set_waiting("model", (cold, "not in memory", began, None))
        loads = asyncio.ensure_future(load_model(self.backend, cold))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({loads, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the run's task cancelled too: no load left behind
            stop.cancel()
            stopped = not loads.done()
            if stopped:
                loads.cancel()
        wait = self._waiting.pop("model")
        self._waiting_key.pop("model", None)
        if stopped:  # nothing was sent, nothing to wait for: the run ends waiting, as one that gives up does
            self.model_load = {"hosts": list(cold), "seconds": round(time.monotonic() - began, 1), "outcome": "stopped"}
            return
        self.model_load = loads.result()
        if self.model_load["outcome"] != "loaded":  # the over line says so (the notes will say more, with retries)
            wait = replace(wait, error=self.model_load["outcome"])
        self.bus.emit(replace(wait, over=True))
        for host, error in self.model_load.get("failed", {}).items():
            self.bus.emit(Notice(f"loading the model on {host} failed ({error}); its notes are sent anyway"))

    async def _forget_unrecorded(self, killed: str) -> list[str]:
        """Rows of a killed run that its journal does not record (killed between the database's commit and the
        journal's write: at most its last batch) are deleted, so this run answers and records them again. Safe: the
        run lock we hold says that run is gone. Returns what to tell the user."""
        from ledger import Ledger

        cannot = [f"run {killed} of this experiment was killed and its journal cannot be read here (another ledger, "
                  "or the index is busy): up to one batch of its answers may have no ledger record"]
        if self.opts.ledger_dir is None:
            return cannot
        led = Ledger(self.opts.ledger_dir, auto_sync=False)
        try:
            # the index must be fresh: a unit merely not imported yet must not count as unrecorded
            if not await asyncio.to_thread(led.sync, 30.0) or await asyncio.to_thread(led.get_run, killed) is None:
                return cannot
            recorded = {u["unit_id"] for u in await asyncio.to_thread(led.units, killed) if u["outcome"] != "error"}
        except (OSError, sqlite3.Error, RuntimeError):  # RuntimeError: LedgerBusy
            return cannot
        keys = await asyncio.to_thread(self.source.rows_of_run, killed)
        unrecorded = [k for k in keys if unit_uid(k) not in recorded]
        if not unrecorded:
            return []
        await asyncio.to_thread(self.source.delete_rows, killed, unrecorded)
        return [f"{len(unrecorded)} answers of run {killed}, killed between writing them and recording them, "
                "had no ledger record: they are answered again"]

    # -- feeding --------------------------------------------------------------------------------------------------
    async def _dispatch_all(self) -> None:
        chunks: asyncio.Queue = asyncio.Queue(maxsize=READ_AHEAD_CHUNKS)
        reader = asyncio.create_task(self._read(chunks))
        try:
            while not self._stopping.is_set():
                chunk = await chunks.get()
                if chunk is None:
                    break
                if isinstance(chunk, BaseException):
                    raise chunk
                for unit in chunk:
                    if self._stopping.is_set():
                        break
                    group = self._dups.get(unit.key)
                    if group is not None:
                        if group in self._dups_seen:
                            # the count of notes to do counted this id once: its copy is one more unit, never "5/3"
                            self.counts.total += 1
                            self._finish(unit, "error", None, 0, 0.0, None, None, False, "duplicate_id", None)
                            continue
                        self._dups_seen.add(group)
                    if unit.text is None:
                        self._finish(unit, "empty", None, 0, 0.0, None, None, False, None, None)
                        continue
                    slot = await self._acquire()
                    if slot is None:
                        break
                    task = asyncio.create_task(self._answer(unit, slot))
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
        finally:
            reader.cancel()

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, AllHostsDown):
                self._last_error = f"no Ollama server answered for {self.exp.spec.run.give_up_s:g} s: {exc}"
                self.request_stop("no server answered")
            else:
                self._fatal = self._fatal or exc
                self.request_stop("error")

    async def _acquire(self) -> Lease | None:
        """A host with room, or None once a stop was requested while waiting."""
        if self._stopping.is_set():
            return None
        slot = self.pool.try_acquire()
        if slot is not None:  # the common case costs no extra tasks
            return slot
        acquire = asyncio.ensure_future(self.pool.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        if acquire in done:
            stop.cancel()
            slot = acquire.result()
            if self._stopping.is_set():
                self.pool.cancelled(slot)
                return None
            return slot
        acquire.cancel()
        return None

    async def _taken_keys(self) -> frozenset[tuple]:
        self.bus.emit(Notice("the notes database dropped the read; reading the notes still to do again"))
        return frozenset(self._taken)

    async def _read(self, out: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()

        def resume_skip() -> frozenset[tuple]:  # called from the reader thread
            return asyncio.run_coroutine_threadsafe(self._taken_keys(), loop).result()

        it = self.source.iter_chunks(self.opts.rerun_invalid, self.opts.limit, run_id=self.stamp.run_id,
                                     resume_skip=resume_skip)
        # one thread owns the generator: a close() queued behind a fetch still running cannot meet it mid-step
        # ("generator already executing") when a stop cancels this task
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notes-reader")
        try:
            while True:
                chunk = await asyncio.wrap_future(thread.submit(next, it, None))
                if chunk:
                    self._taken.update(u.key for u in chunk)  # handed over: a restarted read must not repeat them
                await out.put(chunk)
                if chunk is None:
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the dispatcher, which owns failure
            await out.put(exc)
        finally:
            closing = thread.submit(it.close)
            thread.shutdown(wait=False)
            await asyncio.shield(asyncio.wrap_future(closing))

    # -- answering ------------------------------------------------------------------------------------------------
    async def _answer(self, unit: Unit, slot: Lease | None) -> None:
        prompt = self.template.render(unit.fields)
        started = time.monotonic()
        attempts = 0
        failures = 0
        busy = 0
        tokens_in = tokens_out = 0
        truncated = False
        error = None
        host = None
        while True:
            if slot is None:
                slot = await self._acquire()
                if slot is None:
                    return  # stopping: the unit stays to do for the next run
            host = slot.url
            try:
                reply = await self.backend.chat(slot.url, self.system, prompt, self.answer.schema)
            except Busy:
                self.pool.busy(slot)
                slot = None
                await asyncio.sleep(BUSY_BACKOFF_S[min(busy, len(BUSY_BACKOFF_S) - 1)])
                busy += 1
                continue
            except PromptTooLong:
                # the server answered, it just cannot take this note: another attempt would be refused the same way
                self.pool.ok(slot)
                self._finish(unit, "invalid", None, attempts + 1, _ms(started), tokens_in or None, tokens_out or None,
                             True, "too_long", host)
                return
            except Transient as exc:
                self.pool.failed(slot, str(exc), exc.down)
                slot = None
                self._last_error = f"{host}: {exc}"
                if not exc.down:
                    failures += 1
                    if failures >= MAX_TRANSPORT_FAILURES:
                        self._finish(unit, "error", None, attempts, _ms(started), tokens_in or None,
                                     tokens_out or None, truncated, "transport", host)
                        return
                    await asyncio.sleep(min(8.0, 0.5 * 2 ** failures))
                continue
            except BaseException:
                self.pool.cancelled(slot)
                raise
            self.pool.ok(slot)
            slot = None
            attempts += 1
            tokens_in += reply.tokens_in or 0
            tokens_out += reply.tokens_out or 0
            truncated = truncated or reply.truncated
            verdict = self.answer.check(reply.content, cut_off=reply.done_reason == "length", thought=reply.thought)
            if verdict.values is not None:
                self._finish(unit, "valid", verdict.values, attempts, _ms(started), tokens_in, tokens_out,
                             truncated, None, host)
                return
            error = verdict.error
            if attempts >= self.exp.spec.answer.max_attempts:
                self._finish(unit, "invalid", None, attempts, _ms(started), tokens_in, tokens_out, truncated,
                             error, host)
                return

    def _finish(self, unit: Unit, outcome: str, values: dict[str, Any] | None, attempts: int, latency_ms: float,
                tokens_in: int | None, tokens_out: int | None, truncated: bool, error: str | None,
                host: str | None) -> None:
        self.counts.tally(outcome, attempts, truncated, tokens_in, tokens_out)
        if outcome == "invalid" and error:
            self.reasons[error] += 1
        self.counts.replaced_bytes += unit.replaced_bytes
        event = UnitDone(id=unit.uid, outcome=outcome, answer=self.answer.public(values), attempts=attempts,
                         latency_ms=round(latency_ms, 1), tokens_in=tokens_in, tokens_out=tokens_out,
                         truncated=truncated, error=error, host=host)
        row = None
        if outcome == "valid":
            row = ResultRow(unit.key, values or {}, True, attempts, truncated)
        elif outcome == "invalid":
            row = ResultRow(unit.key, self.answer.fallback, False, attempts, truncated)
        elif outcome == "empty":
            row = ResultRow(unit.key, {}, False, 0, False)
        # an error leaves no row: the unit stays to do, and the next run answers it
        self._pending.append((event, row, unit.key))
        self.bus.emit(event)
        if len(self._pending) >= self.exp.spec.results.batch_size:
            self._flush_batch()

    # -- writing --------------------------------------------------------------------------------------------------
    def _flush_batch(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._commit_queue.put_nowait(batch)

    async def _committer(self) -> None:
        while True:
            batch = await self._commit_queue.get()
            if batch is None:
                return
            if self._unrecorded:
                continue
            rows = [row for _, row, _ in batch if row is not None]
            if rows:
                try:
                    await asyncio.to_thread(self.source.write_results, self.stamp, rows)
                except BaseException as exc:
                    self._waiting.pop("results", None)  # not over: the run fails on it
                    self._waiting_key.pop("results", None)
                    self._fatal = self._fatal or exc
                    self.request_stop("error")
                    raise
                self._set_waiting("results", None)
            self._taken.difference_update(key for event, _, key in batch if event.outcome != "error")
            self.bus.emit(BatchCommitted(units=tuple(e for e, _, _ in batch), counts=self.counts.snapshot()))

    async def _drain_in_flight(self) -> None:
        """Let the notes in flight finish; once a stop is requested (even now), for at most grace_s; not at all after
        hurry()."""
        grace = self.exp.spec.run.grace_s
        deadline: float | None = None
        while self._tasks and not self._hurry.is_set():
            if self._stopping.is_set() and deadline is None:
                deadline = time.monotonic() + grace
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            wake = asyncio.ensure_future(self._hurry.wait() if self._stopping.is_set() else self._stopping.wait())
            await asyncio.wait(self._tasks | {wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            n = len(pending)
            self.bus.emit(Notice(f"{n} note{'s' if n != 1 else ''} still in flight {'were' if n != 1 else 'was'} left "
                                 "for the next run"))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self.bus.emit(Progress(counts=self.counts.snapshot(), elapsed_s=time.monotonic() - self._t0,
                                   in_flight=self.pool.in_flight, limits=self.pool.limits(),
                                   waiting=tuple(self._waiting.values())))

    def _host_state(self, slot: HostSlot, state: str, detail: str) -> None:
        self.bus.emit(HostState(host=slot.url, state=state, limit=slot.limit, detail=detail))
        if state != "busy":
            self._servers_waiting()

    # -- waiting: for the servers, or to write the results ---------------------------------------------------------
    def _servers_waiting(self) -> None:
        """Every host refused since it last answered: the run waits for one of them, until give_up_s after the last
        answer (HostPool.acquire gives up then)."""
        down = self.pool.unreachable()
        if down is None:
            self._set_waiting("servers", None)
            return
        since, give_up = down
        slots = self.pool.slots
        errors = {s.down_error for s in slots}
        error = errors.pop() if len(errors) == 1 else "; ".join(f"{s.url}: {s.down_error}" for s in slots)
        hosts = tuple(s.url for s in slots)
        self._set_waiting("servers", (hosts, error, since, give_up))

    def _hear_write_trouble(self, loop: asyncio.AbstractEventLoop) -> None:
        """The source says, from its writer thread, when a results write fails and it tries again (MySQL gone, a
        SQLite file locked by another program): (error, since, gives up at), on the monotonic clock."""
        def heard(error: str, since: float, give_up_at: float | None) -> None:
            loop.call_soon_threadsafe(self._results_waiting, error, since, give_up_at)

        self.source.write_waiting = heard

    def _results_waiting(self, error: str, since: float, give_up_at: float | None) -> None:
        database = self.source.database_label()
        where = f"{self.source.results_table}" + (f" in {database}" if database else "")
        self._set_waiting("results", ((where,), error, since, give_up_at))

    def _set_waiting(self, on: str, what: tuple | None) -> None:
        """Emit a Waiting when the run starts waiting on `on` or what it waits on changed (`what`: where, error,
        since and give-up time, monotonic), and one `over` when it no longer does (`what` None)."""
        if what is None:
            self._waiting_key.pop(on, None)
            old = self._waiting.pop(on, None)
            if old is not None:
                self.bus.emit(replace(old, over=True))
            return
        if self._waiting_key.get(on) == what:
            return
        self._waiting_key[on] = what
        where, error, since, give_up_at = what
        wall = time.time() - time.monotonic()  # the feed and the screen say clock times
        wait = Waiting(on=on, where=where, error=error, since=since + wall,
                       give_up_at=None if give_up_at is None else give_up_at + wall)
        self._waiting[on] = wait
        self.bus.emit(wait)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0

