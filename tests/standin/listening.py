"""Waiting for a test server child process to print `LISTENING <url>` (the stand-in, the real llama.cpp server).
Standard library only."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable, Sequence


def wait_listening(proc: subprocess.Popen, cmd: Sequence[str], timeout_s: float, what: str,
                   tail: Callable[[], str] = lambda: "") -> str:
    """The URL the child announces on its first stdout line; on failure the child is killed and reaped, and the
    RuntimeError quotes `tail()` (the end of its log). stdout is closed either way: nothing follows that line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = b""
    try:
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"{what} did not start within {timeout_s}s: {list(cmd)}\n{tail()}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{what} exited with {proc.wait()} before listening: {list(cmd)}\n{tail()}")
            line += chunk
        first = line.split(b"\n", 1)[0].decode(errors="replace").strip()
        if not first.startswith("LISTENING "):
            raise RuntimeError(f"unexpected first line from the {what}: {first!r}\n{tail()}")
        return first.split(" ", 1)[1]
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    finally:
        sel.close()
        proc.stdout.close()
