"""A pull started in the app in a real terminal survives the terminal (issue 24 item 11): tmux is killed while the
pull streams (the SSH connection dropped: SIGHUP), the app ends, the pull process goes on to the end, and the app
opened again shows the pull that finished without it."""

from __future__ import annotations

import os
import shlex
import shutil
import sys

import pytest

from app.cluster.detached_pull import pulls_dir, read_progress
from ledger.procinfo import pid_alive
from tests.helpers.support import ROOT, need
from tests.helpers.tmuxkit import Tmux
from tests.helpers.tuikit import write_config
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import spawn_standin

pytestmark = [pytest.mark.serial, pytest.mark.slow]


class PullTmux(Tmux):
    WAIT_S = 30.0

    def start_app(self, tmp_path, config) -> int:
        env = {"TERM": "xterm-256color", "PYTHONPATH": str(ROOT), "NOTES_TUI_CONFIG": str(config)}
        command = (f"cd {shlex.quote(str(ROOT))} && exec env "
                   + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                   + f" {shlex.quote(sys.executable)} -m app --workspace {shlex.quote(str(tmp_path / 'ws'))}"
                   + f" --ledger {shlex.quote(str(tmp_path / 'ledger'))}")
        self("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command)
        return int(self("display-message", "-p", "-t", "t", "#{pane_pid}").strip())


def test_a_pull_goes_on_when_the_terminal_is_gone_and_the_reopened_app_shows_it_done(tmp_path):
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    server = spawn_standin(models="llama3", pull_seconds=8.0)
    tmux = PullTmux(f"notes-tui-pull-test-{os.getpid()}")
    pull_pid = None
    try:
        config = write_config(tmp_path / "config.toml", [(server.url, "gpu-a")])
        (tmp_path / "ws" / "experiments").mkdir(parents=True)
        app_pid = tmux.start_app(tmp_path, config)
        tmux.wait_for("1 Servers", "gpu-a", "Ollama 0.11.10")
        tmux("send-keys", "-t", "t", "2")
        tmux.wait_for("Models on gpu-a", "llama3:latest")
        tmux("send-keys", "-t", "t", "p")
        tmux.wait_for("Pull a model to gpu-a")
        tmux("send-keys", "-t", "t", "-l", "llama3.1:8b")
        tmux("send-keys", "-t", "t", "Enter")
        tmux.wait_for("llama3.1:8b", "MB/s", "ETA")
        [progress] = pulls_dir(tmp_path / "ledger").glob("*.jsonl")
        pull_pid = read_progress(progress)["pid"]
        tmux("kill-server")  # the terminal is gone: SIGHUP to the app
        wait_for(lambda: not pid_alive(app_pid), 20, "the app to end", every=0.1)
        assert pid_alive(pull_pid) and server.stats()["pulls_done"] == 0 and server.stats()["pulls_cancelled"] == 0
        wait_for(lambda: server.stats()["pulls_done"] == 1, 40, "the pull to finish without the app", every=0.2)
        assert "llama3.1:8b" in server.config()["models"] and read_progress(progress)["state"] == "done"

        tmux.start_app(tmp_path, config)
        tmux.wait_for("1 Servers", "gpu-a")
        tmux("send-keys", "-t", "t", "2")
        tmux.wait_for("Models on gpu-a", "llama3.1:8b  pulled, 4.7 GB in ")
    finally:
        tmux("kill-server", check=False)
        server.stop()
        if pull_pid and pid_alive(pull_pid):
            os.kill(pull_pid, 9)
