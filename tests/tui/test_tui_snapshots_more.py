"""Screens 3–5 pinned as the terminal shows them, at 80x24 and 120x40: Experiments (a valid and a broken file, notes
to do counted), Runs (a run followed from a fixed feed), Ledger (forged runs with fixed ids and times). The paths,
the clock, user@host and the server's port are fixed; see test_tui_snapshots.py for how to regenerate."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from app.context import load_context
from app.tui.app import make_app
from tests.helpers.pinned import NOW, PinnedRoundTrip, pinned_ledger
from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import pinned_resources, until, write_config
from tests.standin.standin_ollama import StandinOllama

ROOT = Path("/tmp/notes-tui-snapshots")  # fixed: the header and the Experiments title show these paths
SIZES = [(80, 24), (120, 40)]

pytestmark = pytest.mark.xdist_group("pinned")  # the fixed port and ROOT, with test_tui_snapshots
SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


@pytest.fixture
def pinned(monkeypatch):
    with pinned_resources():
        yield from _pinned(monkeypatch)


def _pinned(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    shutil.rmtree(ROOT, ignore_errors=True)
    experiments = ROOT / "workspace" / "experiments"
    experiments.mkdir(parents=True)
    server = StandinOllama(port=23437).start()
    conn = sqlite3.connect(experiments / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}") for i in range(37)])
    conn.commit()
    conn.close()
    (experiments / "pna.toml").write_text(experiment_toml(source=SOURCE, hosts=[server.url], name="pna-v1"))
    (experiments / "broken.toml").write_text(experiment_toml(source=SOURCE, hosts=[server.url]).replace(
        "temperature = 0.0", "temperature = 9.0"))
    pinned_ledger(ROOT / "ledger")
    config = write_config(ROOT / "config.toml", [(server.url, "l40s-a")])
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))

    def app():
        ctx = load_context(ROOT / "workspace", {"NOTES_TUI_CONFIG": str(config)})
        return make_app(ctx, ROOT / "ledger", prober=PinnedRoundTrip(), who="researcher@login1", now=lambda: NOW)

    try:
        yield app
    finally:
        server.stop()
        monkeypatch.delenv("TZ")
        time.tzset()


def on_screen(key: str, ready):
    async def run_before(pilot):
        await pilot.press(key)
        await until(pilot, lambda: ready(pilot.app), timeout=20, what=f"screen {key} ready")
        await pilot.pause(0.3)

    return run_before


def experiments_ready(app) -> bool:
    rows = {k: c for k, c in app.screen.query_one("#experiments-table")._rows}
    return any(str(c[4]) == "37" for c in rows.values())


def runs_ready(app) -> bool:
    f = app.screen.followed
    return f is not None and f.counts is not None and f.counts.done == 120 and len(f.rates) >= 1


def ledger_ready(app) -> bool:
    return len(app.screen.query_one("#ledger-table")._rows) == 3


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_experiments_screen(snap_compare, pinned, size):
    assert snap_compare(pinned(), terminal_size=size, run_before=on_screen("3", experiments_ready))


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_runs_screen(snap_compare, pinned, size):
    assert snap_compare(pinned(), terminal_size=size, run_before=on_screen("4", runs_ready))


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_ledger_screen(snap_compare, pinned, size):
    assert snap_compare(pinned(), terminal_size=size, run_before=on_screen("5", ledger_ready))
