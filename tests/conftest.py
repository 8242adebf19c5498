"""Fixtures shared by the tests: a private ledger per test, a throw-away MariaDB database."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # support, runhelp and standin_ollama live here

from support import MYSQL, mysql_up, need  # noqa: E402


@pytest.fixture(autouse=True)
def private_ledger(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("NOTES_TUI_LEDGER", str(ledger))
    # never the user's own ~/.config/notes-tui: saved servers and quotas come from the test
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(tmp_path / "user-config.toml"))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    for var in ("DB_USER", "DB_PASS", "DB_HOST", "DB_NAME", "DB_PORT"):
        monkeypatch.delenv(var, raising=False)
    return ledger


@pytest.fixture
def mysql_db():
    """A fresh database on the real MariaDB, dropped afterwards. Yields (name, connect())."""
    need(mysql_up(), "MariaDB is not reachable on 127.0.0.1:3306")
    import pymysql

    name = "nt_" + uuid.uuid4().hex[:10]
    admin = pymysql.connect(autocommit=True, **MYSQL)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

    def connect():
        return pymysql.connect(database=name, autocommit=True, charset="utf8mb4", **MYSQL)

    try:
        yield name, connect
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def pytest_terminal_summary(terminalreporter):
    """The figures of the fault scenarios that ran: every one ends in faultkit.check_outcome."""
    faultkit = sys.modules.get("faultkit")
    if faultkit is None or not faultkit.TALLY:
        return
    tally = faultkit.TALLY
    scenarios = sorted({label for label, _ in tally})
    terminalreporter.write_line(
        f"fault scenarios: {len(scenarios)} checked ({len(tally)} checks), {sum(o.notes for _, o in tally)} notes, "
        f"lost {sum(len(o.lost) for _, o in tally)}, doubled {sum(len(o.doubled) for _, o in tally)}")
