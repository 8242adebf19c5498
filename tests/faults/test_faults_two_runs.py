"""Two headless runs of one experiment at once (a user's slip, or an array job resubmitted): the second refuses to
start with one line naming the first (host, pid, run id); no note is answered twice; a SIGKILLed holder leaves no
lock behind. Against the real MariaDB (the lock lives in the results database) and a SQLite file (a file lock)."""

from __future__ import annotations

import re
import signal
import socket

import pytest

from tests.helpers.faultkit import check_outcome, notes_source, sop_notes
from tests.helpers.runhelp import ledger_runs, spawn_run
from tests.helpers.support import experiment_toml
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import spawn_standin

# Real time is what these check (a 10 s lock, a stop signal's grace, a detached process, a terminal): seconds each, so
# they are the slow tier's, run by .ci/run with the rest
pytestmark = pytest.mark.slow

N = 120


@pytest.fixture(params=["mysql", "sqlite"])
def setup(request, tmp_path):
    return notes_source(request.param, sop_notes(N), tmp_path, request)


@pytest.fixture
def server():
    s = spawn_standin(latency=0.1, slots=4)
    yield s
    s.stop()


def write_exp(tmp_path, server, source):
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=source, hosts=[server.url], run="concurrency = 4",
                                   results='table = "pna_results"\nbatch_size = 5'))
    return exp


def refusal_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_run_refuses_naming_the_first(tmp_path, setup, server, private_ledger):
    notes, table, source = setup
    exp = write_exp(tmp_path, server, source)
    first = spawn_run(exp)
    wait_for(lambda: server.stats()["chat"] >= 10, 30, "the first run to answer notes")
    second = spawn_run(exp)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2, (out, err)
    line = refusal_line(err)
    run_id = wait_for(lambda: next((p.stem for p in (private_ledger / "journal").glob("*.jsonl")), None), 5, "journal")
    assert f"run {run_id}" in line and f"pid {first.pid}" in line and socket.gethostname() in line, line
    assert "pna-test" in line and re.search(r"wait for it|stop it", line), line
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert server.stats()["chat"] == N  # no note answered twice
    check_outcome(table, notes, private_ledger, label="two runs: second refused")


def test_two_runs_started_together_one_works_one_refuses(tmp_path, setup, server, private_ledger):
    notes, table, source = setup
    exp = write_exp(tmp_path, server, source)
    procs = [spawn_run(exp), spawn_run(exp)]
    results = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=120)]]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refusal_line(next(err for code, _, err in results if code == 2))
    assert server.stats()["chat"] == N
    check_outcome(table, notes, private_ledger, label="two runs started together")


def test_a_killed_holder_leaves_no_lock(tmp_path, setup, server, private_ledger):
    notes, table, source = setup
    exp = write_exp(tmp_path, server, source)
    first = spawn_run(exp)
    wait_for(lambda: server.stats()["chat"] >= 20, 30, "the first run to answer notes")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    second = spawn_run(exp)  # at once: the lock died with its holder
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, (out, err)
    statuses = sorted(r["status"] for r in ledger_runs(private_ledger))
    assert statuses == ["completed", "crashed"]
    check_outcome(table, notes, private_ledger, label="two runs: holder SIGKILLed")
