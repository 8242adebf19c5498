"""Fixtures shared by the tests: a private ledger per test, a throw-away MariaDB database."""

from __future__ import annotations

import fcntl
import os
import sys
import uuid

import pytest

from tests.helpers.support import MYSQL, mysql_up, need


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: pytest without it must still load this file
def pytest_xdist_auto_num_workers(config):
    """Two workers a core for `-n auto`: most tests wait (for a child process, a stand-in's latency, a lock held for
    seconds) rather than compute. Fast tier on 2 cores: 178 s with 4 workers, 262-287 s with 2."""
    return 2 * len(os.sched_getaffinity(0))


@pytest.hookimpl(tryfirst=True)  # before xdist turns xdist_group marks into the groups --dist loadgroup schedules
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture(autouse=True)
def machine_share(request, tmp_path_factory):
    """Under xdist, a `serial` test runs while no other test does: a readers-writer lock over the workers of this
    session (every other test holds it shared). The turnstile gives a waiting serial test precedence; without it
    the other worker, taking the shared lock again after each of its tests, could keep it waiting to the end."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    session_dir = tmp_path_factory.getbasetemp().parent  # the workers' basetemps are popen-gwN inside it
    serial = request.node.get_closest_marker("serial") is not None
    with open(session_dir / "machine.turnstile", "a") as turnstile, open(session_dir / "machine.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        finally:
            if not serial:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if serial:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


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


FAULT_TALLY: list[tuple[str, int, int, int]] = []  # (label, notes, lost, doubled) of every check, from every worker


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """faultkit.check_outcome tallies in the process that ran the test; the report carries the tally to the
    process that prints the summary (under xdist, another one)."""
    report = (yield).get_result()
    faultkit = sys.modules.get("tests.helpers.faultkit")
    if faultkit is not None and faultkit.TALLY:
        checks = [(label, o.notes, len(o.lost), len(o.doubled)) for label, o in faultkit.TALLY]
        faultkit.TALLY.clear()
        report.user_properties.append(("fault_tally", checks))


def pytest_runtest_logreport(report):
    for name, value in report.user_properties:
        if name == "fault_tally":
            FAULT_TALLY.extend(tuple(check) for check in value)


def pytest_terminal_summary(terminalreporter):
    """The figures of the fault scenarios that ran: every one ends in faultkit.check_outcome."""
    if not FAULT_TALLY:
        return
    scenarios = {label for label, *_ in FAULT_TALLY}
    terminalreporter.write_line(
        f"fault scenarios: {len(scenarios)} checked ({len(FAULT_TALLY)} checks), "
        f"{sum(notes for _, notes, _, _ in FAULT_TALLY)} notes, lost {sum(lost for *_, lost, _ in FAULT_TALLY)}, "
        f"doubled {sum(doubled for *_, doubled in FAULT_TALLY)}")
