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
from app.config import Experiment, load_experiment
from app.engine.bus import EventBus
from app.engine.console import ConsolePrinter
from app.engine.recorder import JournalRecorder
from app.engine.runner import Runner, RunOptions, RunResult
from app.errors import ExitCode, UserError
from app.sources import open_source
from ledger import Ledger, resolve_ledger_dir
from ledger.journal import ensure_private_dir


def run_headless(file: str, ledger: str | None = None, limit: int | None = None,
                 rerun_invalid: bool = False, shard: tuple[int, int] | None = None) -> int:
    exp = load_experiment(file)
    for warning in exp.warnings:
        print(f"notes-tui: {warning}", file=sys.stderr)
    shard = shard or array_shard()
    if shard is not None:
        refuse_sqlite_shard(exp)
    ledger_dir = resolve_ledger_dir(ledger)
    _check_writable(ledger_dir)
    exp = resolve_hosts(exp)
    printer = ConsolePrinter()
    bus = EventBus()
    recorder = JournalRecorder(ledger_dir, reserve_bytes=journal_reserve(exp))
    bus.subscribe(recorder)
    bus.subscribe(printer)
    source = open_source(exp)
    source.shard = shard
    try:
        backend = make_backend(exp)
        runner = Runner(exp, source, backend, bus, RunOptions(limit=limit, rerun_invalid=rerun_invalid,
                                                                  ledger_dir=ledger_dir))
        recorder.on_failure = lambda exc: runner.abort("the run journal cannot be written", exc)
        result = asyncio.run(_run_with_signals(runner))
    finally:
        source.close()
    if result.exception is not None and not _operational(result.exception):
        print("notes-tui: the run failed on an unexpected error (a bug: please report it with this trace):",
              file=sys.stderr)
        traceback.print_exception(result.exception, file=sys.stderr)
    imported = _import_into_index(ledger_dir)
    _print_where(printer, exp, ledger_dir, result, imported, shard)
    if result.status == "completed":
        return ExitCode.OK
    if result.status == "interrupted" and result.reason == "SIGINT":
        return ExitCode.SIGINT
    if result.status == "interrupted" and result.reason == "SIGTERM":
        return ExitCode.SIGTERM
    return ExitCode.FAILED


async def _run_with_signals(runner: Runner) -> RunResult:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, runner, sig)
    try:
        return await runner.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _on_signal(runner: Runner, sig: signal.Signals) -> None:
    if runner.stop_reason is None:
        print(f"notes-tui: {sig.name}: no new notes are sent; waiting up to {runner.exp.spec.run.grace_s:g} s "
              f"for those in flight, then saving ({sig.name} again: stop now)", file=sys.stderr, flush=True)
        runner.request_stop(sig.name)
    else:
        print(f"notes-tui: {sig.name} again: saving now; the notes in flight stay to do for the next run",
              file=sys.stderr, flush=True)
        runner.hurry()


def journal_reserve(exp: Experiment) -> int:
    """Room the journal keeps for a full disk: one batch record (a unit's record is well under 1 KB) and the close."""
    return (64 << 10) + exp.spec.results.batch_size * 1024


def _import_into_index(ledger_dir: Path) -> bool:
    """Bring ledger.db up to date, if it can be had now. The run is recorded in its journal either way; the index is
    derived and the next reader imports what this could not (its disk full, its file held locked by someone)."""
    try:
        return Ledger(ledger_dir).sync(wait_s=2.0)
    except (OSError, sqlite3.Error):
        return False


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
                 imported: bool, shard: tuple[int, int] | None = None) -> None:
    if result.run_id is None:
        return
    printer.say(f"results: table {exp.spec.results.table} in {exp.source_label}")
    printer.say(f"ledger:  {ledger_dir / 'journal' / (result.run_id + '.jsonl')}"
                + ("" if imported else " (index busy: imported on the next ledger read)"))
    if result.status != "completed":
        again = f" --shard {shard_text(shard)}" if shard else ""
        printer.say(f"resume:  notes-tui --run {exp.path}{again}   (answered notes are skipped)")
    printer.say("next:    notes-tui ledger list   ·   notes-tui check FILE   ·   notes-tui (the TUI)")

