"""Start a headless run that outlives whoever started it (the TUI over SSH): `notes-tui --run` in its own session,
stdin from /dev/null, stdout and stderr in `<ledger>/logs/<run id>.log`. A hang-up of the terminal signals only the
terminal's session, and the run is in none, so a dropped connection (SIGHUP) or a killed app leaves it running.

The run id is chosen here and given to the run (`--run-id`), so its feed, stop file and journal can be found before
the run has written anything. The run uses this Python and this checkout, like a submitted job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.runs.running import log_path
from ledger import new_run_id
from ledger.journal import ensure_private_dir

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose `app` the run imports


@dataclass(frozen=True)
class Detached:
    pid: int
    run_id: str
    log: Path
    process: subprocess.Popen = field(repr=False, compare=False)

    def exit_code(self) -> int | None:
        """None while it runs; its exit status once it ended (2: a mistake, named on the last line of its log).
        The reaper thread waits for it and sets returncode (Popen.poll would answer None while that thread waits)."""
        return self.process.returncode


def run_command(file: str | Path, ledger_dir: Path, run_id: str, limit: int | None = None,
                rerun_invalid: bool = False, shard: tuple[int, int] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "app", "--run", str(Path(file).resolve()), "--run-id", run_id,
           "--ledger", str(Path(ledger_dir).resolve())]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if rerun_invalid:
        cmd.append("--rerun-invalid")
    if shard is not None:
        cmd += ["--shard", f"{shard[0]}/{shard[1]}"]
    return cmd


def start_detached(file: str | Path, ledger_dir: Path, *, limit: int | None = None, rerun_invalid: bool = False,
                   shard: tuple[int, int] | None = None, env: dict[str, str] | None = None) -> Detached:
    """Start the run and return at once with its pid, run id and log file. A broken experiment file is refused
    here (UserError, one line) rather than in the log a moment later."""
    from app.experiment import load_experiment

    load_experiment(file)
    ledger_dir = Path(ledger_dir)
    run_id = new_run_id()
    log = log_path(ledger_dir, run_id)
    try:
        ensure_private_dir(log.parent)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # a file named logs, a folder that is not ours, a full disk: said, not swallowed
        from app.errors import UserError

        raise UserError(f"cannot write the run's log in {log.parent} ({exc.strerror or exc}) — fix that folder, or "
                        "point the app at another ledger (--ledger DIR)") from None
    try:
        os.fchmod(fd, 0o600)
        run_env = dict(os.environ if env is None else env)
        run_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [run_env.get("PYTHONPATH")])])
        process = subprocess.Popen(run_command(file, ledger_dir, run_id, limit, rerun_invalid, shard),
                                   stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True, env=run_env)
    finally:
        os.close(fd)
    # someone must collect its exit status, or it lingers as a zombie while the app runs; after the app is gone,
    # init does
    threading.Thread(target=process.wait, name=f"reap-{run_id}", daemon=True).start()
    return Detached(process.pid, run_id, log, process)
