"""notes-tui in a real terminal: tmux runs it at 80x24, the test presses 1 and 2 and reads the screen back."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

from standin_ollama import spawn_standin
from support import ROOT, need
from tuikit import write_config


class Tmux:
    """A tmux server of the test's own (its own socket): other tmux sessions on the machine are not touched."""

    def __init__(self, name: str):
        self.base = ["tmux", "-L", name]

    def __call__(self, *args: str, check: bool = True) -> str:
        res = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=20)
        if check and res.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {res.stderr}")
        return res.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if all(t in shown for t in texts):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on screen after {timeout} s:\n{shown}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "t"], capture_output=True).returncode == 0


def test_the_app_in_tmux_switches_screens_with_1_and_2_and_quits(tmp_path):
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    server = spawn_standin(models="llama3,qwen2.5:7b")
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")
    try:
        config = write_config(tmp_path / "config.toml", [(server.url, "gpu-a")])
        (tmp_path / "ws" / "experiments").mkdir(parents=True)
        env = {"NOTES_TUI_CONFIG": str(config), "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
        command = " ".join(
            [f"{k}={shlex.quote(v)}" for k, v in env.items()]
            + [shlex.quote(sys.executable), "-m", "app", "--workspace", shlex.quote(str(tmp_path / "ws")),
               "--ledger", shlex.quote(str(tmp_path / "ledger"))])
        tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", f"cd {shlex.quote(str(ROOT))} && {command}")
        shown = tmux.wait_for("1 Servers", "gpu-a", "Ollama 0.11.10")
        assert "a Add server" in shown and "q Quit" in shown
        assert len(shown.splitlines()[0]) <= 80
        tmux("send-keys", "-t", "t", "2")
        shown = tmux.wait_for("Models on gpu-a", "llama3:latest", "qwen2.5:7b", "of 75 GB")
        assert "p Pull" in shown
        tmux("send-keys", "-t", "t", "1")
        tmux.wait_for("Servers  1 known")
        tmux("send-keys", "-t", "t", "q")
        deadline = time.monotonic() + 10
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tmux.alive(), tmux.screen()
    finally:
        tmux("kill-server", check=False)
        server.stop()
