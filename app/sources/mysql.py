"""Notes in MySQL/MariaDB (the SOP's setup). Results go to a table of the same database.

Reading uses a server-side streaming cursor (SSCursor) on its own connection, so 200,000 notes never sit in memory;
writing uses a second connection, one transaction per batch, with `INSERT … ON DUPLICATE KEY UPDATE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime

import pymysql
import pymysql.cursors
from pymysql.constants import FIELD_TYPE

from app.errors import SourceError
from app.experiment import Experiment
from app.sources.base import ResultRow, RunStamp, Source, Unit
from app.sources.runlock import Holder, RunLocked, lock_key

FETCH_ROWS = 500
# A database that goes away (a restart for maintenance, a failover) is waited for this long, reconnecting with a
# back-off of 1, 2, 4, 8, then every 10 s; a longer outage fails the run (a rerun finishes it)
RECONNECT_FOR_S = 120.0
_TYPES = {"choice": "VARCHAR(255)", "text": "MEDIUMTEXT", "bool": "TINYINT(1)", "int": "BIGINT", "number": "DOUBLE"}
_INT_CODES = {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG, FIELD_TYPE.INT24,
              FIELD_TYPE.YEAR}
# server gone, lost during query, lost/killed, idle-timeout, cannot connect (yet), shutting down
_LOST = {2006, 2013, 2055, 1927, 4031, 2002, 2003, 1053}
LOCK_TABLE = "notes_tui_locks"  # who holds which run lock: for the refusal line, and to find a killed holder


class MySQLSource(Source):
    placeholder = "%s"

    def __init__(self, exp: Experiment):
        super().__init__(exp)
        assert exp.mysql is not None
        self.creds = exp.mysql
        self._reader: pymysql.connections.Connection | None = self._connect()
        self.writer: pymysql.connections.Connection | None = None
        self._lock_name: str | None = None
        self._holder: Holder | None = None
        self._check_columns()

    def q(self, name: str) -> str:
        return "`" + name + "`"

    def shard_sql(self, key_exprs: list[str], index: int, count: int) -> str:
        # CHAR(31) between the key parts: ("a1", "") and ("a", "1") must not hash alike
        return f"MOD(CRC32(CONCAT_WS(CHAR(31), {', '.join(key_exprs)})), {int(count)}) = {int(index)}"

    @property
    def reader(self) -> pymysql.connections.Connection:
        if self._reader is None:
            self._reader = self._connect(explain=False)
        return self._reader

    def _connect(self, explain: bool = True) -> pymysql.connections.Connection:
        """A new connection. At start a refusal is the user's to fix (`explain`: one line, exit 2); during a run the
        raw error goes to the retry logic, since a server that restarts refuses us for a few seconds."""
        c = self.creds
        try:
            conn = pymysql.connect(host=c.host, port=c.port, user=c.user, password=c.password.get_secret_value(),
                                   database=c.database, charset="utf8mb4", connect_timeout=10, autocommit=False)
        except pymysql.err.MySQLError as exc:
            if not explain:
                raise
            raise SourceError(self._explain(exc)) from None
        with conn.cursor() as cur:
            # a streaming read waits on the model for hours; the server must not drop it for being slow to read
            cur.execute("SET SESSION net_write_timeout = 86400, SESSION net_read_timeout = 3600")
        return conn

    def _explain(self, exc: Exception) -> str:
        code = exc.args[0] if exc.args else None
        c = self.creds
        where = f"{self.exp.path}: [source] mysql {c.user}@{c.host}:{c.port}/{c.database}"
        if code in (1045, 1698, 1044):  # wrong password; no password given where one is needed; no right to the db
            return f"{where}: access denied — check DB_USER and DB_PASS"
        if code in (2003, 2005):
            return f"{where}: cannot reach the server — check DB_HOST and DB_PORT, and that the server runs"
        if code == 1049:
            return f"{where}: unknown database — check DB_NAME or [source].database"
        if code in (1146, 1054, 1064, 1052):
            detail = exc.args[1] if len(exc.args) > 1 else ""
            return f"{where}: the database rejected the notes query ({detail}) — check table, query, where and columns"
        return f"{where}: {exc.__class__.__name__} {code} — check the connection settings"

    def _check_columns(self) -> None:
        try:
            with self.reader.cursor() as cur:
                cur.execute(f"SELECT * FROM ({self.inner_sql()}) s LIMIT 0")
                self._key_types = {d[0]: d[1] for d in cur.description}
        except pymysql.err.MySQLError as exc:
            raise SourceError(self._explain(exc)) from None

    def fetch_all(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with self.reader.cursor() as cur:
                cur.execute(sql, params)
                rows = list(cur.fetchall())
            self.reader.commit()  # end the read snapshot, so the next query sees what the writer committed
        except pymysql.err.MySQLError as exc:
            raise SourceError(self._explain(exc)) from None
        return rows

    def column_names(self, sql: str) -> list[str]:
        try:
            with self.reader.cursor() as cur:
                cur.execute(sql)
                names = [d[0] for d in cur.description]
                cur.fetchall()
            self.reader.commit()
        except pymysql.err.MySQLError as exc:
            raise SourceError(self._explain(exc)) from None
        return names

    def database_label(self) -> str | None:
        return f"{self.creds.host}:{self.creds.port}/{self.creds.database}"

    def results_table_exists(self) -> bool:
        parts = self.results_table.split(".")
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else (self.creds.database, parts[0])
        with self.reader.cursor() as cur:
            cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                        (schema, name))
            found = cur.fetchone() is not None
        self.reader.commit()  # end the read snapshot, so the next query sees what the writer committed since
        return found

    def iter_chunks(self, rerun_invalid: bool, limit: int | None, run_id: str | None = None,
                    resume_skip: Callable[[], frozenset[tuple]] | None = None) -> Generator[list[Unit], None, None]:
        produced = 0
        skip: frozenset[tuple] = frozenset()
        failures = 0
        while True:
            try:
                rest = None if limit is None else limit - produced
                for units in self._stream(rerun_invalid, rest, run_id):
                    if skip:
                        units = [u for u in units if u.key not in skip]
                    produced += len(units)
                    failures = 0
                    if units:
                        yield units
                return
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                # a killed or timed-out read loses nothing: read the to-do list again (the anti-join leaves out
                # what is committed) and skip what this run already holds
                self._drop_reader()  # a connection lost before the stream began is not dropped by _stream
                if failures == 0:
                    lost_at = time.monotonic()
                failures += 1
                if resume_skip is None or not _lost(exc) or time.monotonic() - lost_at > RECONNECT_FOR_S:
                    raise
                time.sleep(_backoff(failures))
                skip = resume_skip()

    def _stream(self, rerun_invalid: bool, limit: int | None, run_id: str | None) -> Generator[list[Unit], None, None]:
        exists = self.results_table_exists()
        sql = self.todo_sql(rerun_invalid, exists, run_id)
        if self.grouped:
            order = [f"s.{self.q(c)}" for c in self.key_columns + self.src.order_by]
            sql += " ORDER BY " + ", ".join(order)
        if limit is not None and not self.grouped:
            sql += f" LIMIT {int(limit)}"
        cur = self.reader.cursor(pymysql.cursors.SSCursor)
        finished = False
        try:
            cur.execute(sql, self.todo_params(exists, rerun_invalid, run_id))
            produced = 0
            carry: list[tuple] = []
            nkey = len(self.key_columns)
            while limit is None or produced < limit:
                rows = cur.fetchmany(FETCH_ROWS)
                if not rows and not carry:
                    finished = True
                    return
                if self.grouped:
                    more = len(rows) == FETCH_ROWS
                    rows = carry + list(rows)
                    carry = []
                    if more:  # the last group may go on in the next fetch: hold it back
                        tail = tuple(rows[-1][:nkey])
                        cut = len(rows)
                        while cut > 0 and tuple(rows[cut - 1][:nkey]) == tail:
                            cut -= 1
                        rows, carry = rows[:cut], rows[cut:]
                units = self.rows_to_units(rows)
                if limit is not None:
                    units = units[: limit - produced]
                produced += len(units)
                if units:
                    yield units
        finally:
            if finished:
                cur.close()
                self.reader.commit()
            else:
                # stopped early (SIGTERM, --limit) or the connection broke: closing the cursor would first read
                # every row still streaming, minutes for a big table; drop the connection, reopen it when needed
                result = getattr(cur, "_result", None)
                if result is not None:
                    result.unbuffered_active = False  # nothing left to drain on a connection we close
                self._drop_reader()

    def existing_result_columns(self) -> set[str] | None:
        if not self.results_table_exists():
            return None
        parts = self.results_table.split(".")
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else (self.creds.database, parts[0])
        with self.reader.cursor() as cur:
            cur.execute("SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = %s AND table_name = %s", (schema, name))
            existing = {r[0].lower() for r in cur.fetchall()}
        self.reader.commit()
        return existing

    def _schema_and_name(self) -> tuple[str, str]:
        parts = self.results_table.split(".")
        return (parts[0], parts[1]) if len(parts) == 2 else (self.creds.database, parts[0])

    def unique_keys(self) -> list[list[str]]:
        schema, name = self._schema_and_name()
        with self.reader.cursor() as cur:
            cur.execute("SELECT index_name, column_name FROM information_schema.statistics WHERE table_schema = %s "
                        "AND table_name = %s AND non_unique = 0 ORDER BY index_name, seq_in_index", (schema, name))
            rows = cur.fetchall()
        self.reader.commit()
        keys: dict[str, list[str]] = {}
        for index, column in rows:
            keys.setdefault(index, []).append(column.lower())
        return list(keys.values())

    def unfit_answer_columns(self) -> list[str]:
        """Answer columns found only at the first batch before (an INT `response`, a VARCHAR(5) `explanation`)."""
        schema, name = self._schema_and_name()
        with self.reader.cursor() as cur:
            cur.execute("SELECT column_name, data_type, character_maximum_length FROM information_schema.columns "
                        "WHERE table_schema = %s AND table_name = %s", (schema, name))
            types = {c.lower(): (t.lower(), n) for c, t, n in cur.fetchall()}
        self.reader.commit()
        out = []
        texts = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
        numbers = {"tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float", "double"}
        for field, spec in self.answer.fields.items():
            kind, length = types.get(field.lower(), ("", None))
            if spec.type in ("choice", "text"):
                need = max(len(c) for c in spec.choices or [""]) if spec.type == "choice" else spec.max_length or 0
                if kind not in texts:
                    out.append(f"column {field} is {kind.upper()}, and {field} answers are text")
                elif length is not None and length < need:
                    out.append(f"column {field} holds {length} characters, and a {field} answer may have {need}")
            elif kind not in numbers:
                out.append(f"column {field} is {kind.upper()}, and {field} answers are {spec.type}s")
        return out

    def ensure_results_table(self) -> None:
        table = self.qualified(self.results_table)
        try:
            if self.check_results_table():
                return
            cols = ["`experiment` VARCHAR(191) NOT NULL"]  # leaves room for long ids in the 3072-byte unique key
            declared = self._declared_key_types()
            cols += [f"{self.q(c)} {declared.get(c) or self._key_type(c)}" for c in self.key_columns]
            cols += [f"{self.q(n)} {_TYPES[f.type]} NULL" for n, f in self.answer.fields.items()]
            cols += ["`valid` TINYINT(1) NOT NULL", "`attempts` INT NOT NULL", "`truncated` TINYINT(1) NOT NULL DEFAULT 0",
                     "`run_id` VARCHAR(32) NOT NULL", "`model` VARCHAR(255)", "`prompt_hash` CHAR(64)",
                     "`created_at` DATETIME(6) NOT NULL"]
            uniq = ", ".join(["`experiment`"] + [self.q(c) for c in self.key_columns])
            with self.reader.cursor() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)}, "
                            f"UNIQUE KEY `uq_experiment_unit` ({uniq})) CHARACTER SET utf8mb4")
            self.reader.commit()
        except pymysql.err.MySQLError as exc:
            raise SourceError(f"{self.exp.path}: results.table: cannot create {self.results_table}: "
                              f"{exc.args[-1] if exc.args else exc} — check the name and your CREATE privilege") from None

    def _declared_key_types(self) -> dict[str, str]:
        """The id columns' exact types and collations in the source. The anti-join compares them with the results
        table's, and MySQL refuses `=` between two collations (utf8mb4_unicode_ci vs utf8mb4_general_ci: error 1267)."""
        keys = ", ".join(self.q(c) for c in self.key_columns)
        out: dict[str, str] = {}
        try:
            with self.reader.cursor() as cur:
                cur.execute("DROP TEMPORARY TABLE IF EXISTS `notes_tui_key_types`")
                cur.execute(f"CREATE TEMPORARY TABLE `notes_tui_key_types` AS SELECT {keys} FROM ({self.inner_sql()}) s LIMIT 0")
                cur.execute("SHOW FULL COLUMNS FROM `notes_tui_key_types`")
                for field, ctype, collation, *_ in cur.fetchall():
                    ctype = ctype.lower()
                    if "text" in ctype or ctype.startswith("enum") or ctype.startswith("set"):
                        ctype = "varchar(255)"  # a key needs a bounded length
                    elif "blob" in ctype:
                        ctype = "varbinary(255)"
                    out[field] = ctype + (f" COLLATE {collation}" if collation else "")
                cur.execute("DROP TEMPORARY TABLE `notes_tui_key_types`")
        except pymysql.err.MySQLError:
            return {}  # no right to create temporary tables: fall back to the result set's type codes
        return out

    def _key_type(self, column: str) -> str:
        code = self._key_types.get(column)
        if code in _INT_CODES:
            return "BIGINT"
        if code == FIELD_TYPE.DATE:
            return "DATE"
        if code in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
            return "DATETIME(6)"
        return "VARCHAR(255)"

    def write_results(self, stamp: RunStamp, rows: Sequence[ResultRow]) -> None:
        cols = self.result_columns()
        updates = ", ".join(f"{self.q(c)} = VALUES({self.q(c)})" for c in cols[1 + len(self.key_columns):])
        sql = (f"INSERT INTO {self.qualified(self.results_table)} ({', '.join(self.q(c) for c in cols)}) "
               f"VALUES ({', '.join(['%s'] * len(cols))}) ON DUPLICATE KEY UPDATE {updates}")
        params = self.result_params(stamp, rows, datetime.now(UTC).replace(tzinfo=None))
        lost_at: float | None = None
        attempt = 0
        while True:
            try:
                if self.writer is None:
                    self.writer = self._connect(explain=False)
                    self._relock()
                with self.writer.cursor() as cur:
                    cur.executemany(sql, params)
                self.writer.commit()
                return
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                # a lost connection loses only this uncommitted batch; the upsert is idempotent, so send it again
                lost_at = lost_at or time.monotonic()
                if not _lost(exc) or time.monotonic() - lost_at > RECONNECT_FOR_S:
                    raise
                self.tell_write_waiting(_said(exc), lost_at, lost_at + RECONNECT_FOR_S)
                self._drop_writer()
                attempt += 1
                time.sleep(_backoff(attempt))

    # -- the run lock (app/sources/runlock.py): GET_LOCK on the writer connection, so it goes with every write ----
    def _lock_schema(self) -> str:
        parts = self.results_table.split(".")
        return parts[0] if len(parts) == 2 else self.creds.database

    def lock_run(self, run_id: str) -> Holder | None:
        schema = self._lock_schema()
        name = "notes-tui:" + lock_key(f"{schema}.{self.results_table.split('.')[-1]}", self.exp.name, self.shard)[:40]
        self.writer = self._connect()
        try:
            with self.writer.cursor() as cur:
                cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
                got = cur.fetchone()[0] == 1
            if not got:
                raise self._refusal(name)
            self._lock_name, self._holder = name, Holder.me(run_id)
            left = self._lock_record(name)
            self._write_lock_record()
        except pymysql.err.MySQLError as exc:
            raise SourceError(self._explain(exc)) from None
        return left

    def _refusal(self, name: str) -> RunLocked:
        holder, conn_id = None, None
        try:
            with self.writer.cursor() as cur:  # type: ignore[union-attr]
                cur.execute("SELECT IS_USED_LOCK(%s)", (name,))
                conn_id = cur.fetchone()[0]
                holder = self._lock_record(name, conn_id)
        except pymysql.err.MySQLError:
            pass
        return RunLocked(str(self.exp.path), self.exp.name, self.results_table, holder,
                         f"database connection {conn_id}" if conn_id else "")

    def _lock_table(self) -> str:
        return f"{self.q(self._lock_schema())}.{self.q(LOCK_TABLE)}"

    def _lock_record(self, name: str, conn_id: int | None = None) -> Holder | None:
        """The holder the lock table names (for a live holder: only if it is that connection)."""
        assert self.writer is not None
        sql = f"SELECT run_id, host, pid, started_at FROM {self._lock_table()} WHERE lock_name = %s"
        params: tuple = (name,)
        if conn_id is not None:
            sql += " AND connection_id = %s"
            params += (conn_id,)
        try:
            with self.writer.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
            self.writer.commit()
        except pymysql.err.ProgrammingError:  # no lock table yet: nobody ever held a lock here
            self.writer.rollback()
            return None
        return Holder(*row) if row else None

    def _write_lock_record(self) -> None:
        assert self.writer is not None and self._holder is not None
        h = self._holder
        try:
            with self.writer.cursor() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self._lock_table()} (lock_name VARCHAR(64) PRIMARY KEY, "
                            "experiment VARCHAR(191), results_table VARCHAR(130), run_id VARCHAR(32), "
                            "host VARCHAR(255), pid INT, started_at VARCHAR(32), connection_id BIGINT) "
                            "CHARACTER SET utf8mb4")
                cur.execute(f"REPLACE INTO {self._lock_table()} VALUES (%s, %s, %s, %s, %s, %s, %s, CONNECTION_ID())",
                            (self._lock_name, self.exp.name, self.results_table, h.run_id, h.host, h.pid, h.started_at))
            self.writer.commit()
        except pymysql.err.MySQLError as exc:
            if _lost(exc):
                raise
            # no right to create the table: the lock still holds, only the refusal line names no run
            self.writer.rollback()

    def _relock(self) -> None:
        """A new writer connection after a lost one: the server let go of our lock with the old connection."""
        if self._lock_name is None:
            return
        assert self.writer is not None
        with self.writer.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (self._lock_name,))
            got = cur.fetchone()[0] == 1
        if not got:
            refusal = self._refusal(self._lock_name)
            self._lock_name = None
            raise SourceError(f"{refusal} (it started while the database connection of this run was lost, so this "
                              "run stops; what it answered so far is saved)")
        self._write_lock_record()

    def delete_rows(self, run_id: str, keys: Sequence[tuple]) -> None:
        assert self.writer is not None
        with self.writer.cursor() as cur:
            cur.executemany(self.delete_sql(), [(self.exp.name, run_id, *k) for k in keys])
        self.writer.commit()

    def _unlock(self) -> None:
        if self._lock_name is None or self.writer is None:
            return
        try:
            with self.writer.cursor() as cur:
                cur.execute(f"DELETE FROM {self._lock_table()} WHERE lock_name = %s AND run_id = %s",
                            (self._lock_name, self._holder.run_id if self._holder else None))
                self.writer.commit()
                cur.execute("SELECT RELEASE_LOCK(%s)", (self._lock_name,))
        except pymysql.err.MySQLError:
            pass  # the connection is gone, and the lock with it; the record left says this run did not finish
        self._lock_name = None

    def _drop_reader(self) -> None:
        conn, self._reader = self._reader, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the server may already have dropped it
                pass

    def _drop_writer(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
        self.writer = None

    def close(self) -> None:
        self._unlock()
        for conn in (self._reader, self.writer):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass


def _lost(exc: BaseException) -> bool:
    """The connection is gone (server away, connection killed), as opposed to a statement the server refused.
    pymysql raises InterfaceError(0, '') for a connection it already closed after an earlier failure."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return _code(exc) == 0
    return _code(exc) in _LOST


def _said(exc: BaseException) -> str:
    """What the server or driver said, without pymysql's (code, '...') wrapping."""
    text = str(exc.args[1]) if len(exc.args) > 1 and exc.args[1] else (str(exc) or exc.__class__.__name__)
    return text.strip().splitlines()[0][:200] if text.strip() else exc.__class__.__name__


def _backoff(attempt: int) -> float:
    return min(10.0, 2.0 ** (attempt - 1))


def _code(exc: BaseException) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
