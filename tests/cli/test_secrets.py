"""Secrets and privacy, on runs that succeed and runs that fail in every way we know: the database password and any
token never reach stdout, stderr, the ledger (journals, index, lease and reserve files), the results or lock tables,
or an exception message; note text never reaches the ledger or the console; what notes-tui creates is its owner's
alone (0600 files, 0700 directories)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import uuid

import pytest

from tests.helpers.faultkit import fill_mysql, sop_notes
from tests.helpers.runhelp import spawn_run
from tests.helpers.support import ROOT, experiment_toml, mysql_up, need
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import spawn_standin

# Real time is what these check (a 10 s lock, a stop signal's grace, a detached process, a terminal): seconds each, so
# they are the slow tier's, run by .ci/run with the rest
pytestmark = pytest.mark.slow

PASSWORD = "Zebra-Quartz-7731-" + uuid.uuid4().hex[:6]  # recognisable, and unlike anything else in the output
WRONG = "Wrong-Zebra-" + uuid.uuid4().hex[:6]
TOKEN = "T0ken-Secret-" + uuid.uuid4().hex[:6]
NOTE_MARK = "PORTABLE CHEST"  # every note's text starts with it (faultkit.sop_notes)


def run(args, env=None, wrapper=None):
    e = dict(os.environ)
    e.update(env or {})
    cmd = [sys.executable, *(["-m", "tests.helpers.faultpoint"] if wrapper else ["-m", "app"]), *args]
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)


@pytest.fixture
def secret_db(mysql_db):
    """A database user whose password is PASSWORD, for this test only."""
    db, connect = mysql_db
    user = "nt_s_" + uuid.uuid4().hex[:8]
    admin = connect()
    with admin.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY {admin.escape(PASSWORD)}")
            cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'{host}'")
    try:
        yield db, connect, user
    finally:
        with admin.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.close()


def dump_tables(connect) -> str:
    conn = connect()
    out = []
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        for (table,) in cur.fetchall():
            cur.execute(f"SELECT * FROM `{table}`")
            out.append(repr(cur.fetchall()))
    conn.close()
    return "\n".join(out)


@pytest.mark.mysql
def test_no_password_token_or_note_text_in_any_artefact(tmp_path, secret_db, private_ledger):
    need(mysql_up(), "MariaDB is not reachable on 127.0.0.1:3306")
    db, connect, user = secret_db
    fill_mysql(connect, sop_notes(80))
    env_file = tmp_path / ".env"
    env_file.write_text(f"DB_USER={user}\nDB_PASS={PASSWORD}\nDB_HOST=127.0.0.1\nDB_NAME={db}\n")
    env_file.chmod(0o600)
    source = ('kind = "mysql"\nenv_file = ".env"\ntable = "PNA2_100_RadNotes"\n'
              'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')
    server = spawn_standin(latency=0.05, slots=2)
    outputs: list[tuple[str, str, str]] = []  # (what, stdout, stderr)
    try:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=source, hosts=[server.url], run="concurrency = 2",
                                       results='table = "pna_results"\nbatch_size = 4'))

        def keep(what, res, code):
            assert res.returncode == code, (what, res.returncode, res.stdout, res.stderr)
            outputs.append((what, res.stdout, res.stderr))

        res = run(["check", str(exp)])
        keep("check", res, 0)
        check_out = res.stdout  # the one command that prints a note (the first prompt), because it was asked to
        keep("completed run", run(["--run", str(exp), "--limit", "12"]), 0)
        keep("planted bug", run(["--run", str(exp), "--limit", "12"], {"BUG_IN_WRITE": "2"}, wrapper=True), 1)
        assert "Traceback" in outputs[-1][2]  # the bug path printed its trace: that too is searched
        proc = spawn_run(exp)
        wait_for(lambda: server.stats()["chat"] >= 30, 30, "the run to be under way")
        proc.send_signal(signal.SIGTERM)
        keep("SIGTERM", subprocess.CompletedProcess(proc.args, proc.wait(60), *proc.communicate()), 143)
        proc = spawn_run(exp)
        wait_for(lambda: server.stats()["chat"] >= 45, 30, "the run to be under way")
        proc.kill()
        keep("SIGKILL", subprocess.CompletedProcess(proc.args, proc.wait(60), *proc.communicate()), -signal.SIGKILL)
        keep("rerun after a kill", run(["--run", str(exp)]), 0)
        keep("ledger list", run(["ledger", "list"]), 0)
        keep("ledger list --json", run(["ledger", "list", "--json"]), 0)
        keep("ledger rebuild", run(["ledger", "rebuild"]), 0)
        # failing runs: a wrong password (which must not show either), a server away, tokens in host addresses
        env_file.write_text(env_file.read_text().replace(PASSWORD, WRONG))
        keep("wrong password", run(["--run", str(exp)]), 2)
        keep("wrong password, check", run(["check", str(exp)]), 2)
        env_file.write_text(env_file.read_text().replace(WRONG, PASSWORD))
        exp.write_text(exp.read_text().replace(server.url, "http://127.0.0.1:9"))
        keep("server away", run(["--run", str(exp)]), 2)
        exp.write_text(exp.read_text().replace("http://127.0.0.1:9", f"http://ann:{TOKEN}@127.0.0.1:9"))
        keep("token in a host address", run(["--run", str(exp)]), 2)
        exp.write_text(exp.read_text().replace(f'hosts = ["http://ann:{TOKEN}@127.0.0.1:9"]', ""))
        keep("token in OLLAMA_HOST", run(["--run", str(exp)], {"OLLAMA_HOST": f"http://ann:{TOKEN}@127.0.0.1:9"}), 2)
        keep("token in a proxy address", run(["check", str(exp)], {"OLLAMA_HOST": server.url, "NO_PROXY": "",
                                                                  "HTTP_PROXY": f"http://bob:{TOKEN}@127.0.0.1:9"}), 2)
    finally:
        server.stop()

    ledger_files = [p for p in private_ledger.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in ledger_files) and any(p.name == "ledger.db" for p in ledger_files)
    artefacts = {f"{what} ({stream})": text for what, out, err in outputs for stream, text in (("stdout", out), ("stderr", err))}
    artefacts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in ledger_files})
    artefacts["the database's tables (results, lock records, notes)"] = dump_tables(connect)
    for secret in (PASSWORD, WRONG, TOKEN):
        leaks = [where for where, text in artefacts.items() if secret in text]
        assert not leaks, f"{secret[:5]}… found in {leaks}"
    for where, text in artefacts.items():
        if where.startswith("the database") or where == "check (stdout)":
            continue
        assert NOTE_MARK not in text, f"note text in {where}"
    assert NOTE_MARK in check_out  # …and the search would have found it


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_what_notes_tui_creates_is_private(tmp_path, monkeypatch):
    """Ledger dir and journal dir 0700; journals, index, reserve, lock files and a SQLite notes database built from
    a CSV 0600 — also under a permissive umask."""
    old = os.umask(0o002)
    try:
        csv = tmp_path / "notes.csv"
        csv.write_text("note_id,note_text\n" + "".join(f"{i},CXR {i}: clear\n" for i in range(30)))
        ledger = tmp_path / "new" / "ledger"
        server = spawn_standin(latency=0.2, slots=1)
        try:
            exp = tmp_path / "exp.toml"
            exp.write_text(experiment_toml(
                source='kind = "sqlite"\npath = "built.db"\nseed_csv = "notes.csv"\ntable = "notes"\n'
                       'id_columns = ["note_id"]\ntext_column = "note_text"',
                hosts=[server.url], run="concurrency = 1"))
            proc = spawn_run(exp, "--ledger", str(ledger))
            journal = wait_for(lambda: next((ledger / "journal").glob("*.jsonl"), None), 30, "the journal")
            lock = wait_for(lambda: next(tmp_path.glob("built.db.notes-tui-*.lock"), None), 10, "the run lock")
            reserve = next((ledger / "journal").glob(".*.reserve"))
            live = {p: mode(p) for p in (journal, lock, reserve, tmp_path / "built.db")}
            assert proc.wait(60) == 0
        finally:
            server.stop()
        assert live == {p: 0o600 for p in live}, live
        assert mode(ledger) == 0o700 and mode(ledger / "journal") == 0o700
        from ledger import Ledger

        Ledger(ledger).sync()  # a run writes only its journal; the first reader builds the index
        assert mode(ledger / "ledger.db") == 0o600 and mode(journal) == 0o600
        assert not lock.exists() and not reserve.exists()  # a clean finish leaves neither behind
    finally:
        os.umask(old)


def test_an_env_file_others_can_read_gets_the_chmod_fix(tmp_path, mysql_db):
    db, _ = mysql_db
    env = tmp_path / ".env"
    env.write_text(f"DB_USER=root\nDB_PASS=\nDB_HOST=127.0.0.1\nDB_NAME={db}\n")
    env.chmod(0o644)
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(hosts=["http://127.0.0.1:9"], source=(
        'kind = "mysql"\nenv_file = ".env"\ntable = "notes"\nid_columns = ["id"]\ntext_column = "t"')))
    res = run(["check", str(exp)])
    assert f"chmod 600 {env}" in res.stderr
