"""`ledger.db`, the SQLite index derived from the journals, and the Ledger API the app uses.

Only the holder of `ledger.lease` writes the index (SQLite locking is not trusted on NFS); everyone else reads it as
it is. The index holds nothing that is not in the journals, so a corrupt one is simply rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .adjudication import import_adjudications
from .chain import Head, head, sync_chain
from .evals import import_evals
from .importer import Importer
from .journal import JOURNAL_DIR, ensure_private_dir, fsync_dir, sweep_reserves
from .lease import Lease, LeaseLost, sweep_graves
from .migrations import COUNT_KEYS, migrate, up_to_date
from .reader import Reader
from .runs import load_run, run_summary
from .status import STALE_AFTER_S, display_status
from .stop import sweep_stop_files

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["STALE_AFTER_S", "AmbiguousRun", "Ledger", "LedgerBusy", "RunNotFound"]

log = logging.getLogger("ledger")
T = TypeVar("T")

DB_NAME = "ledger.db"
LEASE_NAME = "ledger.lease"
REBUILD_MARK = ".rebuild-"
BUSY_TIMEOUT_MS = 10_000
CLOSED_STATUSES = ("completed", "interrupted", "failed")
_CONTAINS = "instr(lower({}), lower(?)) > 0"  # part of a name, any case (ASCII letters, as SQLite's lower())
LIST_COLUMNS = (
    "run_id, experiment, study, model, model_digest, prompt_hash, recorded_status, hostname, pid, pid_start, started_at, ended_at, "
    "last_seen_at, last_error, extra_counts, " + ", ".join(COUNT_KEYS)
)


class LedgerBusy(RuntimeError):
    """The lease could not be had in time for an operation that needs it (rebuild)."""


class RunNotFound(LookupError):
    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.prefix = prefix


class AmbiguousRun(LookupError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        super().__init__(prefix)
        self.prefix = prefix
        self.candidates = candidates


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    # OperationalError ("database is locked", "no such table") is a DatabaseError too, but not corruption.
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    msg = str(exc).lower()
    return "malformed" in msg or "not a database" in msg


def is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def connect(path: Path, readonly: bool = False, busy_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_ms / 1000)
    else:
        if not path.exists():
            # Create it ourselves so it is 0600 from the first byte; SQLite gives its -journal the same mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    # Manual transactions: the importer decides where a transaction ends (offsets move with their records).
    conn.isolation_level = None
    conn.execute(f"PRAGMA busy_timeout = {busy_ms if readonly else BUSY_TIMEOUT_MS}")
    # Touch the schema so a garbage file fails here, as "file is not a database", not halfway through an import.
    conn.execute("select count(*) from sqlite_master").fetchone()
    if not readonly:
        # Never WAL: its shared-memory index needs all clients on one host.
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: index pages of millions of units stay in memory
    return conn


def _open_db(conn: sqlite3.Connection) -> Database:
    from sqlite_utils import Database  # only where it is used: a run's closing import needs plain sqlite3

    return Database(conn, execute_plugins=False, recursive_triggers=False)


class Ledger:
    """The run ledger in `ledger_dir`. Reads first import new journal data (briefly waiting for the lease) unless
    `auto_sync` is False; then they read the index as it is."""

    def __init__(self, ledger_dir: Path, *, auto_sync: bool = True, read_wait_s: float = 0.5) -> None:
        self.ledger_dir = Path(ledger_dir)
        self.db_path = self.ledger_dir / DB_NAME
        self.lease_path = self.ledger_dir / LEASE_NAME
        self.journal_dir = self.ledger_dir / JOURNAL_DIR
        self.auto_sync = auto_sync
        self.read_wait_s = read_wait_s

    # -- writing the index (under the lease) ------------------------------------------------------------------
    def sync(self, wait_s: float = 5.0) -> bool:
        """Import new journal data. False if the lease could not be had (someone else is importing) or was lost."""
        if not self.ledger_dir.is_dir():
            return True  # nothing was ever recorded here, and a reader must not create the directory
        lease = Lease(self.lease_path)
        if not lease.acquire(wait_s):
            return False
        try:
            try:
                self._import_into(self.db_path, lease)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                log.warning("ledger index %s is corrupt (%s); rebuilding it from the journals", self.db_path, exc)
                self._rebuild_locked(lease)
            self._sweep()
        except LeaseLost:
            log.warning("lost the ledger lease during an import; another process took over")
            return False
        finally:
            lease.release()
        return True

    def rebuild(self, wait_s: float = 30.0) -> None:
        """Recreate ledger.db from the journals alone (into a temp file, then atomically over the old one)."""
        ensure_private_dir(self.ledger_dir)
        lease = Lease(self.lease_path)
        if not lease.acquire(wait_s):
            raise LedgerBusy(f"another process is importing into the ledger index ({self.lease_path} is held "
                             f"for more than {wait_s:g} s) — try again in a minute")
        try:
            self._rebuild_locked(lease)
            self._sweep()
        finally:
            lease.release()

    def check(self) -> bool:
        """Full integrity check (reads the whole file, so not done on every open); rebuilds a bad index.
        True if the index was fine."""
        if not self.db_path.exists():
            return True
        try:
            conn = connect(self.db_path, readonly=True)
            try:
                ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0] == "ok"
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            ok = False
        if not ok:
            log.warning("ledger index %s failed its integrity check; rebuilding it from the journals", self.db_path)
            self.rebuild()
        return ok

    def _import_into(self, path: Path, lease: Lease) -> int:
        conn = connect(path)
        try:
            if not up_to_date(conn):
                migrate(_open_db(conn))
            touched = Importer(conn, self.journal_dir, lease.check).run()
            self._after_import(conn, lease)
            return touched
        finally:
            conn.close()

    def _after_import(self, conn: sqlite3.Connection, lease: Lease) -> None:
        """Evals, adjudications, the live status of running runs (readable in SQL), then the seal of what finished."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            import_evals(conn, self.ledger_dir)
            import_adjudications(conn, self.ledger_dir)
            refresh_status(conn)
            lease.check()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        sync_chain(conn, self.ledger_dir, lease.check)

    def _rebuild_locked(self, lease: Lease) -> None:
        tmp = self.ledger_dir / f"{DB_NAME}{REBUILD_MARK}{secrets.token_hex(6)}"
        try:
            conn = connect(tmp)
            try:
                # A crash only loses the temp file, so skip the rollback journal and fsyncs; one fsync at the end.
                conn.execute("PRAGMA journal_mode = MEMORY")
                conn.execute("PRAGMA synchronous = OFF")
                migrate(_open_db(conn))
                Importer(conn, self.journal_dir, lease.check).run()
                self._after_import(conn, lease)
            finally:
                conn.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            lease.check()
            # A hot journal left by a crashed writer belongs to the old file; SQLite would "roll it back" into
            # the new one. Only lease holders write, and we are the holder, so nobody is using it.
            Path(f"{self.db_path}-journal").unlink(missing_ok=True)
            os.replace(tmp, self.db_path)
            fsync_dir(self.ledger_dir)
        finally:
            tmp.unlink(missing_ok=True)

    def _sweep(self) -> None:
        # Temp files of rebuilds that crashed: safe to delete, rebuilds only run under the lease we hold.
        for path in self.ledger_dir.glob(f"{DB_NAME}{REBUILD_MARK}*"):
            path.unlink(missing_ok=True)
        sweep_graves(self.lease_path)
        sweep_reserves(self.journal_dir, self._finished)
        sweep_stop_files(self.ledger_dir, self._finished)

    def _finished(self, run_id: str) -> bool:
        """Closed or crashed (a killed run's disk reserve is swept once the index knows it is gone)."""
        if not self.db_path.exists():
            return False
        conn = connect(self.db_path, readonly=True)
        try:
            conn.row_factory = sqlite3.Row
            row = conn.execute("select * from runs where run_id = ?", (run_id,)).fetchone()
        finally:
            conn.close()
        return row is not None and display_status(dict(row)) != "running"

    # -- reading ----------------------------------------------------------------------------------------------
    def _read(self, fn: Callable[[Reader], T], empty: T) -> T:
        busy_ms = BUSY_TIMEOUT_MS
        if self.auto_sync:
            try:
                self.sync(wait_s=self.read_wait_s)
            except (OSError, sqlite3.Error) as exc:  # a reader still gets the index as it is
                if is_locked(exc):
                    # someone holds ledger.db (a sqlite3 shell, a backup): we already waited once; if it lets
                    # readers in, answer from what the index holds, else say so soon
                    busy_ms = 1000
                    log.warning("ledger index %s is locked by another process: showing it without the newest "
                                "journal records", self.db_path)
                else:
                    log.warning("ledger sync failed: %s", exc)
        for attempt in range(2):
            if not self.db_path.exists():
                return empty
            try:
                conn = connect(self.db_path, readonly=True, busy_ms=busy_ms)
                try:
                    return fn(Reader(conn))
                finally:
                    conn.close()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return empty  # created but not yet migrated by a writer that died
                if is_locked(exc):
                    raise LedgerBusy(f"the ledger index {self.db_path} is locked by another process (an open sqlite3 "
                                     "shell, a backup?) — try again once it lets go") from None
                if not is_corruption(exc):
                    raise
                err: sqlite3.DatabaseError = exc
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                err = exc
            if attempt:
                raise err
            log.warning("ledger index %s is corrupt (%s); rebuilding it from the journals", self.db_path, err)
            self.rebuild()
        return empty  # unreachable; keeps type checkers content

    def read(self, fn: Callable[[Reader], T], empty: T) -> T:
        """Run fn on one read-only connection, after one import of what is new; `empty` when there is no index."""
        return self._read(fn, empty)

    def resolve(self, prefix: str) -> str:
        """The one run whose id starts with `prefix` (any case); RunNotFound or AmbiguousRun otherwise."""
        found = self._read(lambda db: resolve_run(db, prefix), None)
        if found is None:  # no index at all
            raise RunNotFound(prefix)
        return found

    def head(self) -> Head | None:
        """The hash of the chain's last seal and how many seals there are; None before the first run finished."""
        return self._read(lambda db: head(db.conn), None)

    def list_runs(self, experiment: str | None = None, status: str | None = None, limit: int | None = None,
                  model: str | None = None, since: str | None = None, offset: int = 0,
                  study: str | None = None, partial: bool = False) -> list[dict[str, Any]]:
        """Runs, newest first. `status` filters on the displayed status (running and crashed are computed);
        `model` matches the name with or without its tag; `since` is a UTC ISO time (see clock.parse_since);
        `offset` skips that many (a screen pages through 10,000 runs 200 at a time); `study` keeps the cells of one.
        `partial`: `experiment` and `model` match any part of the name, in any case (a filter typed by a person,
        as `/` in k9s); `study` is always matched whole."""
        where, params = [], []
        if experiment is not None:
            where.append(_CONTAINS.format("runs.experiment") if partial else "runs.experiment = ?")
            params.append(experiment)
        if study is not None:
            where.append("runs.study = ?")
            params.append(study)
        if model is not None and partial:
            where.append(_CONTAINS.format("runs.model"))
            params.append(model)
        elif model is not None:
            # "llama3" means every tag of it ("llama3:latest", "llama3:8b"); "llama3:8b" only that one
            where.append("(runs.model = ? or (instr(?, ':') = 0 and substr(runs.model, 1, ?) = ?))")
            params += [model, model, len(model) + 1, model + ":"]
        if since is not None:
            where.append("runs.started_at >= ?")
            params.append(since)
        if status is not None:
            # Only closed statuses are stored; running and crashed both come from recorded `running` rows.
            where.append("runs.recorded_status = ?")
            params.append(status if status in CLOSED_STATUSES else "running")
        sql = f"select {LIST_COLUMNS} from runs"
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by started_at desc, run_id desc"
        computed = status is not None and status not in CLOSED_STATUSES
        if limit is not None and not computed:
            sql += f" limit {int(limit)} offset {int(offset)}"
        skip = offset if computed else 0  # a computed status is filtered in Python, so is its offset

        def query(db: Reader) -> list[dict[str, Any]]:
            runs, skipped = [], 0
            for row in db.query(sql, params):
                if limit is not None and len(runs) >= limit:
                    break
                run = run_summary(row)
                if not computed or run["status"] == status:
                    if skipped < skip:
                        skipped += 1
                        continue
                    runs.append(run)
            return runs

        return self._read(query, [])

    def names(self, field: str) -> list[str]:
        """The experiment (`field="experiment"`) or model names the runs were recorded with, most runs first."""
        if field not in ("experiment", "model"):
            raise ValueError(f"no list of {field!r} names")
        sql = (f"select {field} as name, count(*) as n from runs where {field} is not null and {field} != '' "
               f"group by {field} order by n desc, {field}")
        return self._read(lambda db: [row["name"] for row in db.query(sql)], [])

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """Everything recorded about one run (JSON columns decoded), plus status, counts and duration_s."""
        return self._read(lambda db: load_run(db, run_id), None)

    def units(self, run_id: str) -> list[dict[str, Any]]:
        def query(db: Reader) -> list[dict[str, Any]]:
            out = []
            for row in db.query("select * from units where run_id = ? order by unit_id", [run_id]):
                row = dict(row)
                row["answer"] = None if row["answer"] is None else json.loads(row["answer"])
                row["truncated"] = bool(row["truncated"])
                out.append(row)
            return out

        return self._read(query, [])

    def journal_errors(self) -> list[dict[str, Any]]:
        """Journals whose import stopped at a broken chain (file, run_id, seq of the last good record, error)."""
        return self._read(
            lambda db: [dict(r) for r in db.query("select * from journals where error is not null order by file")],
            [],
        )



def resolve_run(db: Reader, prefix: str) -> str:
    """The one run id starting with `prefix` (ULIDs are upper case; people type either)."""
    key = prefix.strip().upper()
    if not key:
        raise RunNotFound(prefix)
    upper = key[:-1] + chr(ord(key[-1]) + 1)
    ids = [r[0] for r in db.conn.execute(
        "select run_id from runs where run_id >= ? and run_id < ? order by run_id limit 6", (key, upper))]
    if not ids:
        raise RunNotFound(prefix)
    if len(ids) > 1:
        raise AmbiguousRun(prefix, ids)
    return ids[0]


def refresh_status(conn: sqlite3.Connection) -> None:
    """Write the status users see into `runs.status` for runs still recorded as running, so SQL reads it too. It is
    as fresh as the last import: only the reader that imports can probe processes."""
    rows = conn.execute(
        "select run_id, recorded_status, hostname, pid, pid_start, last_seen_at, status from runs "
        "where recorded_status = 'running'").fetchall()
    changed = []
    for run_id, recorded, hostname, pid, pid_start, last_seen_at, stored in rows:
        shown = display_status({"recorded_status": recorded, "hostname": hostname, "pid": pid, "pid_start": pid_start,
                                "last_seen_at": last_seen_at})
        if shown != stored:
            changed.append((shown, run_id))
    conn.executemany("update runs set status = ? where run_id = ?", changed)
