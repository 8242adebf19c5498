"""Runs against the real MariaDB with the SOP's schema (patientvisitid INT, accession VARCHAR(255), note_text BLOB)."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from tests.helpers.notes import SOP_TABLE, fill, sop_source
from tests.helpers.runhelp import cli, journal_records, ledger_runs, spawn_run
from tests.helpers.support import experiment_toml, write_env
from tests.standin.standin_ollama import StandinOllama

pytestmark = pytest.mark.mysql


def result_rows(connect):
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT patientvisitid, accession, response, valid, attempts, truncated FROM pna_results "
                    "ORDER BY patientvisitid, accession")
        rows = cur.fetchall()
    conn.close()
    return rows


def test_full_run_hostile_rows_and_resume(tmp_path, mysql_db, capsys, private_ledger):
    db, connect = mysql_db
    hostile = [(2000, "NULLNOTE", None), (2001, "EMPTY", b""), (2002, "LATIN1", "Infiltrat im Unterlappen, Ödem".encode("latin-1")),
               (2003, "LONG", b"FINDINGS: " + b"diffuse opacities. " * 1500), (2004, "UTF8", "1.2 × 0.8 cm — 🫁".encode())]
    fill(connect, 40, hostile)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.01, slots=4) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=sop_source(env.name), hosts=[server.url]))
        code, out, err = cli(capsys, "check", str(exp))
        assert code == 0 and "1 notes look longer than num_ctx" in out, out + err
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 0, err
        rows = result_rows(connect)
        assert len(rows) == 45
        by_acc = {r[1]: r for r in rows}
        assert by_acc["NULLNOTE"][3:5] == (0, 0) and by_acc["EMPTY"][3:5] == (0, 0)
        assert by_acc["LATIN1"][3] == 1
        assert by_acc["LONG"][5] == 1 and by_acc["UTF8"][5] == 0
        assert "bytes of note text were not UTF-8" in out
        code, out, _ = cli(capsys, "--run", str(exp))
        assert code == 0 and "0 notes to do" in out
        assert len(result_rows(connect)) == 45
    runs = ledger_runs(private_ledger)
    assert [r["status"] for r in runs] == ["completed", "completed"]


@pytest.mark.slow  # seconds of real time
def test_sigterm_mid_run_then_rerun_gives_one_row_per_note(tmp_path, mysql_db, private_ledger):
    db, connect = mysql_db
    fill(connect, 80)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.15, slots=2) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=sop_source(env.name), hosts=[server.url], run="concurrency = 2"))
        proc = spawn_run(exp)
        deadline = time.time() + 20
        while time.time() < deadline and server.stats()["chat"] < 15:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, (out, err)
        assert "interrupted (SIGTERM)" in out
        done_first = len(result_rows(connect))
        assert 0 < done_first < 80
        proc = spawn_run(exp)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    rows = result_rows(connect)
    assert len(rows) == 80 and len({(r[0], r[1]) for r in rows}) == 80
    statuses = sorted(r["status"] for r in ledger_runs(private_ledger))
    assert statuses == ["completed", "interrupted"]
    units = [u["id"] for rec in journal_records(private_ledger) for u in rec.get("units", [])]
    assert len(units) == 80 == len(set(units))


def test_password_never_reaches_ledger_journal_or_output(tmp_path, mysql_db, capsys, private_ledger):
    db, connect = mysql_db
    fill(connect, 5)
    password = "Zebra-Quartz-7731"
    user = "nt_secret_" + uuid.uuid4().hex[:8]  # users are server-wide: another session's test must not drop ours
    admin = connect()
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
        cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'localhost'")
    try:
        env = tmp_path / ".env"
        env.write_text(f"DB_USER={user}\nDB_PASS={password}\nDB_HOST=127.0.0.1\nDB_NAME={db}\n")
        env.chmod(0o600)
        with StandinOllama(latency=0.0) as server:
            exp = tmp_path / "exp.toml"
            exp.write_text(experiment_toml(source=sop_source(env.name), hosts=[server.url]))
            code, out, err = cli(capsys, "--run", str(exp))
            code2, out2, err2 = cli(capsys, "check", str(exp))
            cli(capsys, "ledger", "list", "--json")
            listing = capsys.readouterr()
        assert code == 0 and code2 == 0
        artefacts = out + err + out2 + err2 + listing.out + listing.err
        for path in private_ledger.rglob("*"):
            if path.is_file():
                artefacts += path.read_bytes().decode("utf-8", "replace")
        assert password not in artefacts
        assert "PORTABLE CHEST" not in out + err + "".join(p.read_text() for p in private_ledger.rglob("*.jsonl"))
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
        admin.close()


def test_id_collation_and_case_follow_the_source(tmp_path, mysql_db, capsys):
    """A source in utf8mb4_unicode_ci (MySQL 8's kind of default) next to a results table in the server default
    would make the anti-join fail with 'Illegal mix of collations'; case-distinct binary ids must stay distinct."""
    db, connect = mysql_db
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (acc VARCHAR(40) COLLATE utf8mb4_unicode_ci, code VARBINARY(20), "
                    "note_text TEXT) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)",
                        [("a1", b"k", "clear"), ("a2", b"K", "opacity"), ("a3", b"k ", "clear lungs")])
    conn.close()
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.0) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(hosts=[server.url], source=(
            f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "notes"\nid_columns = ["code"]\n'
            'text_column = "note_text"\ncolumns = ["acc"]')))
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 0, err
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 0 and "0 notes to do" in out, out + err
        id_exp = tmp_path / "exp2.toml"
        id_exp.write_text(experiment_toml(hosts=[server.url], name="by-acc", results='table = "acc_results"',
                                          source=(f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "notes"\n'
                                                  'id_columns = ["acc"]\ntext_column = "note_text"')))
        code, out, err = cli(capsys, "--run", str(id_exp))
        assert code == 0, err
        code, out, err = cli(capsys, "--run", str(id_exp))
        assert code == 0 and "0 notes to do" in out, out + err
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT code FROM pna_results ORDER BY code")
        assert [r[0] for r in cur.fetchall()] == [b"K", b"k", b"k "]
    conn.close()


def test_killed_read_and_write_connections_lose_and_double_nothing(tmp_path, mysql_db, capsys, private_ledger):
    """KILL the streaming read, then the writer, from a second connection: the read starts over without handing out
    what the run holds, the batch is sent again on a new connection, every note ends with exactly one row."""
    import threading

    from ledger import Ledger

    db, connect = mysql_db
    conn = connect()
    filler = "Lungs: " + "clear and well expanded. " * 320  # ~8 KB a note: the stream outgrows socket buffers
    with conn.cursor() as cur:
        cur.execute(SOP_TABLE)
        cur.executemany("INSERT INTO PNA2_100_RadNotes VALUES (%s, %s, %s)",
                        [(i, f"ACC{i}", f"{i} {filler}".encode()) for i in range(3000)])
    conn.close()
    env = write_env(tmp_path / ".env", db)
    killed = {"reader": 0, "writer": 0}

    def killer():
        admin = connect()
        deadline = time.time() + 60
        with admin.cursor() as cur:
            while time.time() < deadline and not all(killed.values()):
                cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s "
                            "AND table_name = 'pna_results'", (db,))
                if not cur.fetchone()[0]:
                    time.sleep(0.01)
                    continue
                cur.execute("SELECT COUNT(*) FROM pna_results")
                done = cur.fetchone()[0]
                # the run's reader connected first, its writer at the first batch: the lowest and highest ids
                cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID() "
                            "ORDER BY id", (db,))
                ids = [r[0] for r in cur.fetchall()]
                if done >= 300 and not killed["reader"] and len(ids) >= 2:
                    cur.execute(f"KILL {ids[0]}")
                    killed["reader"] = ids[0]
                elif done >= 1500 and killed["reader"] and not killed["writer"] and ids and ids[-1] > killed["reader"]:
                    cur.execute(f"KILL {ids[-1]}")
                    killed["writer"] = ids[-1]
                time.sleep(0.01)
        admin.close()

    with StandinOllama(latency=0.003, slots=16) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=sop_source(env.name), hosts=[server.url], run="concurrency = 16",
                                       results='table = "pna_results"\nbatch_size = 50'))
        t = threading.Thread(target=killer)
        t.start()
        code, out, err = cli(capsys, "--run", str(exp))
        t.join()
    assert killed["reader"] >= 1 and killed["writer"] >= 1, killed
    assert code == 0, out + err
    assert "reading the notes still to do again" in out
    rows = result_rows(connect)
    assert len(rows) == 3000 and len({r[0] for r in rows}) == 3000
    [run] = Ledger(private_ledger).list_runs()
    assert run["counts"]["done"] == 3000 and run["counts"]["valid"] == 3000
    units = Ledger(private_ledger).units(run["run_id"])
    assert len(units) == 3000


def test_ids_the_databases_collation_takes_for_one_are_answered_once(tmp_path, mysql_db, capsys, private_ledger):
    """`ACC1`/`acc1` and `B2`/`B2 ` are distinct to Python but one key to utf8mb4_general_ci: only the first note of
    each is sent, every later one is a duplicate_id, and the ledger's answered notes equal the table's rows (before:
    both sent, both recorded valid, the second overwrote the first's row)."""
    db, connect = mysql_db
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (accession VARCHAR(32) COLLATE utf8mb4_general_ci, note_text TEXT)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s)", [
            ("ACC1", "RLL consolidation, air bronchograms."), ("acc1", "completely normal study"),
            ("B2", "Left basilar opacity."), ("B2 ", "No acute findings."), ("C3", "Clear lungs.")])
    conn.close()
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.0, slots=2) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "notes"\n'
                                              'id_columns = ["accession"]\ntext_column = "note_text"',
                                       hosts=[server.url], results='table = "pna_results"\nbatch_size = 10'))
        code, out, err = cli(capsys, "--run", str(exp))
        sent = server.stats()["chat"]
    assert code == 0, err
    assert "2 ids occur more than once in the source" in out
    assert sent == 3  # ACC1, B2, C3: the copies are never sent
    units = [u for rec in journal_records(private_ledger) for u in rec.get("units", [])]
    copies = sorted(u["id"] for u in units if u["outcome"] == "error" and u["error"] == "duplicate_id")
    assert len(copies) == 2 and {c.strip().lower() for c in copies} == {"acc1", "b2"}  # whichever of each came later
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM pna_results")
        rows = cur.fetchone()[0]
    conn.close()
    run = ledger_runs(private_ledger)[0]
    c = run["counts"]
    assert rows == 3 == c["valid"] + c["invalid"] + c["empty"] and c["errors"] == 2


def test_a_results_table_without_its_unique_key_or_with_unfit_columns_is_refused_up_front(tmp_path, mysql_db, capsys):
    """A table restored without its keys turned every upsert into an insert (--rerun-invalid added second rows), and
    an INT `response` or a VARCHAR(5) `explanation` failed only at the first batch, after the model had answered."""
    db, connect = mysql_db
    fill(connect, 6)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.0) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=sop_source(env.name), hosts=[server.url]))
        assert cli(capsys, "--run", str(exp), "--limit", "2")[0] == 0
        conn = connect()
        with conn.cursor() as cur:  # what a dump restored without indexes leaves
            cur.execute("CREATE TABLE keyless AS SELECT * FROM pna_results")
            cur.execute("DROP TABLE pna_results")
            cur.execute("RENAME TABLE keyless TO pna_results")
        conn.close()
        sent = server.stats()["chat"]
        code, out, err = cli(capsys, "--run", str(exp), "--rerun-invalid")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "has no unique key on (`experiment`, `patientvisitid`, `accession`)" in err and "ADD UNIQUE KEY" in err
        conn = connect()
        with conn.cursor() as cur:
            cur.execute("ALTER TABLE pna_results ADD UNIQUE KEY uq_experiment_unit (experiment, patientvisitid, "
                        "accession)")
            cur.execute("UPDATE pna_results SET explanation = LEFT(explanation, 5)")
            cur.execute("ALTER TABLE pna_results MODIFY explanation VARCHAR(5)")
        conn.close()
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 2 and "column explanation holds 5 characters, and a explanation answer may have 200" in err
        assert server.stats()["chat"] == sent  # nothing was sent for either
        assert result_rows(connect) and len(result_rows(connect)) == 2


def test_a_sqlite_results_table_without_its_unique_key_is_refused(tmp_path, capsys):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'clear')")
    conn.execute("CREATE TABLE pna_results (experiment TEXT, note_id INTEGER, response TEXT, explanation TEXT, "
                 "valid INTEGER, attempts INTEGER, truncated INTEGER, run_id TEXT, model TEXT, prompt_hash TEXT, "
                 "created_at TEXT)")
    conn.commit()
    conn.close()
    with StandinOllama(latency=0.0) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source='kind = "sqlite"\npath = "notes.db"\ntable = "notes"\n'
                                              'id_columns = ["note_id"]\ntext_column = "note_text"', hosts=[server.url]))
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 2 and "has no unique key on" in err and server.stats()["chat"] == 0
