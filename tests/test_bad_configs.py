"""Each mistake a researcher can make in an experiment file ends in one clear line and exit status 2."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys

import pytest
from support import ROOT, experiment_toml, write_env

SQLITE_SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
HOST = ["http://127.0.0.1:9"]


def base(**kw) -> str:
    kw.setdefault("source", SQLITE_SOURCE)
    kw.setdefault("hosts", HOST)
    return experiment_toml(**kw)


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (id, toml text, fragment the error line must contain)
CASES = [
    ("broken-toml", base() + "\n[model\n", "not valid TOML"),
    ("unknown-top-key", 'nmae = "x"\n' + base(), "nmae: unknown key in the top level"),
    ("misspelt-option", _swap(base(), "temperature = 0.0", "temprature = 0.0"),
     "model.options.temprature: unknown key in [model.options]"),
    ("wrong-type", _swap(base(), "num_ctx = 4096", 'num_ctx = "big"'), "model.options.num_ctx"),
    ("num-ctx-zero", _swap(base(), "num_ctx = 4096", "num_ctx = 0"), "model.options.num_ctx"),
    ("concurrency-zero", base(run="concurrency = 0"), "run.concurrency"),
    ("missing-name", _swap(base(), 'name = "pna-test"', ""), "name: required key is missing"),
    ("placeholder-unknown", _swap(base(), "Note: {note}", "MRN {mrn} Note: {note}"),
     "placeholder {mrn} is not provided by the source"),
    ("no-note-placeholder", _swap(base(), "Note: {note}", "Note: here"), "never uses {note}"),
    ("bad-placeholder", _swap(base(), "Note: {note}", "Note: {note!r}"), "is not a plain {column}"),
    ("choice-without-choices", _swap(base(), 'choices = ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]', ""),
     "a choice field needs choices"),
    ("duplicate-choices", _swap(base(), '"(3) Unable to say"]', '"(2) Unlikely"]'), "the same choice is listed twice"),
    ("sql-injection-table", _swap(base(), 'table = "notes"', 'table = "x; DROP TABLE y"'), "not a plain table name"),
    ("bad-id-column", _swap(base(), 'id_columns = ["note_id"]', 'id_columns = ["note id"]'), "not a plain column name"),
    ("bad-results-table", base(results='table = "results-2024"'), "results.table"),
    ("id-column-named-like-ours", _swap(base(), 'id_columns = ["note_id"]', 'id_columns = ["experiment"]'),
     "has the name of a column notes-tui writes"),
    ("text-without-max-length", _swap(base(), "max_length = 200", ""), "a text field needs max_length"),
    ("fallback-unknown-field", base() + '\n[answer.fallback2]\n', "unknown key"),
    ("fallback-wrong-field", _swap(base(), 'explanation = "LLM output failed validation."', 'reason = "x"'),
     "fallback for a field that is not in [answer.fields]"),
    ("host-not-url", base(hosts=["gpu-n57"]), "is not a server address"),
    ("no-hosts", _swap(base(), 'hosts = ["http://127.0.0.1:9"]', ""), "no Ollama server given"),
    ("hosts-auto", _swap(base(), 'hosts = ["http://127.0.0.1:9"]', 'hosts = "auto"'), 'hosts = "auto"'),
    ("unknown-backend", _swap(base(), 'backend = "ollama"', 'backend = "openai"'), "model.backend"),
    ("table-and-query", _swap(base(), 'table = "notes"', 'table = "notes"\nquery = "SELECT * FROM notes"'),
     "give exactly one of table or query"),
    ("query-not-select", _swap(base(), 'table = "notes"', 'query = "DELETE FROM notes"'), "one SELECT statement"),
    ("sqlite-path-missing", _swap(base(), 'path = "notes.db"', 'path = "nowhere/notes.db"'), "no SQLite database"),
    ("sqlite-unknown-column", _swap(base(), 'text_column = "note_text"', 'text_column = "body"'),
     "the database rejected the notes query"),
    ("gguf-missing", _swap(_swap(base(), 'backend = "ollama"', 'backend = "llamacpp"\ngguf = "missing.gguf"'),
                           'name = "llama3"', ""), "no GGUF file"),
    ("mysql-missing-env", _swap(base(), SQLITE_SOURCE,
                                'kind = "mysql"\ntable = "notes"\nid_columns = ["id"]\ntext_column = "t"'),
     "DB_USER is not set"),
    ("mysql-env-file-missing", _swap(base(), SQLITE_SOURCE, 'kind = "mysql"\nenv_file = "nope.env"\ntable = "notes"\n'
                                     'id_columns = ["id"]\ntext_column = "t"'), "no such file"),
    ("server-unreachable", base(), "no Ollama server answers"),
]


def run_cli(args, cwd, env=None):
    e = dict(os.environ)
    e.pop("CI", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=60)


def make_notes_db(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'Chest X-ray: clear lungs.')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("case_id,text,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_config_gives_one_line_and_exit_2(tmp_path, case_id, text, fragment):
    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    exp.write_text(text)
    res = run_cli(["--run", str(exp)], cwd=ROOT)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert fragment in lines[0], lines[0]
    assert lines[0].startswith("notes-tui: error: ")
    # nothing written: no results table, no journal
    conn = sqlite3.connect(tmp_path / "notes.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"notes"}


def test_at_least_fifteen_cases():
    assert len(CASES) >= 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.mysql
def test_wrong_db_password_names_the_fix_and_never_prints_it(tmp_path, mysql_db):
    db, _ = mysql_db
    password = "Zebra-Quartz-7731"
    env = write_env(tmp_path / ".env", db, password=password)
    text = base(source=f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "notes"\n'
                       'id_columns = ["id"]\ntext_column = "t"')
    exp = tmp_path / "exp.toml"
    exp.write_text(text)
    res = run_cli(["--run", str(exp)], cwd=ROOT)
    assert res.returncode == 2
    assert "access denied — check DB_USER and DB_PASS" in res.stderr
    assert password not in res.stdout + res.stderr
    res = run_cli(["check", str(exp)], cwd=ROOT)
    assert res.returncode == 2 and password not in res.stdout + res.stderr


@pytest.mark.mysql
def test_unknown_mysql_table(tmp_path, mysql_db):
    db, _ = mysql_db
    env = write_env(tmp_path / ".env", db)
    exp = tmp_path / "exp.toml"
    exp.write_text(base(source=f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "no_such_notes"\n'
                               'id_columns = ["id"]\ntext_column = "t"'))
    res = run_cli(["--run", str(exp)], cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert "the database rejected the notes query" in res.stderr and "no_such_notes" in res.stderr


def test_group_readable_env_file_warns_with_chmod(tmp_path, mysql_db):
    db, _ = mysql_db
    env = write_env(tmp_path / ".env", db)
    env.chmod(0o644)
    exp = tmp_path / "exp.toml"
    exp.write_text(base(source=f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "no_such_notes"\n'
                               'id_columns = ["id"]\ntext_column = "t"'))
    res = run_cli(["check", str(exp)], cwd=ROOT)
    assert f"chmod 600 {env}" in res.stderr


def test_model_not_pulled_says_how_to_pull(tmp_path):
    from standin_ollama import StandinOllama

    make_notes_db(tmp_path / "notes.db")
    with StandinOllama(models=("mistral",)) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(base(hosts=[server.url]))
        res = run_cli(["--run", str(exp)], cwd=ROOT)
    assert res.returncode == 2
    assert "'llama3' is not on" in res.stderr and "ollama pull llama3" in res.stderr


@pytest.mark.parametrize("args,fragment", [
    (["--run"], "argument --run: expected one argument"),
    (["--limit", "0", "--run", "x.toml"], "--limit: must be at least 1"),
    (["ledger"], "required: SUBCOMMAND"),
    (["--run", "x.toml", "check", "y.toml"], "cannot be combined"),
    (["--run", "no/such/file.toml"], "no such experiment file"),
    ([], "the TUI needs a terminal"),
    (["ledger", "list", "--ledger"], "argument --ledger: expected one argument"),
])
def test_command_line_mistakes_are_one_line(args, fragment):
    res = run_cli(args, cwd=ROOT)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.stderr
