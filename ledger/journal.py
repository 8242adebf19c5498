"""The per-run journal: an append-only, hash-chained JSONL file that only its own run writes.

Nothing shared is written here (the index is built from journals later), so parallel jobs on many NFS hosts never
contend. Each record is one os.write of a whole line followed by fsync, so a crash leaves at worst one cut last line,
which the importer ignores until it is complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .clock import utc_now_iso
from .ids import new_run_id

JOURNAL_DIR = "journal"
SUFFIX = ".jsonl"
RESERVE_SUFFIX = ".reserve"  # `.<run id>.reserve`: room kept for the run's last records on a disk that fills up
_FULL = (errno.ENOSPC, errno.EDQUOT)
STATUSES = ("completed", "interrupted", "failed")
RECORD_TYPES = ("header", "batch", "checkpoint", "close")


def line_hash(line: bytes) -> str:
    """Chain hash of a record: sha256 of its line without the trailing newline."""
    return hashlib.sha256(line).hexdigest()


def encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def ensure_private_dir(path: Path) -> None:
    """Create `path` and missing parents as 0700 (notes metadata is private); existing dirs keep their mode."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another job made it at the same moment
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


def fsync_dir(path: Path) -> None:
    # Makes a new directory entry durable; some filesystems refuse to open dirs, which only costs durability.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def reserve_space(path: Path, nbytes: int) -> None:
    """A file of `nbytes` whose blocks are really allocated (a sparse file would free nothing when deleted)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            os.write(fd, b"\0" * nbytes)  # a filesystem without fallocate: write the zeros ourselves
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def reserve_path(journal_dir: Path, run_id: str) -> Path:
    return journal_dir / f".{run_id}{RESERVE_SUFFIX}"


def sweep_reserves(journal_dir: Path, finished: Callable[[str], bool], orphan_after_s: float = 3600.0) -> None:
    """Remove the reserves of runs that can no longer use them (killed runs leave theirs behind). `finished(run_id)`
    says whether a run has ended; a reserve without a journal is removed once it is old."""
    try:
        entries = list(os.scandir(journal_dir))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(RESERVE_SUFFIX)):
            continue
        run_id = entry.name[1 : -len(RESERVE_SUFFIX)]
        try:
            if os.path.exists(journal_dir / f"{run_id}{SUFFIX}"):
                gone = finished(run_id)
            else:
                gone = time.time() - entry.stat().st_mtime > orphan_after_s
            if gone:
                os.unlink(entry.path)
        except OSError:
            pass


class Journal:
    """Writer of one run's journal. Thread-safe: the engine may record from worker threads.

    A full disk must not cost the run its record: `create` can set aside `reserve_bytes` in a file of its own. When
    a write fails for want of space, the reserve is deleted and the record written again into the room it leaves;
    `space_error` then tells the writer to stop (the reserve is gone) while there is still room to close."""

    def __init__(self, fd: int, path: Path, run_id: str, reserve: Path | None = None) -> None:
        self.run_id = run_id
        self.path = path
        self._fd: int | None = fd
        self._seq = 0
        self._prev: str | None = None
        self._lock = threading.Lock()
        self._size = 0  # bytes of whole records: where a write that failed halfway is cut back to
        self._reserve = reserve
        self.space_error: OSError | None = None

    @classmethod
    def create(cls, ledger_dir: Path, header: dict, run_id: str | None = None, reserve_bytes: int = 0) -> Journal:
        journal_dir = Path(ledger_dir) / JOURNAL_DIR
        ensure_private_dir(journal_dir)
        reserve = None
        if reserve_bytes > 0 and run_id is not None:
            reserve = reserve_path(journal_dir, run_id)
            reserve_space(reserve, reserve_bytes)  # first: a disk already full fails here, before any record
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        while True:
            rid = run_id or new_run_id()
            path = journal_dir / f"{rid}{SUFFIX}"
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                if run_id is not None:
                    raise
                continue  # a ULID collision is astronomically rare, but costs nothing to survive
            break
        os.fchmod(fd, 0o600)  # the umask could only remove bits, but be explicit about the result
        journal = cls(fd, path, rid, reserve)
        try:
            journal._write({"type": "header", "header": dict(header)})
        except BaseException:
            # e.g. a header value that is not JSON: leave no empty journal behind.
            if journal._fd is not None:
                os.close(fd)
                journal._fd = None
            path.unlink(missing_ok=True)
            journal._drop_reserve()
            raise
        fsync_dir(journal_dir)
        return journal

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append_units(self, units: list[dict], counts: dict | None = None) -> None:
        """One committed batch. `counts`: the run's counts as of this batch, so a run killed before its next
        checkpoint still shows counts that match the units it recorded."""
        for unit in units:
            if not isinstance(unit, dict) or "id" not in unit:
                raise ValueError("every unit needs an 'id'")
        body: dict[str, Any] = {"type": "batch", "units": units}
        if counts is not None:
            body["counts"] = counts
        self._write(body)

    def checkpoint(self, counts: dict) -> None:
        self._write({"type": "checkpoint", "counts": counts})

    def close(self, status: str, counts: dict, last_error: str | None = None, facts: dict | None = None) -> None:
        """`facts`: what was learned during the run that the header could not hold (the context a server loaded the
        model with); the index merges it into the run's header."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        with self._lock:
            if self._fd is None:
                return
            try:
                body: dict[str, Any] = {"type": "close", "status": status, "counts": counts, "last_error": last_error}
                if facts:
                    body["facts"] = facts
                self._write_locked(body)
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                self._drop_reserve()

    def _write(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._write_locked(body)

    def _write_locked(self, body: dict[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"journal {self.run_id} is closed")
        record = {
            "type": body.pop("type"),
            "seq": self._seq,
            "prev": self._prev,
            "t": utc_now_iso(),
            "run": self.run_id,
        }
        record.update(body)
        line = encode_record(record)
        data = line + b"\n"
        try:
            try:
                self._append(data)
            except OSError as exc:
                if exc.errno not in _FULL or self._reserve is None:
                    raise
                # cut off what part of the line got written, free the reserve, and write the record again
                os.ftruncate(self._fd, self._size)
                self._drop_reserve()
                self._append(data)
                self.space_error = exc
        except OSError:
            # Part of the line may be on disk; anything appended after it would be glued to that fragment,
            # so the journal is finished (the run shows as crashed rather than as a broken chain).
            os.close(self._fd)
            self._fd = None
            raise
        self._size += len(data)
        self._seq += 1
        self._prev = line_hash(line)

    def _append(self, data: bytes) -> None:
        # One write per record: with O_APPEND the line lands in one piece, so a reader sees either nothing of it
        # or (after a crash) a prefix without the newline, never interleaved fragments.
        assert self._fd is not None
        written = os.write(self._fd, data)
        while written < len(data):  # short writes only happen on odd filesystems (or a full one); same line
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def _drop_reserve(self) -> None:
        if self._reserve is not None:
            self._reserve.unlink(missing_ok=True)
            self._reserve = None

    def __del__(self) -> None:
        # An unclosed journal is a crashed run as far as the ledger is concerned; just don't leak the fd.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
