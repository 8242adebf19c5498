"""An exclusive lease file that says which process may write ledger.db.

SQLite's own locks cannot be trusted on NFS, so the index has exactly one writer: whoever created `ledger.lease`
with O_CREAT|O_EXCL (atomic on NFSv3+ and local filesystems). The holder keeps the file descriptor open and rewrites
the file as a heartbeat; ownership is checked by comparing the inode behind the name with the inode of that fd.

A lease is stale when its holder is on this host and that process is gone (pid dead, or the pid now belongs to a
process with another start time), or when neither its heartbeat nor its mtime is newer than STALE_AFTER_S (a crashed
holder on another host, or one that is frozen). Staleness is judged from a snapshot (bytes + inode) of the file.

Take-over, and why it is race-safe
----------------------------------
Several processes may find the same stale lease at once. Deleting it by name after judging it would be wrong: in
between, another process may already have removed it and created a fresh lease, and I would delete *that* one. Two
mechanisms prevent this:

1. Breakers take turns. Only the creator of `ledger.lease.break` (O_EXCL again, held for microseconds) may remove
   a lease. Under that guard, re-reading the lease and finding the very bytes and inode that were judged stale
   proves nothing has happened in between, and nothing can happen before the removal: other breakers wait for the
   guard, the dead holder will not release, and nobody can O_EXCL-create a new lease while the stale file still
   occupies the name. A process that finds the guard taken does not break anything; it waits and looks again.
2. Removal is a rename to a name only the breaker knows, followed by a check that what it moved is the very file
   it judged (same inode and same bytes; inode numbers alone are reused as soon as a file is deleted, bytes alone
   do not tell two leases of one holder apart). If not (possible only if the guard itself was wrongly judged stale,
   or the holder was merely frozen and has just rewritten its heartbeat), it puts the file back with
   os.link(grave, name), which fails rather than overwrite a lease created meanwhile. A rename that fails with
   ENOENT means someone else removed it: just race for creation again; O_EXCL guarantees a single winner.

The guard can be left behind by a breaker that died mid-way; it is stale after GUARD_STALE_S (or at once if its
holder on this host is dead) and is removed with the same rename-and-verify, without a guard of its own.
What remains is the inherent limit of any lease with a timeout: a holder frozen for longer than STALE_AFTER_S is
indistinguishable from a dead one. Such a holder finds out at its next ownership check (before every index commit
and heartbeat), rolls back and gives up. And if all else fails, the index is derived data: rebuild it from journals.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from .procinfo import pid_start_time, same_process_alive, this_host

STALE_AFTER_S = 60.0
HEARTBEAT_EVERY_S = 5.0
GUARD_SUFFIX = ".break"
GUARD_STALE_S = 10.0  # the guard is held for microseconds; 10 s means its holder died (or is badly stuck)
GRAVE_MARK = ".stale."


class LeaseLost(RuntimeError):
    """Our lease file was taken over; stop writing the index."""


@dataclass(frozen=True)
class Snapshot:
    raw: bytes
    ident: tuple[int, int]  # (st_dev, st_ino): identity of the file, not of its name
    mtime: float
    info: dict[str, Any] | None  # parsed JSON, None while the creator has not written it yet (or garbage)


def read_snapshot(path: Path) -> Snapshot | None:
    # Open + fstat rather than stat(path): on NFS, open revalidates the cached attributes (close-to-open).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    return Snapshot(raw, (st.st_dev, st.st_ino), st.st_mtime, info if isinstance(info, dict) else None)


def is_stale(snap: Snapshot, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    info = snap.info or {}
    on_this_host = snap.info is not None and info.get("host") == this_host()
    if on_this_host and not same_process_alive(info.get("pid"), info.get("pid_start")):
        return True
    beat = info.get("heartbeat")
    freshest = snap.mtime
    if isinstance(beat, (int, float)) and not isinstance(beat, bool):
        # Heartbeat is the holder's clock, mtime the file server's; requiring both to be old tolerates skew of
        # either clock in the direction that matters (a live holder is never judged stale because of skew alone).
        freshest = max(freshest, float(beat))
    return now - freshest > stale_after_s


class Lease:
    def __init__(self, path: Path, stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._info: dict[str, Any] = {}
        self._last_beat = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait_s: float = 0.0) -> bool:
        """Take the lease, waiting up to wait_s for a live holder to finish; True when held."""
        if self._fd is not None:
            raise RuntimeError("lease already held by this object")
        deadline = time.monotonic() + max(0.0, wait_s)
        delay = 0.01
        while True:
            if self._try_create():
                return True
            snap = read_snapshot(self.path)
            if snap is None:
                continue  # released between our create and our read: try again at once
            if is_stale(snap, self.stale_after_s) and self._break(snap):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Jitter keeps a crowd of waiters from retrying in lockstep.
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.25)

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        now = time.time()
        self._info = {
            "host": this_host(),
            "pid": os.getpid(),
            "pid_start": pid_start_time(os.getpid()),
            "acquired": round(now, 3),
            "heartbeat": round(now, 3),
            "token": secrets.token_hex(8),  # tells two holders in one process (threads) apart
        }
        self._fd = fd
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        try:
            self._rewrite()
        except BaseException:
            self.release()
            raise
        return True

    def _break(self, judged: Snapshot) -> bool:
        """Remove the stale lease `judged` if it is still the one in place; True if the name may now be free.
        See the module docstring for the reasoning."""
        guard = self.path.with_name(self.path.name + GUARD_SUFFIX)
        guard_fd = _take_guard(guard)
        if guard_fd is None:
            return False  # another process is breaking it right now
        try:
            again = read_snapshot(self.path)
            if again is None:
                return True
            if again != judged:
                return False  # changed since judged: judge it again on the next round
            return remove_if_unchanged(self.path, judged)
        finally:
            _drop_guard(guard, guard_fd)

    def still_ours(self) -> bool:
        if self._fd is None:
            return False
        snap = read_snapshot(self.path)
        return snap is not None and snap.ident == self._ident

    def check(self) -> None:
        """Raise LeaseLost unless we still own the name; also refresh the heartbeat when due."""
        if time.monotonic() - self._last_beat >= HEARTBEAT_EVERY_S:
            self.heartbeat()
        elif not self.still_ours():
            raise LeaseLost(str(self.path))

    def heartbeat(self) -> None:
        if not self.still_ours():
            raise LeaseLost(str(self.path))
        self._info["heartbeat"] = round(time.time(), 3)
        self._rewrite()

    def _rewrite(self) -> None:
        assert self._fd is not None
        data = json.dumps(self._info, separators=(",", ":")).encode()
        # Written through our own fd, so a heartbeat can never land in somebody else's lease file. A reader may
        # catch it half-rewritten and fail to parse it; it then judges by mtime, which the write just refreshed.
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)
        self._last_beat = time.monotonic()

    def release(self) -> None:
        """Give the lease up; the file is removed only if the name still points at our inode."""
        if self._fd is None:
            return
        try:
            if self.still_ours():
                _unlink_quietly(self.path)
        finally:
            os.close(self._fd)
            self._fd = None
            self._ident = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_if_unchanged(path: Path, judged: Snapshot) -> bool:
    """Rename `path` away and delete it if it is the file `judged`, else put it back. True if we removed it or it
    was already gone."""
    grave = path.with_name(f"{path.name}{GRAVE_MARK}{this_host()}.{os.getpid()}.{secrets.token_hex(6)}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return True
    moved = read_snapshot(grave)
    if moved is not None and moved.ident == judged.ident and moved.raw == judged.raw:
        _unlink_quietly(grave)
        return True
    try:
        os.link(grave, path)  # put back, never over a file created meanwhile
    except FileExistsError:
        pass  # its holder will see it lost the name at its next ownership check
    _unlink_quietly(grave)
    return False


def _take_guard(guard: Path) -> int | None:
    """The breaker's guard: an fd on the guard file we created, or None if another process holds it."""
    for _ in range(2):
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            snap = read_snapshot(guard)
            if snap is not None and is_stale(snap, GUARD_STALE_S):
                remove_if_unchanged(guard, snap)
                continue
            return None
        me = {"host": this_host(), "pid": os.getpid(), "pid_start": pid_start_time(os.getpid())}
        os.write(fd, json.dumps(me).encode())
        return fd
    return None


def _drop_guard(guard: Path, fd: int) -> None:
    try:
        snap = read_snapshot(guard)
        st = os.fstat(fd)
        if snap is not None and snap.ident == (st.st_dev, st.st_ino):
            _unlink_quietly(guard)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def sweep_graves(lease_path: Path, older_than_s: float = 3600.0) -> None:
    """Remove graves left by breakers that died between rename and unlink (a microsecond window, but files
    would pile up forever). Only the holder calls this; ctime, because rename keeps the old mtime."""
    now = time.time()
    prefix = lease_path.name + GRAVE_MARK
    try:
        entries = list(os.scandir(lease_path.parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix):
            try:
                if now - entry.stat().st_ctime > older_than_s:
                    os.unlink(entry.path)
            except OSError:
                pass
