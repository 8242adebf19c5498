from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ledger.ids import new_run_id
from ledger.paths import resolve_ledger_dir

CROCKFORD = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_ulid_shape_time_and_monotonic() -> None:
    ids = [new_run_id() for _ in range(5000)]
    assert all(CROCKFORD.match(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # strictly increasing, even within one ms
    decoded_ms = int("".join(f"{'0123456789ABCDEFGHJKMNPQRSTVWXYZ'.index(c):05b}" for c in ids[-1][:10]), 2)
    assert abs(decoded_ms - time.time() * 1000) < 5000


def test_resolve_ledger_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert resolve_ledger_dir(None) == tmp_path / "home/.local/share/notes-tui"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_ledger_dir(None) == tmp_path / "xdg/notes-tui"
    monkeypatch.setenv("NOTES_TUI_LEDGER", str(tmp_path / "env"))
    assert resolve_ledger_dir(None) == tmp_path / "env"
    assert resolve_ledger_dir(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_ledger_dir("~/x") == tmp_path / "home/x"
    assert not (tmp_path / "cli").exists()  # resolving never creates
