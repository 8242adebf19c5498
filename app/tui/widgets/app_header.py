"""The top line: the app, its screens with their keys (the current one marked), who and where."""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.widget import Widget


def user_at_host() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname().split('.')[0]}"


def short_path(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text == home or text.startswith(home + os.sep) else text


class AppHeader(Widget):
    DEFAULT_CSS = """
    AppHeader { dock: top; height: 1; background: $panel; color: $foreground; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(**kwargs)
        self.current = current

    def render(self) -> Table:
        app = self.app
        left = Text(" notes-tui ", style="bold")
        for mode, (key, title) in app.SCREEN_KEYS.items():  # type: ignore[attr-defined]
            label = f" {key} {title} "
            left.append(label, style="reverse bold" if mode == self.current else "")
        right = Text(f"{user_at_host()} · ledger {short_path(app.ledger_dir)} ",  # type: ignore[attr-defined]
                     style="dim", overflow="ellipsis", no_wrap=True)
        grid = Table.grid(expand=True)
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right", no_wrap=True, overflow="ellipsis")
        grid.add_row(left, right)
        return grid
