"""Where the ledger lives. Nothing here creates directories: readers must not litter home dirs."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "NOTES_TUI_LEDGER"


def resolve_ledger_dir(cli_value: str | None) -> Path:
    """`--ledger DIR`, else $NOTES_TUI_LEDGER, else $XDG_DATA_HOME/notes-tui, else ~/.local/share/notes-tui."""
    # Empty strings count as unset: `NOTES_TUI_LEDGER= notes-tui ...` is how people "unset" in job scripts.
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "notes-tui"
    return Path.home() / ".local" / "share" / "notes-tui"
