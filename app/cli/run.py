"""`notes-tui --run FILE`: one run with the console printer and the run journal as subscribers."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import traceback
from pathlib import Path

from app.backends import make_backend
from app.cluster.auto import resolve_hosts
from app.cluster.shards import array_shard, refuse_sqlite_shard, shard_text
from app.engine.bus import EventBus
from app.engine.console import ConsolePrinter
from app.engine.feed import LiveFeed
from app.engine.recorder import JournalRecorder
from app.engine.runner import Runner, RunOptions, RunResult
from app.errors import ExitCode, UserError
from app.experiment import Experiment, load_experiment
from app.experiment.study import study_cells
from app.sources import open_source, todo_count
from ledger import new_run_id, resolve_ledger_dir
from ledger.journal import JOURNAL_DIR, SUFFIX, ensure_private_dir
from ledger.reasons import commonest, reason_text
from ledger.stop import SHARED_ENV, StopChannel

STOP_POLL_S = 2.0  # how often a run looks for a stop request in the ledger dir (one open + fstat)
STOP_REQUESTED = "stop requested"


def run_headless(file: str, ledger: str | None = None, limit: int | None = None,
                 rerun_invalid: bool = False, shard: tuple[int, int] | None = None, run_id: str | None = None) -> int:
    exp = load_experiment(file)
    for warning in exp.warnings:
        print(f"notes-tui: {warning}", file=sys.stderr)
    shard = shard or array_shard()
    if shard is not None:
        refuse_sqlite_shard(exp)
    ledger_dir = resolve_ledger_dir(ledger)
    _check_writable(ledger_dir)
    if run_id is not None and (ledger_dir / JOURNAL_DIR / f"{run_id}{SUFFIX}").exists():
        raise UserError(f"run {run_id} is already in the ledger at {ledger_dir} — leave --run-id out")
    if exp.spec.study is None:
        return _run_one(exp, ledger_dir, limit, rerun_invalid, shard, run_id)
    if run_id is not None:
        raise UserError(f"{exp.path}: a study runs one run per cell — leave --run-id out")
    return _run_study(exp, ledger_dir, limit, rerun_invalid, shard)


def _run_study(exp: Experiment, ledger_dir: Path, limit: int | None, rerun_invalid: bool,
               shard: tuple[int, int] | None) -> int:
    """Every cell in turn, grouped by model; a cell with nothing to do is skipped, so a rerun resumes the study.
    A cell that is interrupted or fails ends the study there: the next run starts with it."""
    cells = study_cells(exp)
    ran = skipped = 0
    for cell_exp in cells:
        cell = cell_exp.cell
        assert cell is not None
        head = f"study {exp.name}: cell {cell.index}/{cell.count} {cell.label} (seed {cell.seed})"
        todo = todo_count(cell_exp, rerun_invalid, shard)
        if todo == 0:
            skipped += 1
            print(f"{head}: complete, skipped", flush=True)
            continue
        print(f"{head}: {todo} notes to do", flush=True)
        code = _run_one(cell_exp, ledger_dir, limit, rerun_invalid, shard, None)
        ran += 1
        if code != ExitCode.OK:
            print(f"notes-tui: study {exp.name} stopped at cell {cell.label}; run it again to go on from there "
                  f"(completed cells are skipped)", file=sys.stderr, flush=True)
            return code
    print(f"study {exp.name}: {len(cells)} cells, {ran} run now, {skipped} complete before", flush=True)
    print(f"next:    notes-tui ledger study {exp.name}", flush=True)
    return ExitCode.OK


def _run_one(exp: Experiment, ledger_dir: Path, limit: int | None, rerun_invalid: bool,
             shard: tuple[int, int] | None, run_id: str | None) -> int:
    run_id = run_id or new_run_id()  # known before the run starts: its stop file is named after it
    exp = resolve_hosts(exp)
    printer = ConsolePrinter()
    bus = EventBus()
    recorder = JournalRecorder(ledger_dir, reserve_bytes=journal_reserve(exp))
    bus.subscribe(recorder)
    bus.subscribe(LiveFeed(ledger_dir))
    bus.subscribe(printer)
    source = open_source(exp)
    source.shard = shard
    stop: StopChannel | None = None
    try:
        stop = StopChannel.open(ledger_dir, run_id)
        backend = make_backend(exp)
        runner = Runner(exp, source, backend, bus, RunOptions(limit=limit, rerun_invalid=rerun_invalid,
                                                              ledger_dir=ledger_dir, run_id=run_id))
        recorder.on_failure = lambda exc: runner.abort("the run journal cannot be written", exc)
        result = asyncio.run(_run_with_signals(runner, stop))
    finally:
        if stop is not None:
            stop.close()
        source.close()
    if result.exception is not None and not _operational(result.exception):
        print("notes-tui: the run failed on an unexpected error (a bug: please report it with this trace):",
              file=sys.stderr)
        traceback.print_exception(result.exception, file=sys.stderr)
    _print_where(printer, exp, ledger_dir, result, shard)
    if result.status == "completed":
        return _verdict(result)
    if result.status == "interrupted" and result.reason == "SIGINT":
        return ExitCode.SIGINT
    if result.status == "interrupted" and result.reason in ("SIGTERM", STOP_REQUESTED):
        return ExitCode.SIGTERM
    return ExitCode.FAILED


async def _run_with_signals(runner: Runner, stop: StopChannel) -> RunResult:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        again = f"{sig.name} again"
        loop.add_signal_handler(sig, _stop, runner, sig.name, sig.name, again, again)
    watcher = asyncio.create_task(_watch_stop_requests(runner, stop))
    try:
        return await runner.run()
    finally:
        watcher.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _watch_stop_requests(runner: Runner, stop: StopChannel) -> None:
    """A stop request in the ledger dir (`notes-tui` on another host) stops the run as SIGTERM does."""
    told = 0
    while True:
        await asyncio.sleep(STOP_POLL_S)
        try:
            requests = stop.poll()
        except OSError:
            continue  # a ledger dir that hiccups (NFS) is asked again next time
        if stop.ignored > told:
            told = stop.ignored
            print(f"notes-tui: ignored a stop request in {stop.path}: the file is not yours (someone replaced it); "
                  f"set {SHARED_ENV}=1 where the ledger dir is shared on purpose", file=sys.stderr, flush=True)
        for request in requests:
            who = _who(request)
            _stop(runner, STOP_REQUESTED, f"{STOP_REQUESTED}{who} (its stop file in the ledger dir)",
                  f"{STOP_REQUESTED} again{who}", "ask again")


def _who(request: dict) -> str:
    """' by alice (from login1)': the stop file's owner, and the host its line claims."""
    who = f" by {request['user']}" if request.get("user") else ""
    return who + (f" (from {request['claimed_host']})" if request.get("claimed_host") else "")


def _stop(runner: Runner, reason: str, said: str, said_again: str, how_again: str) -> None:
    """The first request stops sending and lets the notes in flight finish; the second stops without waiting."""
    if runner.stop_reason is None:
        print(f"notes-tui: {said}: no new notes are sent; waiting up to {runner.exp.spec.run.grace_s:g} s "
              f"for those in flight, then saving ({how_again}: stop now)", file=sys.stderr, flush=True)
        runner.request_stop(reason)
    else:
        print(f"notes-tui: {said_again}: saving now; the notes in flight stay to do for the next run",
              file=sys.stderr, flush=True)
        runner.hurry()


def _verdict(result: RunResult) -> int:
    """A completed run whose answers did not validate is not a success a script should trust: exit 1 with the
    cause when none validated, a warning when most did not. The ledger keeps it `completed` (every note was tried)."""
    c = result.counts
    tried = c.done - c.empty
    reasons = dict(result.reasons)
    if c.errors:
        reasons["transport"] = reasons.get("transport", 0) + c.errors
    cause = commonest(reasons)
    if tried > 0 and c.valid == 0:
        print(f"notes-tui: no answer validated ({tried} notes tried): {reason_text(cause)}", file=sys.stderr)
        return ExitCode.FAILED
    if tried > 0 and 2 * (tried - c.valid) > tried:
        print(f"notes-tui: warning: {tried - c.valid} of {tried} answers did not validate: {reason_text(cause)}",
              file=sys.stderr)
    return ExitCode.OK


def journal_reserve(exp: Experiment) -> int:
    """Room the journal keeps for a full disk: one batch record (a unit's record is well under 1 KB) and the close."""
    return (64 << 10) + exp.spec.results.batch_size * 1024


PROBE_BYTES = 64 << 10  # room for a header and a few batches; a full disk shows here rather than after the first note


def _check_writable(ledger_dir: Path) -> None:
    """Refuse to start a run that could not be recorded."""
    probe = ledger_dir / "journal" / f".write-test-{os.getpid()}"
    try:
        ensure_private_dir(ledger_dir / "journal")  # a new ledger dir is 0700 too, not only the journal dir in it
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, PROBE_BYTES)
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the ledger at {ledger_dir} ({exc.strerror or exc}) — free some space there, or "
                        "pass --ledger DIR or set NOTES_TUI_LEDGER to a writable directory") from None


def _operational(exc: BaseException) -> bool:
    """Failures of the world (a database gone, a disk full), which the last-error line already explains."""
    import pymysql

    return isinstance(exc, (pymysql.err.MySQLError, sqlite3.Error, OSError))


def _print_where(printer: ConsolePrinter, exp: Experiment, ledger_dir: Path, result: RunResult,
                 shard: tuple[int, int] | None = None) -> None:
    """The run's journal is its record; ledger.db is an index that whoever reads the ledger brings up to date. A
    compute job writes only its own files: 100 array tasks on one NFS ledger dir are not 100 writers of the index."""
    if result.run_id is None:
        return
    printer.say(f"results: table {exp.spec.results.table} in {exp.source_label}")
    printer.say(f"ledger:  {ledger_dir / 'journal' / (result.run_id + '.jsonl')}")
    if result.status != "completed":
        again = f" --shard {shard_text(shard)}" if shard else ""
        printer.say(f"resume:  notes-tui --run {exp.path}{again}   (answered notes are skipped)")
    printer.say("next:    notes-tui ledger list   ·   notes-tui check FILE   ·   notes-tui (the TUI)")

