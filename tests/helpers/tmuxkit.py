"""A tmux server of a test's own, to drive notes-tui in a real terminal and read what it shows."""

from __future__ import annotations

import subprocess
import time


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

    WAIT_S = 20.0

    def wait_for(self, *texts: str, timeout: float | None = None) -> str:
        timeout = self.WAIT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if all(t in shown for t in texts):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on screen after {timeout} s:\n{shown}")
            time.sleep(0.1)

    def wait_gone(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} still on screen after {timeout} s:\n{self.screen()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "t"], capture_output=True).returncode == 0

    def pane(self, what: str) -> str:
        """A pane variable: pane_pid, alternate_on, mouse_any_flag, pane_dead …"""
        return self("display-message", "-p", "-t", "t", f"#{{{what}}}").strip()

    def start(self, command: str, size: tuple[int, int] = (80, 24)) -> None:
        # the pane outlives the app, so what the app left the terminal in can be read afterwards
        self("new-session", "-d", "-s", "t", "-x", str(size[0]), "-y", str(size[1]), command)
        self("set-option", "-t", "t", "remain-on-exit", "on")
