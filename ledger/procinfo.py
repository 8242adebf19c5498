"""Is a process alive, and is it still the same process (pids get reused)? Linux /proc; degrades to "unknown"."""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may itself contain spaces or ')', so split after the last ')'.
    end = raw.rfind(")")
    if end < 0:
        return None
    return raw[end + 2 :].split()  # fields 3.. (state is index 0 here)


def pid_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or None if unavailable."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22 -> index 22 - 3
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    # A zombie has exited; only its exit status is left for the parent to collect.
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def same_process_alive(pid: object, pid_start: object) -> bool:
    """True when `pid` runs and, if its start time was recorded, is the very process that recorded it."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not pid_alive(pid):
        return False
    if pid_start is None:
        return True
    return pid_start_time(pid) == pid_start
