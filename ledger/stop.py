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

STOP_DIR = "stop"


def stop_path(ledger_dir: Path, run_id: str) -> Path:
    return Path(ledger_dir) / STOP_DIR / run_id


SHARED_ENV = "NOTES_TUI_SHARED_LEDGER"  # set to 1 where a ledger dir is shared by a group on purpose


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


class StopChannel:
    """The run's side: `open` before the run starts, `poll` now and then, `close` when it is over.

    A request is believed only from a stop file owned by the run's own user (the file it created, 0600): in a ledger
    dir others can write to, someone could replace the file with their own and claim any name in it. The user named
    is the file's owner, never what a request line says; the host is the line's (`claimed_host`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = 0
        self.ignored = 0  # requests in a stop file someone else owns

    @classmethod
    def open(cls, ledger_dir: Path, run_id: str) -> StopChannel:
        path = stop_path(ledger_dir, run_id)
        ensure_private_dir(path.parent)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        return cls(path)  # bytes already there (a request written before we listened) count as requests

    def poll(self) -> list[dict[str, Any]]:
        """The requests written since the last poll (a line that is not JSON counts as a request with no details),
        each with `user`: the stop file's owner."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError:  # a link put in its place: not ours to read
            self.ignored += 1
            return []
        try:
            st = os.fstat(fd)
            data = os.pread(fd, min(st.st_size - self._seen, 1 << 20), self._seen) if st.st_size > self._seen else b""
        finally:
            os.close(fd)
        if not data:
            return []
        self._seen += len(data)
        if st.st_uid != os.getuid() and os.environ.get(SHARED_ENV) != "1":
            self.ignored += len(data.splitlines()) or 1
            return []
        requests = []
        for line in data.splitlines():
            try:
                claimed = json.loads(line)
            except ValueError:
                claimed = None
            claimed = claimed if isinstance(claimed, dict) else {}
            requests.append({"user": _user_name(st.st_uid), "claimed_host": claimed.get("host"), "at": claimed.get("at")})
        return requests

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def sweep_stop_files(ledger_dir: Path, finished) -> None:
    """The stop files of runs that ended without removing theirs (killed): `finished(run_id)` says which."""
    folder = Path(ledger_dir) / STOP_DIR
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return
    for name in names:
        if finished(name):
            (folder / name).unlink(missing_ok=True)


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
