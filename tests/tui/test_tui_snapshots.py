"""What the terminal shows, pinned: Servers and Models at 80x24 and 120x40 (pytest-textual-snapshot).

Everything that changes between runs is fixed: the stand-ins listen on fixed ports, /api/ps reports a fixed expiry,
round trips read 3 ms, the clock is 2026-12-01 12:00 UTC, user@host and the ledger path are given. Regenerate with
`python -m pytest -n 0 tests/tui/test_tui_snapshots.py --snapshot-update` only with the pinned textual version, then look
at every changed SVG before committing it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.pinned import NOW, PinnedRoundTrip
from tests.helpers.tuikit import build_app, pinned_resources, until, write_config
from tests.standin.standin_ollama import StandinOllama

PORTS = (23434, 23435)  # below the ephemeral range (32768+), so no port-0 server of another test can hold one
DOWN = "http://127.0.0.1:23436"  # nothing listens there
SIZES = [(80, 24), (120, 40)]

pytestmark = pytest.mark.xdist_group("pinned")  # the fixed ports, with test_tui_snapshots_more


@pytest.fixture
def pinned(tmp_path, monkeypatch):
    with pinned_resources():
        yield from _pinned(tmp_path, monkeypatch)


def _pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    a = StandinOllama(port=PORTS[0], models=("llama3", "qwen2.5:7b", "mistral", "llama3.1:70b"),
                      loaded=("llama3", "qwen2.5:7b"), expires_at="2026-12-01T12:05:00Z").start()
    b = StandinOllama(port=PORTS[1], models=("smollm2:135m",), loaded=(), version="0.12.3").start()
    write_config(tmp_path / "user-config.toml", [(a.url, "l40s-a"), (b.url, "a100-b"), (DOWN, None)])
    experiments = tmp_path / "workspace" / "experiments"
    experiments.mkdir(parents=True)
    (experiments / "pneumonia.toml").write_text(f'[model]\nhosts = ["{a.url}"]\n')

    def app():
        return build_app(tmp_path, prober=PinnedRoundTrip(), who="researcher@login1", now=lambda: NOW,
                         ledger_dir=Path("/home/researcher/.local/share/notes-tui"))

    try:
        yield app
    finally:
        a.stop()
        b.stop()
        monkeypatch.delenv("TZ")
        time.tzset()


async def probed(pilot):
    app = pilot.app
    await until(pilot, lambda: all(app.health(s.url).state != "unknown" for s in app.state.servers), what="probes")


async def models_listed(pilot):
    await probed(pilot)
    await pilot.press("2")
    await until(pilot, lambda: pilot.app.state.model_list(pilot.app.state.selected_url).loaded_once, what="models")
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_servers_screen(snap_compare, pinned, size):
    assert snap_compare(pinned(), terminal_size=size, run_before=probed)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_models_screen(snap_compare, pinned, size):
    assert snap_compare(pinned(), terminal_size=size, run_before=models_listed)


def test_snapshot_files_are_in_the_repository():
    folder = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"
    assert len(list(folder.glob("*.svg"))) == 2 * len(SIZES)  # and 3 * 2 in test_tui_snapshots_more
