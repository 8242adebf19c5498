"""The live feed: what a running run has just finished, note by note, for whoever follows it (the TUI's monitor).

`<ledger dir>/live/<run id>.jsonl` (0600, in a 0700 folder) is written only by its run, one JSON object a line:

    {"type": "feed", "provisional": true, "v": 1, "run": ID, "journal": "journal/ID.jsonl", "experiment": ...,
     "total": N, "model": ..., "hostname": ..., "pid": ..., "t": 1717171717.123}                 the first line
    {"type": "unit", "id": "12", "outcome": "valid", "answer": {"response": "(1) Likely"}, "attempts": 1,
     "latency_ms": 210.3, "tokens_in": 480, "tokens_out": 31, "truncated": false, "error": null,
     "host": "http://gpu-n57:48362", "t": ...}                                    one per note as it finishes
    {"type": "progress", "counts": {...}, "in_flight": 8, "elapsed_s": 12.0, "rate": 39.6, "t": ...}  about 1/s
    {"type": "waiting", "on": "servers", "where": ["http://gpu-n57:48362"], "error": "connection refused",
     "since": 1717171700.5, "give_up_at": 1717171760.5, "over": false, "t": ...}
                        the run waits (on "servers": none answers; on "results": its results write keeps failing),
                        once when the wait begins or changes and once with "over": true when it ends; while it waits
                        each progress line also carries "waiting": [the same objects]
    {"type": "end", "status": "interrupted", "reason": "SIGTERM", "counts": {...}, "reasons": {"thinking": 3}, "t": ...}

`t` is Unix time in seconds. `answer` holds labels and numbers only (choice, bool, int, number fields), like the
journal: never note text, never free-text answers.

**Provisional.** A unit line says a note got its answer, not that the answer is in the results table: results are
written in batches, and the journal records a unit only once its batch is committed. The journal is the record; the
feed is never imported into the index, and a crash can leave unit lines whose rows were never written (the next run
answers those notes again). Lines are buffered and appended as whole lines, at most every ~200 ms, without fsync.

Followers read only the bytes they have not seen (`Tail`), reopening the file on every read: on NFS, open() makes
the client ask the server for the file's current size (close-to-open consistency), where a file kept open could be
read from the client's attribute cache for up to a minute.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .journal import JOURNAL_DIR, SUFFIX, ensure_private_dir

LIVE_DIR = "live"
FORMAT_VERSION = 1
PRUNE_AFTER_S = 7 * 86400  # a feed untouched this long belongs to a run long over (progress lines come every second)
PRUNE_EVERY_S = 86400  # runs start by the thousand in job arrays: one of them a day looks at every feed
PRUNED_MARK = ".pruned"

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one encoder: json.dumps(...) builds one a call


def feed_path(ledger_dir: Path, run_id: str) -> Path:
    return Path(ledger_dir) / LIVE_DIR / f"{run_id}{SUFFIX}"


class FeedWriter:
    """The run's side. `add` only buffers; `flush` appends the buffered lines in one write. Not thread-safe: the
    engine emits every event on its event loop's thread."""

    def __init__(self, fd: int, path: Path) -> None:
        self.path = path
        self._fd: int | None = fd
        self._lines: list[str] = []

    @classmethod
    def create(cls, ledger_dir: Path, run_id: str, header: dict[str, Any]) -> FeedWriter:
        folder = Path(ledger_dir) / LIVE_DIR
        ensure_private_dir(folder)
        path = feed_path(ledger_dir, run_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # the umask can only take bits away; say what the result is
        writer = cls(fd, path)
        first = {"provisional": True, "v": FORMAT_VERSION, "run": run_id,
                 "journal": f"{JOURNAL_DIR}/{run_id}{SUFFIX}", **header}
        writer.add("feed", first)
        writer.flush()
        return writer

    def add(self, kind: str, body: dict[str, Any]) -> None:
        record = {"type": kind, **body, "t": round(time.time(), 3)}
        self._lines.append(_ENCODER.encode(record))

    def flush(self) -> None:
        if self._fd is None or not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8")
        self._lines = []
        written = os.write(self._fd, data)
        while written < len(data):  # short writes happen only on odd filesystems; finish the same lines
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None


class Tail:
    """Reads a growing file by new bytes only: `read()` returns the complete lines appended since the last call.

    A cut last line (a write under way, or a crash) is kept back until its newline arrives. A file that is missing
    reads as nothing yet; a file that got shorter than what was read (replaced) is read again from its start."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset  # bytes consumed, complete lines only
        self.bytes_read = 0  # everything read from the file, for callers that check the cost
        self._partial = b""

    def size(self) -> int | None:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return None

    def read(self, max_bytes: int = 64 << 20) -> list[bytes]:
        start = self.offset + len(self._partial)
        got = read_new_bytes(self.path, start, max_bytes)
        if got is None:
            return []
        size, data = got
        if size < start:  # replaced or truncated: what we had is no longer this file's
            self.offset, self._partial = 0, b""
            got = read_new_bytes(self.path, 0, max_bytes)
            if got is None:
                return []
            size, data = got
        self.bytes_read += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        self.offset += cut
        return data[:cut].splitlines() if cut else []

    def skip_to_tail(self, keep_bytes: int) -> None:
        """Start near the end, at a line start within the last `keep_bytes`: attaching to a long run's feed reads
        its recent lines, not hours of them."""
        size = self.size()
        if size is None or size <= self.offset + keep_bytes:
            return
        pos = size - keep_bytes - 1  # the newline ending the line that the window cuts
        with open(self.path, "rb") as f:
            f.seek(pos)
            while True:
                chunk = f.read(1024)  # feed lines are ~250 bytes
                self.bytes_read += len(chunk)
                newline = chunk.find(b"\n")
                if not chunk or newline >= 0:
                    self.offset = pos + newline + 1 if chunk else size
                    break
                pos += len(chunk)
        self._partial = b""


def read_new_bytes(path: Path, start: int, max_bytes: int = 64 << 20) -> tuple[int, bytes] | None:
    """(the file's size, its bytes from `start`), or None when it is missing. Opens the file anew each time: on NFS,
    open() fetches the current size from the server (close-to-open consistency)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        return size, (os.pread(fd, min(size - start, max_bytes), start) if size > start else b"")
    finally:
        os.close(fd)


def read_first_line(path: Path, limit: int = 1 << 20) -> bytes | None:
    """The first complete line of a file, or None (missing, or no newline yet within `limit` bytes)."""
    try:
        with open(path, "rb") as f:
            line = f.readline(limit)
    except FileNotFoundError:
        return None
    return line if line.endswith(b"\n") else None


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One feed line as a dict, or None for a line that is not a JSON object (never raises: feeds are followed)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def prune_feeds(ledger_dir: Path, max_age_s: float = PRUNE_AFTER_S, now: float | None = None,
                every_s: float = PRUNE_EVERY_S) -> int:
    """Delete feeds nobody wrote to for `max_age_s` (their runs ended or died long ago; the journals keep the record),
    unless that was done less than `every_s` ago (one stat: a stat per feed on NFS adds up). Returns how many were
    deleted. A feed another process is deleting at the same moment is skipped."""
    folder = Path(ledger_dir) / LIVE_DIR
    now = time.time() if now is None else now
    mark = folder / PRUNED_MARK
    try:
        if now - mark.stat().st_mtime < every_s:
            return 0
    except FileNotFoundError:
        pass
    try:
        entries = list(os.scandir(folder))
        mark.touch(mode=0o600)
    except FileNotFoundError:
        return 0
    cutoff = now - max_age_s
    gone = 0
    for entry in entries:
        try:
            if entry.name.endswith(SUFFIX) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                gone += 1
        except FileNotFoundError:
            continue
    return gone
