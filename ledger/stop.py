"""Stop requests: how a run on another host is asked to stop, through the shared ledger dir.

A run that listens creates `<ledger dir>/stop/<run id>` (empty, 0600) before it starts and removes it when it ends.
To ask it to stop, append a line to that file (`ask_to_stop`: who, where, when, as JSON; any bytes count). The run
checks the file every ~2 s (`StopChannel.poll`) and stops as on SIGTERM; a second request is the second SIGTERM.

The file exists before anyone asks, so the run watches a size, never a name: on NFS, open() fetches the file's
current attributes from the server (close-to-open consistency), whereas a stat — or the absence of a name — may be
answered from the client's caches for up to a minute.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .journal import ensure_private_dir
from .live import read_new_bytes

STOP_DIR = "stop"


def stop_path(ledger_dir: Path, run_id: str) -> Path:
    return Path(ledger_dir) / STOP_DIR / run_id


class StopChannel:
    """The run's side: `open` before the run starts, `poll` now and then, `close` when it is over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = 0

    @classmethod
    def open(cls, ledger_dir: Path, run_id: str) -> StopChannel:
        path = stop_path(ledger_dir, run_id)
        ensure_private_dir(path.parent)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        return cls(path)  # bytes already there (a request written before we listened) count as requests

    def poll(self) -> list[dict[str, Any]]:
        """The requests written since the last poll (a line that is not JSON counts as a request with no details)."""
        got = read_new_bytes(self.path, self._seen)
        if got is None or not got[1]:
            return []
        data = got[1]
        self._seen += len(data)
        requests = []
        for line in data.splitlines():
            try:
                request = json.loads(line)
            except ValueError:
                request = None
            requests.append(request if isinstance(request, dict) else {})
        return requests

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def ask_to_stop(ledger_dir: Path, run_id: str) -> bool:
    """Append a stop request for `run_id`. False when the run is not listening (no stop file: it ended, or a
    notes-tui that predates stop requests started it); nothing is created then."""
    try:
        fd = os.open(stop_path(ledger_dir, run_id), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        request = {"host": socket.gethostname(), "user": user, "pid": os.getpid(), "at": round(time.time(), 3)}
        os.write(fd, (json.dumps(request) + "\n").encode("utf-8"))
    finally:
        os.close(fd)  # close() sends the write to an NFS server (close-to-open), where the run reads it
    return True
