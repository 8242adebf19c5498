"""Notes in a SQLite file (the demo workspace, a laptop). Results go into a table of the same file.

SQLite in rollback-journal mode lets no writer commit while a reader's statement is open, so this source never keeps
a statement open between chunks: it pages through the to-do units by key (keyset pagination), one short query each.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime
from typing import Any

from app.errors import SourceError
from app.experiment import Experiment
from app.sources.base import ResultRow, RunStamp, Source, Unit
from app.sources.runlock import FileRunLock, Holder, RunLocked, lock_key
from app.sources.seed import build_from_csv, plain_integer

CHUNK_ROWS = 500
BUSY_TIMEOUT_MS = 30_000  # a statement waits this long for a lock another connection holds
WRITE_WAIT_S = 30.0  # a results write waits as long, and says so while it does
LOCK_TRY_MS = 1_000
_TYPES = {"choice": "TEXT", "text": "TEXT", "bool": "INTEGER", "int": "INTEGER", "number": "REAL"}


def _text_or_bytes(raw: bytes) -> str | bytes:
    """SQLite lets TEXT hold any bytes; the default text factory would fail the whole chunk on one bad note.
    Undecodable text comes back as bytes, which the note decoder replaces and counts."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class SqliteSource(Source):
    placeholder = "?"

    def __init__(self, exp: Experiment, create: bool = False):
        super().__init__(exp)
        path = exp.sqlite_path
        assert path is not None
        if not path.exists() and exp.seed_csv_path is not None:
            build_from_csv(path, exp.seed_csv_path, self.src.table or "notes")
        if not path.exists() and not create:
            raise SourceError(f"{exp.path}: source.path: no SQLite database at {path} — fix the path")
        try:
            self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.text_factory = _text_or_bytes
            self.conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            # a second connection for writes, so a reader in one thread never shares a transaction with a writer
            self.writer = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self.writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.DatabaseError as exc:
            raise SourceError(f"{exp.path}: source.path: {path} is not a usable SQLite database ({exc}) — point path "
                              "at the SQLite file that holds the notes") from None
        self._run_lock: FileRunLock | None = None
        self._check_columns()

    def q(self, name: str) -> str:
        return '"' + name + '"'

    def id_values(self, typed: str) -> list[Any]:
        # SQLite converts '5' to 5 only for a column of INTEGER or NUMERIC affinity: a column declared without a
        # type (a table made from a CSV), a BLOB column, or an expression of a query keeps integer 5 and text '5'
        # apart. So ask for each value that shows as the id typed: the text, the integer, the real, the bytes
        values: list[Any] = [typed]
        integer = plain_integer(typed)
        if integer is not None:
            values.append(integer)
        else:
            try:
                real = float(typed)
            except ValueError:
                real = None
            if real is not None and math.isfinite(real) and str(real) == typed:
                values.append(real)
        values.append(typed.encode("utf-8", "replace"))
        return values

    def _check_columns(self) -> None:
        # SQLite reads a double-quoted name it does not know as a string literal, so ask for the columns by name
        try:
            cur = self.conn.execute(f"SELECT * FROM {self.from_sql()} LIMIT 0")
            missing = self.missing_source_columns([d[0] for d in cur.description])
            cur.close()
            if not missing:
                self.conn.execute(f"SELECT * FROM ({self.inner_sql()}) s LIMIT 0").close()
        except sqlite3.OperationalError as exc:
            raise SourceError(f"{self.exp.path}: [source]: the database rejected the notes query: {exc} "
                              f"— check table, query, where and the column names") from None
        if missing:
            raise SourceError(f"{self.exp.path}: [source]: the database rejected the notes query: no column "
                              f"{', '.join(missing)} in {self.src.table or 'the query'} — check the column names")

    def fetch_all(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise SourceError(f"{self.exp.path}: [source]: the database rejected the query: {exc}") from None

    def column_names(self, sql: str) -> list[str]:
        try:
            cur = self.conn.execute(sql)
        except sqlite3.OperationalError as exc:
            raise SourceError(f"{self.exp.path}: [source]: the database rejected the query: {exc}") from None
        names = [d[0] for d in cur.description]
        cur.close()
        return names

    def database_label(self) -> str | None:
        return str(self.exp.sqlite_path)

    def results_table_exists(self) -> bool:
        name = self.results_table.split(".")[-1]
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def iter_chunks(self, rerun_invalid: bool, limit: int | None, run_id: str | None = None,
                    resume_skip: Callable[[], frozenset[tuple]] | None = None) -> Generator[list[Unit], None, None]:
        # a local file does not drop its connection: resume_skip is never needed here
        exists = self.results_table_exists()
        base = self.todo_sql(rerun_invalid, exists, run_id)
        base_params = self.todo_params(exists, rerun_invalid, run_id)
        keys = [f"s.{self.q(c)}" for c in self.key_columns]
        order = ", ".join(keys + [f"s.{self.q(c)}" for c in self.src.order_by])
        after = f" AND ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
        last: tuple | None = None
        produced = 0
        rows_wanted = CHUNK_ROWS
        while limit is None or produced < limit:
            sql = base + (after if last is not None else "") + f" ORDER BY {order} LIMIT {rows_wanted}"
            params: tuple = base_params + (last or ())
            rows = self.conn.execute(sql, params).fetchall()
            if not rows:
                return
            full = len(rows) == rows_wanted
            if self.grouped and full:
                # the last group may continue past this chunk: keep it for the next one
                tail_key = tuple(rows[-1][:len(keys)])
                cut = len(rows)
                while cut > 0 and tuple(rows[cut - 1][:len(keys)]) == tail_key:
                    cut -= 1
                if cut == 0:
                    rows_wanted *= 2  # one group larger than a chunk: ask for more rows
                    continue
                rows = rows[:cut]
            units = self.rows_to_units(rows)
            if limit is not None:
                units = units[: limit - produced]
            produced += len(units)
            last = units[-1].key if units else last
            if units:
                yield units
            rows_wanted = CHUNK_ROWS
            if not full:
                return

    def existing_result_columns(self) -> set[str] | None:
        if not self.results_table_exists():
            return None
        return {r[1].lower() for r in self.conn.execute(f"PRAGMA table_info({self.qualified(self.results_table)})")}

    def unique_keys(self) -> list[list[str]]:
        table = self.qualified(self.results_table)
        out = []
        for row in self.conn.execute(f"PRAGMA index_list({table})"):
            if row[2]:  # unique (a UNIQUE constraint, or the primary key's index)
                out.append([r[2].lower() for r in self.conn.execute(f"PRAGMA index_info({self.q(row[1])})")])
        return out

    def ensure_results_table(self) -> None:
        table = self.qualified(self.results_table)
        if self.check_results_table():
            return
        cols = ["experiment TEXT NOT NULL"] + [f"{self.q(c)}" for c in self.key_columns]
        cols += [f"{self.q(n)} {_TYPES[f.type]}" for n, f in self.answer.fields.items()]
        cols += ["valid INTEGER NOT NULL", "attempts INTEGER NOT NULL", "truncated INTEGER NOT NULL DEFAULT 0",
                 "run_id TEXT NOT NULL", "model TEXT", "prompt_hash TEXT", "created_at TEXT NOT NULL"]
        uniq = ", ".join(["experiment"] + [self.q(c) for c in self.key_columns])
        try:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)}, UNIQUE ({uniq}))")
        except sqlite3.OperationalError as exc:
            raise SourceError(f"{self.exp.path}: results.table: cannot create {self.results_table} ({exc}) — the "
                              "results table lives in the notes database: give a plain table name") from None

    def write_results(self, stamp: RunStamp, rows: Sequence[ResultRow]) -> None:
        cols = self.result_columns()
        conflict = ", ".join(self.q(c) for c in ["experiment"] + self.key_columns)
        updates = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in cols[1 + len(self.key_columns):])
        sql = (f"INSERT INTO {self.qualified(self.results_table)} ({', '.join(self.q(c) for c in cols)}) "
               f"VALUES ({', '.join('?' * len(cols))}) ON CONFLICT ({conflict}) DO UPDATE SET {updates}")
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        params = self.result_params(stamp, rows, now)
        since = time.monotonic()
        self._under_lock("BEGIN IMMEDIATE", since)
        try:
            self.writer.executemany(sql, params)
            self._under_lock("COMMIT", since)
        except BaseException:
            if self.writer.in_transaction:
                self.writer.execute("ROLLBACK")
            raise

    def _under_lock(self, statement: str, since: float) -> None:
        """BEGIN IMMEDIATE or COMMIT of a results write: a lock another program holds on the file (a write under way,
        a browser open on it) is waited for as the busy timeout would, WRITE_WAIT_S from `since`, but a second at a
        time, so the run can say what it waits for. A COMMIT refused as busy leaves the transaction open to retry."""
        self.writer.execute(f"PRAGMA busy_timeout = {LOCK_TRY_MS}")
        try:
            while True:
                try:
                    self.writer.execute(statement)
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() - since >= WRITE_WAIT_S:
                        raise
                    self.tell_write_waiting(f"{exc}: another program holds a lock on the file", since,
                                            since + WRITE_WAIT_S)
        finally:
            self.writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def lock_run(self, run_id: str) -> Holder | None:
        path = self.exp.sqlite_path
        assert path is not None
        key = lock_key(self.results_table, self.exp.name, self.shard)[:12]
        lock = FileRunLock(path.with_name(f"{path.name}.notes-tui-{key}.lock"))
        try:
            taken, holder = lock.acquire(Holder.me(run_id))
        except OSError as exc:
            raise SourceError(f"{self.exp.path}: source.path: cannot take the run lock next to {path} "
                              f"({exc.strerror}) — the database's directory must be writable") from None
        if not taken:
            raise RunLocked(str(self.exp.path), self.exp.name, self.results_table, holder)
        self._run_lock = lock
        return holder

    def delete_rows(self, run_id: str, keys: Sequence[tuple]) -> None:
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            self.writer.executemany(self.delete_sql(), [(self.exp.name, run_id, *k) for k in keys])
        except BaseException:
            self.writer.execute("ROLLBACK")
            raise
        self.writer.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
        self.writer.close()
        if self._run_lock is not None:
            self._run_lock.release()


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Locked by another connection (SQLITE_BUSY, SQLITE_LOCKED and their extended codes), not a refused statement."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)
