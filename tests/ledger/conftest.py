from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_env_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTES_TUI_LEDGER", raising=False)
