"""Stop a run from anywhere, gracefully (it ends `interrupted`; a rerun finishes it): SIGTERM for a run on this host,
a stop request in the ledger dir for a run on another (it looks every ~2 s; see ledger/stop.py). Asking twice stops
without waiting for the notes in flight, as a second SIGTERM does."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.runs.running import journal_header
from ledger.procinfo import same_process_alive, this_host
from ledger.stop import ask_to_stop

SIGNALLED = "signal"
REQUESTED = "request"
NOT_RUNNING = "not running"
NOT_LISTENING = "not listening"


@dataclass(frozen=True)
class StopSent:
    how: str  # signal | request | not running | not listening
    message: str  # one line for the user

    @property
    def sent(self) -> bool:
        return self.how in (SIGNALLED, REQUESTED)


def request_stop(ledger_dir: Path, run: str | dict[str, Any] | Any) -> StopSent:
    """`run`: a run id, a row of Ledger.list_runs, or a RunningRun. Where it runs comes from its journal header
    (hostname, pid and the pid's start time, so a reused pid is never signalled)."""
    run_id = run if isinstance(run, str) else run["run_id"] if isinstance(run, dict) else run.run_id
    header = journal_header(ledger_dir, run_id)
    if header is None:  # no journal yet: a run still reaching its servers listens already
        if ask_to_stop(ledger_dir, run_id):
            return StopSent(REQUESTED, f"asked run {run_id} to stop before it sent a note; it looks every few seconds")
        return StopSent(NOT_RUNNING, f"run {run_id} has no journal in {ledger_dir}: nothing to stop")
    host = header.get("hostname")
    if host == this_host():
        pid = header.get("pid")
        if not same_process_alive(pid, header.get("pid_start")):
            return StopSent(NOT_RUNNING, f"run {run_id} is not running on {host} any more (it ended or crashed)")
        try:
            os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]  # same_process_alive checked it is an int
        except ProcessLookupError:
            return StopSent(NOT_RUNNING, f"run {run_id} ended just now")
        except PermissionError:
            pass  # another user's process on this host: ask through the ledger instead
        else:
            return StopSent(SIGNALLED, f"sent SIGTERM to run {run_id} (pid {pid}): it saves what is answered and "
                                       "stops as interrupted; stop again to stop without waiting")
    if ask_to_stop(ledger_dir, run_id):
        return StopSent(REQUESTED, f"asked run {run_id} on {host} to stop (through {ledger_dir}); it looks every "
                                   "few seconds, saves what is answered and stops as interrupted")
    return StopSent(NOT_LISTENING, f"run {run_id} on {host} is not listening for stop requests (it ended, or an "
                                   f"older notes-tui started it) — stop it on {host}, or scancel its Slurm job")
