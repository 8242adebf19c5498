"""Import journals into ledger.db: read each journal from its stored offset, verify the chain, apply the records and
advance the offset in the same transaction, so an interrupted import never applies a record twice.

The result depends only on the bytes of the journals, never on when or in how many steps they were imported, so an
incremental index and a rebuilt one are identical. The one subtle case is a broken chain: a `prev` mismatch on line k
means line k-1 *or* line k was altered, so neither is trusted. If line k-1 was already applied (it was the last line
when we last looked), the run is reset and re-imported up to line k-2, exactly what a rebuild would keep.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .journal import RECORD_TYPES, STATUSES, SUFFIX, line_hash
from .migrations import COUNT_KEYS

CHUNK_BYTES = 4 << 20  # read size; also bounds memory for journals with millions of units
TXN_BYTES = 32 << 20  # commit after about this much journal data (one commit per file would cost an fsync each)

HEADER_COLUMNS = (
    "experiment", "description", "model", "model_digest", "backend", "prompt_hash", "toml_sha256", "toml_text",
    "server_version", "tool_version", "user", "hostname", "pid", "pid_start", "results_table",
)  # fmt: skip
TIMELINE_SQL = "insert or replace into timeline (run_id, seq, t, units, done) values (?, ?, ?, ?, ?)"
UNIT_SQL = (
    "insert or replace into units (run_id, unit_id, outcome, answer, attempts, latency_ms, tokens_in, tokens_out,"
    " truncated, error, host) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# sort_keys: the same dict must give the same text, whatever order the app built it in. One encoder for all
# calls, because json.dumps with options builds a new one each time (a third of the import time for units).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def compact(value: Any) -> str:
    return _ENCODER.encode(value)


def scalar(value: Any) -> Any:
    """Something sqlite3 can bind. Journals are app data; a surprising type must not stop an import."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else str(value)
    return compact(value)


@dataclass
class JournalState:
    file: str
    run_id: str
    offset: int = 0
    seq: int = -1  # seq of the last applied record
    last_hash: str | None = None
    error: str | None = None


class ChainError(Exception):
    def __init__(self, seq: int, message: str, prev_mismatch: bool = False) -> None:
        super().__init__(f"line {seq + 1}: {message}")
        self.seq = seq
        self.prev_mismatch = prev_mismatch


def check_record(line: bytes, seq: int, prev: str | None, run_id: str) -> dict[str, Any]:
    """Parse and validate line number seq+1; raise ChainError with a message that depends on the bytes only."""
    try:
        rec = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        raise ChainError(seq, "not valid JSON") from None
    if not isinstance(rec, dict):
        raise ChainError(seq, "not a JSON object")
    if rec.get("seq") != seq:
        raise ChainError(seq, f"seq is {rec.get('seq')!r}, expected {seq}")
    if rec.get("prev") != prev:
        raise ChainError(seq, "prev hash does not match the previous line", prev_mismatch=True)
    if rec.get("run") != run_id:
        raise ChainError(seq, f"run is {rec.get('run')!r}, expected {run_id!r}")
    kind = rec.get("type")
    if kind not in RECORD_TYPES or (kind == "header") != (seq == 0):
        raise ChainError(seq, f"unexpected record type {kind!r}")
    if not isinstance(rec.get("t"), str):
        raise ChainError(seq, "missing time")
    if kind == "header" and not isinstance(rec.get("header"), dict):
        raise ChainError(seq, "header is not an object")
    if kind == "batch":
        units = rec.get("units")
        if not isinstance(units, list) or not all(isinstance(u, dict) and "id" in u for u in units):
            raise ChainError(seq, "units is not a list of objects with an id")
    if (kind in ("checkpoint", "close") or "counts" in rec) and not isinstance(rec.get("counts"), dict):
        raise ChainError(seq, "counts is not an object")
    if kind == "close" and rec.get("status") not in STATUSES:
        raise ChainError(seq, f"unknown status {rec.get('status')!r}")
    return rec


def header_row(run_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    header = rec["header"]
    slurm = header.get("slurm") if isinstance(header.get("slurm"), dict) else {}
    details = header.get("model_details") if isinstance(header.get("model_details"), dict) else {}
    study = header.get("study") if isinstance(header.get("study"), dict) else {}
    row: dict[str, Any] = {"run_id": run_id}
    row.update({col: scalar(header.get(col)) for col in HEADER_COLUMNS})
    row.update(
        hosts=_json_or_null(header.get("hosts")),
        options=_json_or_null(header.get("options")),
        slurm_job_id=_text(slurm.get("job_id")),
        slurm_array_job_id=_text(slurm.get("array_job_id")),
        slurm_array_task_id=_text(slurm.get("array_task_id")),
        started_at=scalar(header.get("started_at")) or rec["t"],
        ended_at=None,
        recorded_status="running",
        last_error=None,
        last_seen_at=rec["t"],
        extra_counts=None,
        header=compact({k: v for k, v in header.items() if k != "toml_text"}),
        status="running",
        quantization=_text(details.get("quantization_level")),
        parameter_size=_text(details.get("parameter_size")),
        shard=_shard(header.get("shard")),
        study=_text(study.get("name")),
        cell=_text(study.get("cell")),
    )
    row.update({key: 0 for key in COUNT_KEYS})
    row["total"] = scalar(header.get("total"))
    return row


def _shard(value: Any) -> str | None:
    """`I/N` as --shard takes it, from the header's {"index": I, "count": N}; anything else as text."""
    if isinstance(value, dict) and isinstance(value.get("index"), int) and isinstance(value.get("count"), int):
        return f"{value['index']}/{value['count']}"
    return _text(scalar(value))


def _json_or_null(value: Any) -> str | None:
    return None if value is None else compact(value)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def counts_update(counts: dict[str, Any]) -> dict[str, Any]:
    update = {key: scalar(counts[key]) for key in COUNT_KEYS if key in counts}
    extra = {k: v for k, v in counts.items() if k not in COUNT_KEYS}
    update["extra_counts"] = compact(extra) if extra else None
    return update


def unit_row(run_id: str, u: dict[str, Any]) -> tuple:
    answer = u.get("answer")
    return (
        run_id, str(u["id"]), u.get("outcome"), None if answer is None else compact(answer), u.get("attempts"),
        u.get("latency_ms"), u.get("tokens_in"), u.get("tokens_out"), 1 if u.get("truncated") else 0,
        u.get("error"), u.get("host"),
    )  # fmt: skip


class Importer:
    """One pass over the journal dir. `check_lease` runs before every commit and raises if we lost the lease."""

    def __init__(self, conn: sqlite3.Connection, journal_dir: Path, check_lease: Callable[[], None]) -> None:
        self.conn = conn
        self.journal_dir = journal_dir
        self.check_lease = check_lease
        self._pending_bytes = 0

    # -- transactions ----------------------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self.conn.in_transaction:
            # IMMEDIATE: take the write lock now, rather than fail to upgrade a read lock halfway through.
            self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self.conn.in_transaction:
            self.check_lease()
            self.conn.execute("COMMIT")
        self._pending_bytes = 0

    def _maybe_commit(self, nbytes: int) -> None:
        self._pending_bytes += nbytes
        if self._pending_bytes >= TXN_BYTES:
            self._commit()
        else:
            self.check_lease()  # keeps the heartbeat going on slow filesystems, and stops early if we lost it

    # -- the pass ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Import everything new; returns how many journal files had new data."""
        states = {
            row[0]: JournalState(row[0], row[1], row[2], -1 if row[3] is None else row[3], row[4], row[5])
            for row in self.conn.execute("select file, run_id, offset, seq, last_hash, error from journals")
        }
        try:
            entries = list(os.scandir(self.journal_dir))
        except FileNotFoundError:
            return 0
        touched = 0
        try:
            for entry in sorted(entries, key=lambda e: e.name):
                if not entry.name.endswith(SUFFIX) or entry.name.startswith("."):
                    continue
                state = states.get(entry.name)
                if state is not None and state.error is not None:
                    continue  # a broken chain stays broken; `ledger rebuild` re-reads it
                try:
                    # the cheap test that skips the thousands of finished journals; a link or a FIFO is no journal
                    # (a link to /dev/zero, a FIFO that never ends), and is never read
                    regular = entry.is_file(follow_symlinks=False)
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                if state is None:
                    state = JournalState(entry.name, entry.name[: -len(SUFFIX)])
                if not regular:
                    self._begin()
                    state.error = "not a regular file (a link, a FIFO or a device): never read"
                    self._save(state)
                    continue
                if size == state.offset:
                    continue
                touched += 1
                if size < state.offset:
                    self._begin()
                    state.error = f"journal shrank below the imported offset {state.offset}"
                    self._save(state)
                    continue
                self._import_file(Path(entry.path), state, size)
            self._commit()
            self._store_study_scans()
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return touched

    def _store_study_scans(self) -> None:
        """What `ledger study` reads of each closed (or crashed) run of a study that has no row yet, or one worked out
        at another line of its journal (records came since, or it was reset): see ledger.study.store_scan. Runs
        imported before the tables existed get theirs here too. One pass over the run's units, the JSON read once.
        Not for a run still running: its row would be worked out again at every import. A run taken for crashed
        that writes again only makes its row another line's, which `ledger study` does not read."""
        due = self.conn.execute(
            "select r.run_id, r.header, j.seq from runs r join journals j on j.run_id = r.run_id "
            "left join study_scans s on s.run_id = r.run_id where r.study is not null "
            "and (r.recorded_status != 'running' or r.status = 'crashed') "
            "and (s.run_id is null or s.seq is not j.seq)").fetchall()
        if not due:
            return
        from .study import store_scan  # only when a study's run closed: a run's closing import stays light

        for run_id, header, seq in due:
            self._begin()
            try:
                parsed = json.loads(header) if header else {}
            except ValueError:
                parsed = {}
            self._maybe_commit(store_scan(self.conn, run_id, parsed if isinstance(parsed, dict) else {}, seq))
        self._commit()

    def _save(self, s: JournalState) -> None:
        self.conn.execute(
            "insert or replace into journals (file, run_id, offset, seq, last_hash, error) values (?, ?, ?, ?, ?, ?)",
            (s.file, s.run_id, s.offset, None if s.seq < 0 else s.seq, s.last_hash, s.error),
        )

    def _import_file(self, path: Path, state: JournalState, size: int) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            return
        except OSError:  # swapped for a link since it was listed
            return
        try:
            max_seq: int | None = None
            first_error: str | None = None
            while True:
                try:
                    self._import_range(fd, state, size, max_seq)
                    break
                except ChainError as err:
                    self._begin()
                    # A re-import stops before the previous break, so a break it finds is an earlier one: that one
                    # is what a rebuild would report.
                    first_error = str(err)
                    if not (err.prev_mismatch and err.seq >= 1):
                        break
                    # Line err.seq-1 is suspect and was applied: start the run over, keeping lines up to err.seq-2.
                    for table in ("units", "timeline", "runs", "study_scans", "study_labels"):
                        self.conn.execute(f"delete from {table} where run_id = ?", (state.run_id,))
                    state.offset, state.seq, state.last_hash = 0, -1, None
                    max_seq = err.seq - 2
            if first_error is not None:
                self._begin()
                state.error = first_error
                self._save(state)
        finally:
            os.close(fd)

    def _import_range(self, fd: int, state: JournalState, size: int, max_seq: int | None) -> None:
        chunk = CHUNK_BYTES
        while state.offset < size and (max_seq is None or state.seq < max_seq):
            buf = os.pread(fd, min(chunk, size - state.offset), state.offset)
            end = buf.rfind(b"\n") + 1
            if end == 0:
                if state.offset + len(buf) >= size:
                    return  # a line still being written (or cut by a crash): leave it for later
                chunk *= 2  # one record longer than a chunk
                continue
            records: list[dict[str, Any]] = []
            pos = 0
            seq, prev = state.seq, state.last_hash
            error: ChainError | None = None
            while pos < end and (max_seq is None or seq < max_seq):
                nl = buf.index(b"\n", pos)
                line = buf[pos:nl]
                try:
                    records.append(check_record(line, seq + 1, prev, state.run_id))
                except ChainError as err:
                    error = err
                    break
                seq, prev, pos = seq + 1, line_hash(line), nl + 1
            if records:
                self._begin()
                self._apply(state.run_id, records)
                state.offset, state.seq, state.last_hash = state.offset + pos, seq, prev
                self._save(state)
            if error is not None:
                raise error
            self._maybe_commit(pos)

    def _apply(self, run_id: str, records: list[dict[str, Any]]) -> None:
        # Records of one chunk are folded into one insert per table and one update of the run row; applying them
        # one by one in seq order would give the same row, only slower.
        units: list[tuple] = []
        timeline: list[tuple] = []
        update: dict[str, Any] = {}
        for rec in records:
            kind = rec["type"]
            if kind == "header":
                row = header_row(run_id, rec)
                cols = ", ".join(f'"{c}"' for c in row)
                marks = ", ".join("?" for _ in row)
                self.conn.execute(f"insert or replace into runs ({cols}) values ({marks})", list(row.values()))
                continue
            update["last_seen_at"] = rec["t"]
            if kind == "batch":
                units.extend(unit_row(run_id, u) for u in rec["units"])
                timeline.append((run_id, rec["seq"], rec["t"], len(rec["units"]), None))
                if "counts" in rec:
                    update.update(counts_update(rec["counts"]))
            else:
                update.update(counts_update(rec["counts"]))
                timeline.append((run_id, rec["seq"], rec["t"], None, scalar(rec["counts"].get("done"))))
                if kind == "close":
                    update.update(recorded_status=rec["status"], status=rec["status"], ended_at=rec["t"],
                                  last_error=scalar(rec.get("last_error")))
                    if isinstance(rec.get("facts"), dict):
                        facts = rec["facts"]
                        self.conn.execute("update runs set header = json_patch(coalesce(header, '{}'), ?) where run_id = ?",
                                          (json.dumps({"at_end": facts}), run_id))
        if units:
            try:
                self.conn.executemany(UNIT_SQL, units)
            except (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError):
                # Some value sqlite cannot bind (a dict, a huge int): redo this chunk with every value coerced.
                # INSERT OR REPLACE makes the rows that went in before the failure harmless.
                self.conn.executemany(UNIT_SQL, [tuple(scalar(v) for v in row) for row in units])
        if timeline:
            self.conn.executemany(TIMELINE_SQL, timeline)
        if update:
            sets = ", ".join(f'"{c}" = ?' for c in update)
            self.conn.execute(f"update runs set {sets} where run_id = ?", [*update.values(), run_id])
