"""`notes-tui try --id ID` finds the note whose id is shown as ID (issue 24 item 7), whatever the id columns' types:
a SQLite column without a type holding integers (the demo table built from the CSV), the typed table the CSV now
builds, a text id column, two id columns, MariaDB. An id that does not exist is still one line."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import stat

import pytest

from app.errors import UserError
from app.experiment import load_experiment
from app.sources.seed import build_from_csv
from app.sources.sqlite import SqliteSource
from app.tryout.pick import one
from tests.helpers.notes import fill, sop_source
from tests.helpers.runhelp import cli
from tests.helpers.support import ROOT, experiment_toml, write_env
from tests.standin.standin_ollama import StandinOllama

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
NOWHERE = "http://127.0.0.1:9"  # source-level tests load the experiment and never ask the model


def notes_db(path, declared: str, ids) -> None:
    """A notes table whose id column is declared `declared` ('' for no type, as the CSV builder made it)."""
    conn = sqlite3.connect(path)
    conn.execute(f'CREATE TABLE notes ("note_id" {declared}, "note_text")')
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CHEST X-RAY {i}: findings clear.") for i in ids])
    conn.commit()
    conn.close()


def write_exp(tmp_path, url: str, source: str = SOURCE):
    path = tmp_path / "exp.toml"
    path.write_text(experiment_toml(source=source, hosts=[url]))
    return path


@pytest.fixture
def server():
    with StandinOllama(latency=0.0, slots=2) as s:
        yield s


def test_an_untyped_sqlite_id_column_holding_integers_finds_the_id_as_typed(tmp_path, server, capsys):
    """The reported bug: the table the CSV builder made (no column types) holds note_id 5 as an integer, and the
    typed '5' was compared with it as text."""
    notes_db(tmp_path / "notes.db", "", range(10))
    path = str(write_exp(tmp_path, server.url))
    code, out, err = cli(capsys, "try", path, "--id", "5")
    assert code == 0, err
    assert "note 5: valid" in out and "CHEST X-RAY 5: findings clear." in out and "[1/1]" in out
    code, out, err = cli(capsys, "try", path, "--id", "5", "--json")
    (note,) = json.loads(out)["notes"]
    assert note["id"] == "5" and note["note"].startswith("CHEST X-RAY 5:")


def test_an_id_that_does_not_exist_is_still_one_line(tmp_path, server, capsys):
    notes_db(tmp_path / "notes.db", "", range(10))
    code, out, err = cli(capsys, "try", str(write_exp(tmp_path, server.url)), "--id", "50")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no note with id '50' in SQLite" in err and "Traceback" not in err
    assert server.stats()["chat"] == 0


def demo_workspace(tmp_path, url: str):
    """The demo's source section on a copy of the demo CSV: the database is built on first use."""
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "experiments" / "data" / "demo_notes.csv", tmp_path / "data" / "demo_notes.csv")
    source = ('kind = "sqlite"\npath = "data/demo.db"\nseed_csv = "data/demo_notes.csv"\ntable = "rad_notes"\n'
              'id_columns = ["note_id"]\ntext_column = "note_text"\ncolumns = ["accession"]')
    return write_exp(tmp_path, url, source), tmp_path / "data" / "demo.db"


def test_the_demo_table_built_from_the_csv_has_column_types_and_finds_an_id(tmp_path, server, capsys):
    path, db = demo_workspace(tmp_path, server.url)
    code, out, err = cli(capsys, "try", str(path), "--id", "5")
    assert code == 0, err
    with open(tmp_path / "data" / "demo_notes.csv", newline="", encoding="utf-8") as f:
        fifth = next(r for r in csv.DictReader(f) if r["note_id"] == "5")
    assert "note 5: valid" in out and fifth["note_text"][:60] in out
    conn = sqlite3.connect(db)
    declared = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(rad_notes)")}
    stored = conn.execute("SELECT typeof(note_id), typeof(accession), typeof(note_text), COUNT(*) FROM rad_notes "
                          "GROUP BY 1, 2, 3").fetchall()
    conn.close()
    assert declared == {"note_id": "INTEGER", "accession": "TEXT", "modality": "TEXT", "gold_label": "TEXT",
                        "note_text": "TEXT"}
    assert stored == [("integer", "text", "text", 51)]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # still the owner's only, as before


def test_a_demo_database_built_before_with_untyped_columns_still_finds_an_id(tmp_path, server, capsys):
    """A demo.db made by the old builder stays (it also holds the results): not rebuilt, and the id still found."""
    path, db = demo_workspace(tmp_path, server.url)
    conn = sqlite3.connect(db)
    conn.execute('CREATE TABLE rad_notes ("note_id", "accession", "modality", "gold_label", "note_text")')
    with open(tmp_path / "data" / "demo_notes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    conn.executemany("INSERT INTO rad_notes VALUES (?, ?, ?, ?, ?)", [[int(r[0]), *r[1:]] for r in rows])
    conn.commit()
    conn.close()
    code, out, err = cli(capsys, "try", str(path), "--id", "5")
    assert code == 0, err
    assert "note 5: valid" in out
    conn = sqlite3.connect(db)
    assert [r[2] for r in conn.execute("PRAGMA table_info(rad_notes)")] == [""] * 5  # the same table, not rebuilt
    conn.close()


def test_the_csv_builder_types_each_column_by_its_values(tmp_path):
    csv_path = tmp_path / "notes.csv"
    csv_path.write_text("note_id,mrn,visit,score,note_text\n"
                        "5,007,-3,1.5,first\n"
                        "12,120,,2,second\n"
                        "9223372036854775807,99,4,x,third\n")
    assert build_from_csv(tmp_path / "n.db", csv_path, "notes") == 3
    conn = sqlite3.connect(tmp_path / "n.db")
    declared = [r[2] for r in conn.execute("PRAGMA table_info(notes)")]
    rows = conn.execute("SELECT note_id, mrn, visit, score, note_text FROM notes ORDER BY rowid").fetchall()
    conn.close()
    # mrn keeps its leading zero (text); an empty cell of an integer column is NULL
    assert declared == ["INTEGER", "TEXT", "INTEGER", "TEXT", "TEXT"]
    assert rows == [(5, "007", -3, "1.5", "first"), (12, "120", None, "2", "second"),
                    (9223372036854775807, "99", 4, "x", "third")]


def test_a_text_id_column_finds_its_ids_as_typed(tmp_path, server, capsys):
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("CREATE TABLE notes (note_id TEXT, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [("5", "CHEST X-RAY five."), ("A7", "CHEST X-RAY A7."),
                                                         ("007", "CHEST X-RAY double-o-seven.")])
    conn.commit()
    conn.close()
    path = str(write_exp(tmp_path, server.url))
    seen = {}
    for typed in ("5", "A7", "007"):
        code, out, err = cli(capsys, "try", path, "--id", typed, "--json")
        assert code == 0, err
        (note,) = json.loads(out)["notes"]
        seen[typed] = (note["id"], note["note"])
    code, _, err = cli(capsys, "try", path, "--id", "7")
    assert seen == {"5": ("5", "CHEST X-RAY five."), "A7": ("A7", "CHEST X-RAY A7."),
                    "007": ("007", "CHEST X-RAY double-o-seven.")}
    assert code == 2 and "no note with id '7'" in err and err.count("\n") == 1


def test_two_untyped_id_columns_find_the_id_as_typed(tmp_path, server, capsys):
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute('CREATE TABLE notes ("visit", "accession", "note_text")')
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)",
                     [(1000 + i, f"ACC{i:05d}" if i % 2 else i, f"PORTABLE CHEST {i}.") for i in range(10)])
    conn.commit()
    conn.close()
    source = SOURCE.replace('id_columns = ["note_id"]', 'id_columns = ["visit", "accession"]')
    path = str(write_exp(tmp_path, server.url, source))
    code, out, err = cli(capsys, "try", path, "--id", "1007|ACC00007", "--json")
    assert code == 0, err
    assert [(n["id"], n["note"]) for n in json.loads(out)["notes"]] == [("1007|ACC00007", "PORTABLE CHEST 7.")]
    code, out, err = cli(capsys, "try", path, "--id", "1004|4", "--json")  # both parts integers
    assert code == 0, err
    assert [(n["id"], n["note"]) for n in json.loads(out)["notes"]] == [("1004|4", "PORTABLE CHEST 4.")]
    code, _, err = cli(capsys, "try", path, "--id", "1004|ACC00007")
    assert code == 2 and "no note with id '1004|ACC00007'" in err


@pytest.mark.parametrize("declared", ["", "INTEGER", "TEXT", "NUMERIC", "BLOB", "VARCHAR(20)", "BIGINT"])
@pytest.mark.parametrize("stored", [5, "5"])
def test_every_sqlite_column_affinity_finds_5_as_typed(tmp_path, declared, stored):
    """At the source: whatever the column's type (none at all included) and however 5 is stored in it."""
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute(f'CREATE TABLE notes ("note_id" {declared}, "note_text")')
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(4, "four"), (stored, "five"), ("A1", "a-one")])
    conn.commit()
    conn.close()
    source = SqliteSource(load_experiment(write_exp(tmp_path, NOWHERE)))
    try:
        unit = one(source, "5")
        assert (unit.uid, unit.text) == ("5", "five")
        assert one(source, "A1").text == "a-one"
        with pytest.raises(UserError, match="no note with id '6'"):
            one(source, "6")
        with pytest.raises(UserError, match="no note with id '05'"):
            one(source, "05")  # ids match as shown: 05 is not how 5 is shown
    finally:
        source.close()


def test_a_grouped_untyped_source_finds_the_group_as_typed(tmp_path):
    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute('CREATE TABLE notes ("note_id", "patient", "note_text")')
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)",
                     [(i, i % 3, f"note {i}") for i in range(9)])
    conn.commit()
    conn.close()
    source_toml = SOURCE.replace('id_columns = ["note_id"]', 'group_by = ["patient"]\norder_by = ["note_id"]')
    source = SqliteSource(load_experiment(write_exp(tmp_path, NOWHERE, source_toml)))
    try:
        unit = one(source, "2")
    finally:
        source.close()
    assert unit.uid == "2" and unit.text == "Note 1: note 2\n\nNote 2: note 5\n\nNote 3: note 8"


@pytest.mark.mysql
def test_mariadb_integer_and_text_id_columns_find_the_id_as_typed(tmp_path, mysql_db, server, capsys):
    db, connect = mysql_db
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE int_notes (note_id INT PRIMARY KEY, note_text TEXT)")
        cur.executemany("INSERT INTO int_notes VALUES (%s, %s)", [(i, f"CHEST X-RAY {i}.") for i in range(10)])
        cur.execute("CREATE TABLE text_notes (note_id VARCHAR(20) PRIMARY KEY, note_text TEXT)")
        cur.executemany("INSERT INTO text_notes VALUES (%s, %s)", [("5", "text five"), ("007", "text seven")])
    conn.close()
    env = write_env(tmp_path / ".env", db)
    mysql = (f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "int_notes"\nid_columns = ["note_id"]\n'
             'text_column = "note_text"')
    path = str(write_exp(tmp_path, server.url, mysql))
    code, out, err = cli(capsys, "try", path, "--id", "5", "--json")
    assert code == 0, err
    assert [(n["id"], n["note"]) for n in json.loads(out)["notes"]] == [("5", "CHEST X-RAY 5.")]
    code, out, err = cli(capsys, "try", path, "--id", "50")
    assert code == 2 and out == "" and err.count("\n") == 1 and "no note with id '50' in MySQL" in err
    text_path = str(write_exp(tmp_path, server.url, mysql.replace("int_notes", "text_notes")))
    code, out, err = cli(capsys, "try", text_path, "--id", "007", "--json")
    assert code == 0, err
    assert [(n["id"], n["note"]) for n in json.loads(out)["notes"]] == [("007", "text seven")]
    code, _, err = cli(capsys, "try", text_path, "--id", "7")
    assert code == 2 and "no note with id '7'" in err


@pytest.mark.mysql
def test_mariadb_two_id_columns_still_find_the_id_as_typed(tmp_path, mysql_db, server, capsys):
    db, connect = mysql_db
    fill(connect, 12)
    env = write_env(tmp_path / ".env", db)
    path = str(write_exp(tmp_path, server.url, sop_source(env.name)))
    code, out, err = cli(capsys, "try", path, "--id", "1011|ACC00011", "--json")
    assert code == 0, err
    assert [n["id"] for n in json.loads(out)["notes"]] == ["1011|ACC00011"]
