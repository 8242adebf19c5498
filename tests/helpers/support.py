"""Paths, skipping what is missing here, the shared MariaDB's parameters and the experiment file most tests start
from."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip a test whose real part is missing here; under CI=true the missing part is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{why} (CI=true: required)")
        pytest.skip(why)


MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def mysql_up() -> bool:
    try:
        import pymysql

        pymysql.connect(connect_timeout=3, **MYSQL).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def write_env(path: Path, database: str, password: str = "") -> Path:
    path.write_text(f"DB_USER=root\nDB_PASS={password}\nDB_HOST=127.0.0.1\nDB_PORT=3306\nDB_NAME={database}\n")
    path.chmod(0o600)
    return path


PNEUMONIA_ANSWER = """
[answer]
max_attempts = 2
[answer.fields.response]
type = "choice"
choices = ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]
[answer.fields.explanation]
type = "text"
max_length = 200
[answer.fallback]
response = "(4) LLM output invalid"
explanation = "LLM output failed validation."
"""


def experiment_toml(*, source: str, hosts: list[str] | None = None, name: str = "pna-test", model: str = "llama3",
                    options: str = "", extra: str = "", results: str = 'table = "pna_results"\nbatch_size = 10',
                    run: str = "", backend: str = "ollama") -> str:
    model_lines = f'backend = "{backend}"\n'
    if backend == "ollama":
        model_lines += f'name = "{model}"\nhosts = {list(hosts or [])!r}\ntimeout_s = 10\n'.replace("'", '"')
    text = f"""
name = "{name}"
[model]
{model_lines}
[model.options]
temperature = 0.0
seed = 7
num_ctx = 4096
{options}
[prompt]
system = "You are a medical analysis assistant."
user = "Does this note suggest pneumonia is a diagnosis? Note: {{note}}"
{PNEUMONIA_ANSWER}
[source]
{source}
[results]
{results}
[run]
grace_s = 5
{run}
{extra}
"""
    return textwrap.dedent(text)


def make_notes_db(path: Path) -> None:
    """A SQLite notes table of one note, for tests that need a source and nothing more."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'Chest X-ray: clear lungs.')")
    conn.commit()
    conn.close()
