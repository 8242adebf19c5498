"""A run started from the TUI outlives it: the app is a session leader on a terminal that goes away (SIGHUP), or is
killed outright (SIGKILL, which hangs up its terminal's foreground group too); its run keeps going and completes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios

import pytest

from ledger.procinfo import pid_alive
from tests.helpers.notes import SOURCE, make_db, results
from tests.helpers.runhelp import ledger_runs
from tests.helpers.support import ROOT, experiment_toml
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama

# Real time is what these check (a 10 s lock, a stop signal's grace, a detached process, a terminal): seconds each, so
# they are the slow tier's, run by .ci/run with the rest
pytestmark = pytest.mark.slow

N = 40
PARENT = """
import json, sys, time
from pathlib import Path
from app.runs.detach import start_detached
d = start_detached(sys.argv[1], Path(sys.argv[2]))
print(json.dumps({"pid": d.pid, "run_id": d.run_id, "log": str(d.log)}), flush=True)
time.sleep(600)
"""


def _take_terminal() -> None:  # in the parent-to-be, after setsid: the pty becomes its controlling terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def start_app_on_a_terminal(exp, ledger):
    """Like the TUI over SSH: a session leader whose controlling terminal is a pty we hold the other end of."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(exp), str(ledger)], cwd=ROOT, stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True, preexec_fn=_take_terminal)
    os.close(slave)
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(master, 4096)
        assert chunk, "the parent ended before starting the run"
        buf += chunk
    return proc, master, json.loads(buf.split(b"\n")[0].strip())


@pytest.mark.parametrize("death", ["hang-up", "SIGKILL"])
def test_a_detached_run_completes_after_its_parent_is_gone(tmp_path, private_ledger, death):
    make_db(tmp_path / "notes.db", n=N)
    with StandinOllama(latency=0.1, slots=1) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], run="concurrency = 1",
                                       results='table = "pna_results"\nbatch_size = 5'))
        parent, master, started = start_app_on_a_terminal(exp, private_ledger)
        run_pid = started["pid"]
        if death == "hang-up":
            os.close(master)  # the SSH connection drops: the kernel sends SIGHUP to the terminal's session
            assert parent.wait(timeout=30) == -signal.SIGHUP
        else:
            parent.send_signal(signal.SIGKILL)
            assert parent.wait(timeout=30) == -signal.SIGKILL
            os.close(master)
        assert pid_alive(run_pid)  # its parent is gone, the run is not
        assert server.stats()["served"] < N
        wait_for(lambda: not pid_alive(run_pid), timeout=90, every=0.2)
    (run,) = ledger_runs(private_ledger)
    assert run["run_id"] == started["run_id"] and run["status"] == "completed" and run["counts"]["done"] == N
    assert len(results(tmp_path / "notes.db")) == N
    log = private_ledger / "logs" / f"{started['run_id']}.log"
    assert started["log"] == str(log) and oct(log.stat().st_mode & 0o777) == "0o600"
    text = log.read_text()
    assert f"run {started['run_id']} completed" in text and "CHEST X-RAY" not in text


def test_a_broken_experiment_is_refused_before_anything_starts(tmp_path, private_ledger):
    from app.errors import UserError
    from app.runs.detach import start_detached

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[model]\nbackend = "nope"\n')
    with pytest.raises(UserError, match="bad.toml"):
        start_detached(bad, private_ledger)
    assert not (private_ledger / "logs").exists()
