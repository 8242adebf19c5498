"""What every fault scenario shares: the one end-of-scenario check, a private MariaDB that a test may stop and start,
a small tmpfs, and the notes tables the scenarios run over.

The check reads the results table with the database's own driver and the ledger through its public API; it uses no
code of the engine it checks, except the answer schema the run sent (the stand-in's answer is a function of it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.support import PNEUMONIA_ANSWER, need
from tests.standin.standin_ollama import _answer

WRITTEN = ("valid", "invalid", "empty")  # outcomes that leave a results row; "error" leaves none
PROMPT_PREFIX = "Does this note suggest pneumonia is a diagnosis? Note: "  # support.experiment_toml's template
SOP_COLUMNS = ("patientvisitid", "accession")


def uid(key: tuple) -> str:
    """A unit's id as the ledger records it: the id columns joined with '|'."""
    return "|".join(k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else str(k) for k in key)


# -- the results table, read by the test itself ------------------------------------------------------------------


@dataclass
class ResultsTable:
    """Rows of a results table. `connect` returns a DB-API connection (pymysql or sqlite3), `mark` its placeholder."""

    connect: Callable[[], Any]
    mark: str
    table: str = "pna_results"
    id_columns: tuple[str, ...] = SOP_COLUMNS
    fields: tuple[str, ...] = ("response", "explanation")

    def rows(self, experiment: str) -> list[dict[str, Any]]:
        cols = list(self.id_columns) + list(self.fields) + ["valid", "attempts", "run_id"]
        conn = self.connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(f"SELECT {', '.join(cols)} FROM {self.table} WHERE experiment = {self.mark}", (experiment,))
            except Exception as exc:  # noqa: BLE001 - no table yet: no rows
                if "no such table" in str(exc) or "doesn't exist" in str(exc):
                    return []
                raise
            out = []
            for r in cur.fetchall():
                row = dict(zip(cols, r))
                row["uid"] = uid(tuple(r[: len(self.id_columns)]))
                out.append(row)
            return out
        finally:
            conn.close()


def sqlite_table(path: Path, **kw) -> ResultsTable:
    import sqlite3

    return ResultsTable(lambda: sqlite3.connect(path), "?", **kw)


def mysql_table(connect: Callable[[], Any], **kw) -> ResultsTable:
    return ResultsTable(connect, "%s", **kw)


# -- the check -----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    notes: int
    rows: int
    runs: int
    lost: list[str] = field(default_factory=list)  # notes without a row
    doubled: list[str] = field(default_factory=list)  # notes with more than one row, or claimed by two runs
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.problems)


TALLY: list[tuple[str, Outcome]] = []  # every check of the session, for the closing figures


def expected_answer(schema: dict, text: str) -> dict:
    """What the stand-in answers for this note: a pure function of the schema and the prompt it received."""
    content, _ = _answer(schema, PROMPT_PREFIX + text)
    return json.loads(content)


def check_outcome(table: ResultsTable, notes: dict[str, str | None], ledger_dir: Path, experiment: str = "pna-test",
                  label: str = "") -> Outcome:
    """The end of every scenario: each note has exactly one results row, the valid ones carry the answer the server
    gave for that very note, each row is claimed by exactly one ledger unit of the run named in the row, and the
    ledger's counts equal the table's. Raises AssertionError listing what is wrong; returns the figures."""
    import tomllib

    from app.engine.answer import AnswerSpec
    from app.experiment.schema import AnswerSection
    from ledger import Ledger

    answer = AnswerSpec(AnswerSection.model_validate(tomllib.loads(PNEUMONIA_ANSWER)["answer"]))
    rows = table.rows(experiment)
    led = Ledger(ledger_dir)
    assert led.sync(wait_s=60), "the ledger lease stayed busy for 60 s"
    runs = led.list_runs(experiment=experiment)
    out = Outcome(notes=len(notes), rows=len(rows), runs=len(runs))

    by_uid: dict[str, list[dict]] = {}
    for row in rows:
        by_uid.setdefault(row["uid"], []).append(row)
    out.lost = sorted(set(notes) - set(by_uid))
    out.doubled = sorted(u for u, rs in by_uid.items() if len(rs) > 1)
    strays = sorted(set(by_uid) - set(notes))
    if strays:
        out.problems.append(f"rows for ids the source does not hold: {strays[:5]}")

    for u, (row, *_) in by_uid.items():
        text = notes.get(u)
        if text is None:
            if u in notes and (row["valid"] != 0 or row["attempts"] != 0):
                out.problems.append(f"{u}: an empty note has valid={row['valid']} attempts={row['attempts']}")
            continue
        if row["valid"]:
            want = expected_answer(answer.schema, text)
            got = {f: row[f] for f in table.fields}
            if got != want:
                out.problems.append(f"{u}: row holds {got}, the server answered {want}")
        elif {f: row[f] for f in table.fields} != answer.fallback:
            out.problems.append(f"{u}: an invalid row does not hold the fallback answer")

    claims: dict[str, list[tuple[str, dict]]] = {}
    counted = 0
    for run in runs:
        c = run["counts"]
        counted += sum(c.get(k) or 0 for k in WRITTEN)
        for unit in led.units(run["run_id"]):
            if unit["outcome"] in WRITTEN:
                claims.setdefault(unit["unit_id"], []).append((run["run_id"], unit))
    out.doubled += sorted(u for u, cs in claims.items() if len(cs) > 1 and u not in out.doubled)
    unclaimed = sorted(set(by_uid) - set(claims))
    if unclaimed:
        out.problems.append(f"{len(unclaimed)} rows no ledger unit records, e.g. {unclaimed[:5]}")
    phantoms = sorted(set(claims) - set(by_uid))
    if phantoms:
        out.problems.append(f"{len(phantoms)} ledger units claim rows the table lacks, e.g. {phantoms[:5]}")
    for u, cs in claims.items():
        row = by_uid.get(u, [None])[0]
        if row is None or len(cs) != 1:
            continue
        run_id, unit = cs[0]
        if row["run_id"] != run_id:
            out.problems.append(f"{u}: row written by run {row['run_id']}, ledger says run {run_id}")
        outcome = "valid" if row["valid"] else ("empty" if row["attempts"] == 0 else "invalid")
        if unit["outcome"] != outcome:
            out.problems.append(f"{u}: ledger outcome {unit['outcome']}, row says {outcome}")
        if outcome == "valid" and (unit["answer"] or {}).get("response") != row["response"]:
            out.problems.append(f"{u}: ledger answer {unit['answer']}, row {row['response']}")
    if counted != len(rows):
        out.problems.append(f"the ledger's counts (valid + invalid + empty over {len(runs)} runs) say {counted}, "
                            f"the table holds {len(rows)} rows")
    TALLY.append((label or experiment, out))
    assert out.ok, (f"lost {len(out.lost)} {out.lost[:5]}, doubled {len(out.doubled)} {out.doubled[:5]}; "
                    + "; ".join(out.problems[:8]))
    return out


# -- notes tables --------------------------------------------------------------------------------------------------

SOP_TABLE = "CREATE TABLE PNA2_100_RadNotes (patientvisitid INT, accession VARCHAR(255), note_text BLOB)"


def sop_notes(n: int, start: int = 0, pad: int = 0) -> dict[tuple, str]:
    """n notes keyed like the SOP's table; `pad` adds that many characters of findings to each."""
    filler = " lungs clear and well expanded." * (pad // 31 + 1) if pad else ""
    return {(1000 + i, f"ACC{i:05d}"): f"PORTABLE CHEST {i}: {'RLL consolidation' if i % 2 else 'clear'}.{filler[:pad]}"
            for i in range(start, start + n)}


def fill_mysql(connect: Callable[[], Any], notes: dict[tuple, str]) -> dict[str, str]:
    conn = connect()
    with conn.cursor() as cur:
        cur.execute(SOP_TABLE)
        cur.executemany("INSERT INTO PNA2_100_RadNotes VALUES (%s, %s, %s)",
                        [(a, b, t.encode()) for (a, b), t in notes.items()])
    conn.commit()
    conn.close()
    return {uid(k): t for k, t in notes.items()}


def fill_sqlite(path: Path, notes: dict[tuple, str]) -> dict[str, str]:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE PNA2_100_RadNotes (patientvisitid INTEGER, accession TEXT, note_text BLOB)")
    conn.executemany("INSERT INTO PNA2_100_RadNotes VALUES (?, ?, ?)", [(a, b, t.encode()) for (a, b), t in notes.items()])
    conn.commit()
    conn.close()
    return {uid(k): t for k, t in notes.items()}


def mysql_source(env_name: str) -> str:
    return (f'kind = "mysql"\nenv_file = "{env_name}"\ntable = "PNA2_100_RadNotes"\n'
            'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')


def sqlite_source(db_name: str = "notes.db") -> str:
    return (f'kind = "sqlite"\npath = "{db_name}"\ntable = "PNA2_100_RadNotes"\n'
            'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')


def notes_source(kind: str, notes: dict[tuple, str], tmp_path: Path, request) -> tuple[dict[str, str], ResultsTable, str]:
    """The notes in a throw-away database on the shared MariaDB ("mysql") or a SQLite file: (notes by uid, the
    results table, the experiment's [source] text)."""
    if kind == "mysql":
        from tests.helpers.support import mysql_up, write_env

        need(mysql_up(), "MariaDB is not reachable on 127.0.0.1:3306")
        db, connect = request.getfixturevalue("mysql_db")
        return fill_mysql(connect, notes), mysql_table(connect), mysql_source(write_env(tmp_path / ".env", db).name)
    return fill_sqlite(tmp_path / "notes.db", notes), sqlite_table(tmp_path / "notes.db"), sqlite_source()


# -- a private MariaDB, ours to stop and start ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateMariaDB:
    """A MariaDB server of our own (own datadir, port and socket under a temp dir), never the shared one on 3306:
    the tests that stop a server stop this one."""

    def __init__(self, max_connections: int = 400):
        self.dir = Path(tempfile.mkdtemp(prefix="ntmdb."))  # short: a unix socket path has ~100 bytes
        self.port = _free_port()
        self.max_connections = max_connections
        self.proc: subprocess.Popen | None = None
        res = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir / 'data'}",
                              "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {res.stderr[-500:]}")

    @property
    def params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "user": "root", "password": ""}

    def start(self, wait_s: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.dir / 'data'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'sock'}", f"--pid-file={self.dir / 'pid'}",
             "--user=root", "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
             "--innodb-log-file-size=16M", f"--max-connections={self.max_connections}",
             f"--log-error={self.dir / 'error.log'}"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.dir / 'error.log').read_text()[-800:]}")
            if self.up():
                return
            time.sleep(0.1)
        raise RuntimeError("the private mariadbd did not come up")

    def up(self) -> bool:
        import pymysql

        try:
            pymysql.connect(connect_timeout=2, **self.params).close()
            return True
        except pymysql.err.MySQLError:
            return False

    def stop(self, timeout: float = 60.0) -> None:
        """A clean shutdown (SIGTERM, as systemd and maintenance scripts do), waited for."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def connect(self, database: str | None = None):
        import pymysql

        return pymysql.connect(database=database, autocommit=True, charset="utf8mb4", **self.params)

    def new_database(self, name: str) -> Callable[[], Any]:
        admin = self.connect()
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        admin.close()
        return lambda: self.connect(name)

    def write_env(self, path: Path, database: str, password: str = "") -> Path:
        path.write_text(f"DB_USER=root\nDB_PASS={password}\nDB_HOST=127.0.0.1\nDB_PORT={self.port}\nDB_NAME={database}\n")
        path.chmod(0o600)
        return path

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def private_mariadb_available() -> bool:
    return shutil.which("mariadbd") is not None and shutil.which("mariadb-install-db") is not None


@contextmanager
def private_mariadb(**kw) -> Iterator[PrivateMariaDB]:
    need(private_mariadb_available(), "mariadbd / mariadb-install-db are not installed")
    server = PrivateMariaDB(**kw)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# -- a small filesystem of our own ---------------------------------------------------------------------------------


@contextmanager
def small_tmpfs(size: str = "1m") -> Iterator[Path]:
    """A tmpfs of `size` mounted for this test (needs root); unmounted afterwards."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="nttmpfs."))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                         capture_output=True, text=True)
    need(res.returncode == 0, f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def fill_disk(where: Path, name: str = "filler") -> int:
    """Write into `where` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * 4096
    fd = os.open(where / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, block)
            except OSError:
                break
            if n <= 0:
                break
            written += n
    finally:
        os.close(fd)
    return written


def count_rows(table: ResultsTable, experiment: str = "pna-test") -> int:
    try:
        return len(table.rows(experiment))
    except Exception:  # noqa: BLE001 - the server is away, or the table is not there yet
        return -1
