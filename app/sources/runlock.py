"""One run at a time per experiment and results table.

Two runs of one experiment (a second terminal, an array job resubmitted) would both take the same notes from the
anti-join and answer each of them twice. So a run holds a lock named after (results table, experiment) for as long
as it runs, and a second run refuses to start with one line naming the first.

The lock lives with the thing it protects, the results table, not in the ledger directory: two runs may record into
different ledgers (another host's home, --ledger), and a lease file in a shared directory can only be judged stale
by a timeout when its holder was on another host. The locks used here are released by the kernel or the database
server the moment the holder dies, SIGKILL included:

- MySQL: GET_LOCK on the run's writer connection (server-side, so it holds across hosts; gone when the connection
  is). A row in `notes_tui_locks` says who holds it, for the refusal line.
- SQLite: an fcntl lock on a file next to the database, the same kind of lock SQLite itself relies on, so it is as
  trustworthy as the database file (on NFS, exactly as much). The file holds the holder's description.

A holder that dies leaves its description behind (the row, the file). The next run finds it and learns that the
previous run was killed, which matters: a kill between the database's commit and the journal's write leaves rows
that no journal records, and the runner answers those again (see Runner._forget_unrecorded).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.errors import SourceError


def lock_key(results_table: str, experiment: str, shard: tuple[int, int] | None = None) -> str:
    """The lock's name. Each shard of an array job has its own: shards answer disjoint notes, and the N tasks of one
    array run at once by design. (A plain run beside running shards of the same experiment is not kept out.)"""
    part = f"\0shard {shard[0]}/{shard[1]}" if shard else ""
    return hashlib.sha256(f"{results_table.lower()}\0{experiment}{part}".encode()).hexdigest()


@dataclass(frozen=True)
class Holder:
    run_id: str | None
    host: str | None
    pid: int | None
    started_at: str | None = None

    @classmethod
    def me(cls, run_id: str) -> Holder:
        return cls(run_id, socket.gethostname(), os.getpid(),
                   datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, "host": self.host, "pid": self.pid, "started_at": self.started_at})

    @classmethod
    def from_json(cls, text: str | bytes) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(d.get("run_id"), d.get("host"), d.get("pid"), d.get("started_at"))
        except (ValueError, AttributeError):
            return None  # written half, or not ours


class RunLocked(SourceError):
    def __init__(self, where: str, experiment: str, table: str, holder: Holder | None, detail: str = ""):
        if holder is not None and holder.run_id:
            who = (f"run {holder.run_id} on host {holder.host}, pid {holder.pid}"
                   + (f", started {holder.started_at}" if holder.started_at else ""))
            stop = f"stop it (kill -TERM {holder.pid} on {holder.host})"
        else:
            who = f"another notes-tui run{f' ({detail})' if detail else ''}"
            stop = "stop it"
        super().__init__(f"{where}: experiment {experiment!r} is already running into {table}: {who} — wait for "
                         f"it to finish or {stop}; two runs of one experiment would answer the same notes twice")


class FileRunLock:
    """An fcntl lock on `path`, holding the holder's description. See the module docstring."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, me: Holder) -> tuple[bool, Holder | None]:
        """(True, what a dead previous holder left) when taken; (False, the live holder) when held elsewhere."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                return False, Holder.from_json(self.path.read_bytes())
            # the holder before us removes the file as it lets go; if it did so after we opened it, our lock is
            # on a file nobody else will open again: start over on the new one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        left = _read_all(fd)
        previous = Holder.from_json(left) if left else None
        data = me.to_json().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self._fd = fd
        return True, previous

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # still holding it: nobody can have taken it meanwhile
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the fcntl lock
            self._fd = None


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
