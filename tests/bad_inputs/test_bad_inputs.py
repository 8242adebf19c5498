"""Runs every row of the bad-input corpus (cases.py) through `main([...])` in this process, and a sample of them
(every PROCESS_EVERY-th row) as a real `notes-tui` process too, which is what the promise is about: exit status 2,
exactly one line on stderr naming the problem and the fix, no traceback, nothing on stdout, the notes and every other
table of the database untouched (byte for byte for SQLite, by checksum for MySQL), no results table, no run journal.
In-process, stdout and stderr are read at the file descriptors (capfd), so a print that bypasses sys.stdout counts."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.bad_inputs.cases import CASES, Bad
from tests.helpers.support import ROOT, experiment_toml, mysql_up, need
from tests.standin.standin_ollama import StandinOllama

NOTES = [(1, "p1", "Chest X-ray: clear lungs."), (2, "p1", "RLL consolidation {note} 100%")]


class NotOllama(BaseHTTPRequestHandler):
    """A web server that is something else (a Jupyter, a proxy's login page): 404 for every path."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        body = b"<html>Not Found</html>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture(scope="module")
def servers():
    web = ThreadingHTTPServer(("127.0.0.1", 0), NotOllama)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    with StandinOllama(models=("llama3",)) as ollama:
        yield ollama.url, f"http://127.0.0.1:{web.server_address[1]}"
    web.shutdown()


class Ctx:
    """What a row builds its experiment from: a valid experiment over this test's notes (`base`)."""

    id = "note_id"

    def __init__(self, tmp: Path, kind: str, url: str, web_url: str, database: str | None = None):
        self.tmp, self.kind, self.url, self.web_url, self.database = tmp, kind, url, web_url, database

    def base(self, env_file: str | None = ".env", env: str | None = None, **creds: str) -> str:
        if self.kind == "sqlite":
            source = 'kind = "sqlite"\npath = "notes.db"'
        else:
            if env is None:
                c = {"user": "root", "password": "", "host": "127.0.0.1", "port": "3306", "database": self.database}
                c.update(creds)
                env = (f"DB_USER={c['user']}\nDB_PASS={c['password']}\nDB_HOST={c['host']}\nDB_PORT={c['port']}\n"
                       f"DB_NAME={c['database']}\n")
            (self.tmp / ".env").write_text(env)
            (self.tmp / ".env").chmod(0o600)
            source = 'kind = "mysql"' + (f'\nenv_file = "{env_file}"' if env_file else "")
        source += '\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
        return experiment_toml(source=source, hosts=[self.url])


def sqlite_state(tmp: Path) -> tuple:
    db = tmp / "notes.db"
    # the folder too: no results file, no lock file left next to the notes (the ledger is the test's own)
    return hashlib.sha256(db.read_bytes()).hexdigest(), sorted(p.name for p in tmp.iterdir() if p.name != "ledger")


def mysql_state(connect) -> tuple:
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        tables = sorted(r[0] for r in cur.fetchall())
        cur.execute("CHECKSUM TABLE notes, old_answers")
        sums = cur.fetchall()
    conn.close()
    return tables, sums


def make_notes(kind: str, tmp: Path, request) -> tuple[str | None, object]:
    rows = [(i, p, t) for i, p, t in NOTES]
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(tmp / "notes.db")
        conn.execute("CREATE TABLE notes (note_id INTEGER, patient TEXT, note_text TEXT)")
        conn.execute("CREATE TABLE old_answers (note_id INTEGER, answer TEXT)")  # a results table of other answers
        conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", rows)
        conn.commit()
        conn.close()
        return None, lambda: sqlite_state(tmp)
    need(mysql_up(), "MariaDB is not reachable on 127.0.0.1:3306")
    database, connect = request.getfixturevalue("mysql_db")
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (note_id INT, patient VARCHAR(20), note_text TEXT)")
        cur.execute("CREATE TABLE old_answers (note_id INT, answer TEXT)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)", rows)
    conn.close()
    return database, lambda: mysql_state(connect)


def fill(text: str, tmp: Path, exp: Path) -> str:
    return text.replace("{exp}", str(exp)).replace("{tmp}", str(tmp))


PROCESS_EVERY = 12  # ~15 rows of ~170 as real processes (each ~0.5 s of Python start-up); all of them in-process
IN_PROCESS = [pytest.param(c, "in-process", id=c.id) for c in CASES]
AS_PROCESS = [pytest.param(c, "process", id=f"process-{c.id}") for c in CASES[::PROCESS_EVERY]]


def run_in_process(args: list[str], env: dict[str, str], monkeypatch, capfd) -> tuple[int, str, str]:
    from app.cli import main

    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    capfd.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own exit, through _Parser.error
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def run_as_process(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    res = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    return res.returncode, res.stdout, res.stderr


@pytest.mark.parametrize(("case", "how"), IN_PROCESS + AS_PROCESS)
def test_bad_input_is_one_line_with_the_fix_and_exit_2(case: Bad, how: str, tmp_path, servers, request,
                                                        private_ledger, monkeypatch, capfd):
    url, web_url = servers
    database, state = make_notes(case.kind, tmp_path, request)
    ctx = Ctx(tmp_path, case.kind, url, web_url, database)
    exp = tmp_path / "exp.toml"
    if case.raw is not None:
        exp.write_bytes(case.raw)
    elif case.make is not None:
        exp.write_text(case.make(ctx))
    for name, data in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = state()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({k: fill(v, tmp_path, exp) for k, v in case.env.items()})
    args = [fill(a, tmp_path, exp) for a in case.args]
    if how == "process":
        code, stdout, stderr = run_as_process(args, env)
    else:
        code, stdout, stderr = run_in_process(args, env, monkeypatch, capfd)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, (code, stdout, stderr)
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("notes-tui") and ": error: " in line, line
    assert case.fragment in line, line
    assert " — " in line or re.search(r"\(see notes-tui[a-z ]* --help\)$", line), f"no fix named: {line}"
    assert stdout == "", stdout
    assert state() == before  # the notes, the other tables and the folder as they were; no results table
    assert not list(private_ledger.rglob("*.jsonl")), "a journal was written for a run that never started"


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_a_byte_order_mark_is_not_a_mistake(tmp_path):
    """Windows editors save UTF-8 with a BOM; TOML readers reject it as 'Invalid statement' at line 1."""
    from app.experiment import load_experiment

    exp = tmp_path / "exp.toml"
    exp.write_bytes(b"\xef\xbb\xbf" + Ctx(tmp_path, "sqlite", "http://127.0.0.1:9", "").base().encode())
    assert load_experiment(exp).name == "pna-test"
