"""`notes-tui models pull NAME --host URL --progress-file F`: the process the TUI starts for a pull that outlives it
(issue 24 item 11). The same pull and lines as on the command line, and its state appended to F (0600); SIGTERM
cancels it on the server; SIGHUP does not end it; a second pull of the same server waits for the first, across
processes; a mistake found before the pull is F's last line too."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

from app.cluster.detached_pull import read_progress
from ledger.ids import new_run_id
from tests.helpers.support import ROOT
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("CI", "OLLAMA_HOST")}


def start(name: str, url: str, progress) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", "models", "pull", name, "--host", url,
                             "--progress-file", str(progress)], cwd=ROOT, env=env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def lines(path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_pull_writes_its_progress_and_its_lines_as_before(tmp_path):
    with StandinOllama(pull_seconds=2.0) as server:
        progress = tmp_path / "pulls" / f"{new_run_id()}.jsonl"
        proc = start("llama3.1:8b", server.url, progress)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.splitlines()[-1].startswith("llama3.1:8b  pulled, 4.7 GB in ")  # the log's lines, as before
        seen = lines(progress)
        assert stat.S_IMODE(progress.stat().st_mode) == 0o600
        assert {r["pid"] for r in seen} == {proc.pid} and all(r["v"] == 1 and r["url"] == server.url for r in seen)
        fractions = [r["done"] / r["total"] for r in seen if r["state"] == "pulling" and r["total"]]
        assert len(set(fractions)) >= 4 and fractions == sorted(fractions)  # progress as it came, at most 4 a second
        assert len(seen) < 2.0 * 4 + 10
        last = seen[-1]
        assert last["state"] == "done" and last["done"] == last["total"] and last["finished_at"] >= last["started_at"]
        assert "llama3.1:8b" in server.config()["models"]


def test_sigterm_cancels_on_the_server_and_sighup_does_not(tmp_path):
    with StandinOllama(pull_seconds=30.0) as server:
        progress = tmp_path / "pulls" / f"{new_run_id()}.jsonl"
        proc = start("llama3.1:8b", server.url, progress)
        try:
            wait_for(lambda: progress.exists() and (read_progress(progress) or {}).get("done"), 30, "progress")
            proc.send_signal(signal.SIGHUP)  # what a hang-up would send: nothing happens
            time.sleep(0.6)
            assert proc.poll() is None and read_progress(progress)["state"] == "pulling"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 143 and "pull of llama3.1:8b cancelled" in err
        assert read_progress(progress)["state"] == "cancelled"
        wait_for(lambda: server.stats()["pulls_cancelled"] == 1, 10, "the server to see the cancel")
        assert "llama3.1:8b" not in server.config()["models"]


def test_pulls_of_one_server_take_turns_across_processes_and_a_cancelled_one_in_the_queue_never_starts(tmp_path):
    with StandinOllama(pull_seconds=2.0) as server:
        folder = tmp_path / "pulls"
        first, second, third = (folder / f"{new_run_id()}.jsonl" for _ in range(3))
        a = start("llama3.1:8b", server.url, first)
        wait_for(lambda: first.exists() and (read_progress(first) or {}).get("state") == "pulling", 30, "first")
        b = start("mistral", server.url, second)
        c = start("qwen2.5:7b", server.url, third)
        try:
            for path in (second, third):
                wait_for(lambda p=path: (read_progress(p) or {}).get("state") == "queued", 30, f"{path.name} queued")
            c.send_signal(signal.SIGTERM)  # cancelled while waiting: never asks the server
            assert c.wait(20) == 143 and read_progress(third)["state"] == "cancelled"
            assert a.wait(60) == 0 and b.wait(60) == 0
        finally:
            for p in (a, b, c):
                if p.poll() is None:
                    p.kill()
        done_a, b_lines = read_progress(first), lines(second)
        started_b = next(r["at"] for r in b_lines if r["state"] == "pulling" and r["phase"] != "starting")
        assert started_b >= done_a["finished_at"]  # one at a time
        assert server.stats()["pulls"] == 2 and server.stats()["pulls_done"] == 2


def test_a_mistake_before_the_pull_is_the_files_last_line(tmp_path):
    progress = tmp_path / "pulls" / f"{new_run_id()}.jsonl"
    proc = start("bad name!", "http://127.0.0.1:9", progress)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("notes-tui: error: 'bad name!' is not a model name")
    last = read_progress(progress)
    assert last["state"] == "failed" and last["error"] in err and last["pid"] == proc.pid


def test_a_cancel_as_soon_as_the_file_says_queued_is_a_cancel_not_a_kill(tmp_path):
    """The file says queued (with its pid) from the process's first moment, before the pull's own handlers: a
    SIGTERM then (the app's `c` at once) ended the process at the signal's default, the file still saying queued."""
    with StandinOllama(pull_seconds=2.0) as server:
        for _ in range(3):
            path = tmp_path / "pulls" / f"{new_run_id()}.jsonl"
            proc = start("llama3.1:8b", server.url, path)
            try:
                wait_for(lambda p=path: p.exists() and p.stat().st_size > 0, 30, "the first line", every=0.001)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 143, proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert read_progress(path)["state"] == "cancelled"
        assert server.stats()["pulls"] == 0  # none of them asked the server
