"""Stop from anywhere: SIGTERM for a run on this host, a stop file in the ledger dir for a run on another. Both end
`interrupted`, and a rerun answers the rest."""

from __future__ import annotations

import subprocess
import sys

import pytest

import app.runs.stop as stopping
from app.runs.follow import FeedFollower
from app.runs.running import running_runs
from app.runs.stop import request_stop
from ledger import new_run_id
from ledger.stop import stop_path
from tests.helpers.notes import SOURCE, make_db, results
from tests.helpers.runhelp import ledger_runs, spawn_run
from tests.helpers.support import ROOT, experiment_toml
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama

# Real time is what these check (a 10 s lock, a stop signal's grace, a detached process, a terminal): seconds each, so
# they are the slow tier's, run by .ci/run with the rest
pytestmark = pytest.mark.slow

N = 120


def start_run(tmp_path, server, ledger):
    make_db(tmp_path / "notes.db", n=N)
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], run="concurrency = 2",
                                   results='table = "pna_results"\nbatch_size = 5'))
    run_id = new_run_id()
    proc = spawn_run(exp, "--run-id", run_id)
    follower = FeedFollower(ledger, run_id)
    wait_for(lambda: (counts := follower.poll().counts) is not None and counts.done >= 4)
    return exp, run_id, proc


def finish_and_rerun(exp, proc, ledger):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert [r["status"] for r in ledger_runs(ledger)] == ["interrupted"]
    kept = len(results(exp.parent / "notes.db"))
    assert 0 < kept < N
    again = spawn_run(exp)
    out2, err2 = again.communicate(timeout=60)
    assert again.returncode == 0, err2
    assert f"{N - kept} notes to do" in out2
    assert [r["note_id"] for r in results(exp.parent / "notes.db")] == list(range(N))
    return out, err


def test_a_run_on_this_host_is_stopped_by_a_signal(tmp_path, private_ledger):
    with StandinOllama(latency=0.1, slots=2) as server:
        exp, run_id, proc = start_run(tmp_path, server, private_ledger)
        (live,) = running_runs(private_ledger)
        assert (live.run_id, live.here, live.total, live.model) == (run_id, True, N, "llama3:latest")
        assert live.pid == proc.pid and live.feed is not None and live.log is None
        sent = request_stop(private_ledger, live)
        assert sent.how == "signal", sent.message
        out, err = finish_and_rerun(exp, proc, private_ledger)
    assert "SIGTERM: no new notes are sent" in err and "interrupted (SIGTERM)" in out
    assert not stop_path(private_ledger, run_id).exists()  # the run took its stop file away
    assert request_stop(private_ledger, run_id).how == "not running"
    assert running_runs(private_ledger) == []


@pytest.mark.parametrize("how", ["request_stop", "by hand"])
def test_a_run_on_another_host_is_stopped_by_a_stop_file(tmp_path, private_ledger, monkeypatch, how):
    with StandinOllama(latency=0.1, slots=2) as server:
        exp, run_id, proc = start_run(tmp_path, server, private_ledger)
        if how == "request_stop":
            monkeypatch.setattr(stopping, "this_host", lambda: "another-node")  # we are not where the run is
            sent = request_stop(private_ledger, {"run_id": run_id})
            assert sent.how == "request", sent.message
        else:
            with open(stop_path(private_ledger, run_id), "a") as f:
                f.write("stop\n")
        out, err = finish_and_rerun(exp, proc, private_ledger)
    assert "stop requested" in err and "interrupted (stop requested)" in out
    if how == "request_stop":
        assert "stop requested by " in err  # who asked, from the request
    monkeypatch.setattr(stopping, "this_host", lambda: "another-node")
    assert request_stop(private_ledger, run_id).how == "not listening"  # it ended: nothing is left to write to
    assert not stop_path(private_ledger, run_id).exists()


def test_a_second_stop_request_stops_without_waiting(tmp_path, private_ledger, monkeypatch):
    make_db(tmp_path / "notes.db", n=10)
    with StandinOllama(latency=30.0, slots=2) as server:  # slower than the 5 s grace
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], run="concurrency = 2"))
        run_id = new_run_id()
        proc = spawn_run(exp, "--run-id", run_id)
        wait_for(lambda: server.stats()["active"] == 2)
        monkeypatch.setattr(stopping, "this_host", lambda: "another-node")
        assert request_stop(private_ledger, run_id).how == "request"
        wait_for(lambda: stop_path(private_ledger, run_id).stat().st_size > 0)
        assert request_stop(private_ledger, run_id).how == "request"
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "stop requested again" in err and "2 notes still in flight were left for the next run" in out
    assert [r["status"] for r in ledger_runs(private_ledger)] == ["interrupted"]


def test_a_run_still_starting_is_asked_through_its_stop_file(tmp_path):
    from ledger.stop import StopChannel

    run_id = new_run_id()
    assert request_stop(tmp_path, run_id).how == "not running"  # no journal, no stop file: no such run
    channel = StopChannel.open(tmp_path, run_id)  # what a headless run does before it reaches its servers
    sent = request_stop(tmp_path, run_id)
    assert sent.how == "request" and sent.sent
    (request,) = channel.poll()
    import getpass

    assert request["user"] == getpass.getuser() and request["claimed_host"] and request["at"]  # the owner, the host
    assert channel.poll() == []  # each request is seen once
    channel.close()
    assert not stop_path(tmp_path, run_id).exists()


@pytest.mark.parametrize("value", ["abc", "../../../etc/passwd", "01j00000000000000000000000", "81J00000000000000000000000"])
def test_a_bad_run_id_is_one_line(tmp_path, value):
    res = subprocess.run([sys.executable, "-m", "app", "--run", str(tmp_path / "x.toml"), "--run-id", value],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "is not a run id" in res.stderr


def test_a_run_id_already_in_the_ledger_is_refused(tmp_path, private_ledger):
    make_db(tmp_path / "notes.db", n=3)
    with StandinOllama(latency=0.0, slots=2) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url]))
        run_id = new_run_id()
        first = spawn_run(exp, "--run-id", run_id)
        first.communicate(timeout=60)
        assert first.returncode == 0
        again = spawn_run(exp, "--run-id", run_id)
        _, err = again.communicate(timeout=60)
    assert again.returncode == 2
    assert err.count("\n") == 1 and f"run {run_id} is already in the ledger" in err


def test_a_stop_file_someone_else_put_in_place_is_ignored_and_names_its_owner(tmp_path, private_ledger, monkeypatch):
    """In a ledger dir others can write to, a stop file replaced by another user's (here `nobody`'s) is not obeyed,
    and says so; where the dir is shared on purpose (NOTES_TUI_SHARED_LEDGER=1) the request is obeyed and the run
    names the file's owner, not the name written in the request."""
    import json
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    with StandinOllama(latency=0.1, slots=2) as server:  # ~6 s of run: the stop file is looked at every 2 s
        exp, run_id, proc = start_run(tmp_path, server, private_ledger)
        path = stop_path(private_ledger, run_id)
        path.unlink()
        path.write_text(json.dumps({"user": "the-pi", "host": "login1"}) + "\n")
        os.chown(path, nobody, -1)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # it ran to the end
    assert "ignored a stop request" in err and "the file is not yours" in err
    assert len(results(tmp_path / "notes.db")) == N

    monkeypatch.setenv("NOTES_TUI_SHARED_LEDGER", "1")
    (tmp_path / "notes.db").unlink()
    with StandinOllama(latency=0.05, slots=2) as server:
        exp, run_id, proc = start_run(tmp_path, server, private_ledger)
        path = stop_path(private_ledger, run_id)
        path.unlink()
        path.write_text(json.dumps({"user": "the-pi", "host": "login1"}) + "\n")
        os.chown(path, nobody, -1)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stop requested by nobody (from login1)" in err and "the-pi" not in err


def test_a_killed_runs_stop_file_is_swept_by_the_next_reader(tmp_path, private_ledger):
    import signal

    with StandinOllama(latency=0.05, slots=2) as server:
        exp, run_id, proc = start_run(tmp_path, server, private_ledger)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert stop_path(private_ledger, run_id).exists()  # nobody removed it
    assert [r["status"] for r in ledger_runs(private_ledger)] == ["crashed"]
    ledger_runs(private_ledger)  # the next read sweeps what the crash left
    assert not stop_path(private_ledger, run_id).exists()
