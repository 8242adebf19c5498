"""The top line: the app, its screens with their keys (the current one marked), who and where."""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

from rich.text import Text
from textual.widget import Widget

from app.tui.tones import tone


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


def fit_path(path: str, room: int) -> str:
    """`/home/researcher/.local/share/notes-tui` in `room` characters: `…/share/notes-tui`."""
    parts = path.split("/")
    while len(path) > room and len(parts) > 2:
        parts = parts[1:] if parts[0] == "…" else ["…", *parts[2:]]
        path = "/".join(parts)
    return path


MIN_PATH = 16  # below this the path goes without the words before it


class AppHeader(Widget):
    DEFAULT_CSS = """
    AppHeader { dock: top; height: 1; background: $panel; color: $foreground; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(**kwargs)
        self.current = current

    def render(self) -> Text:
        app = self.app
        text = Text(" notes-tui ", style="bold", no_wrap=True, overflow="crop")
        for mode, (key, title) in app.SCREEN_KEYS.items():  # type: ignore[attr-defined]
            text.append(f" {key} {title} ", style="reverse bold" if mode == self.current else "")
        # the screens and their keys always show; then the ledger path, which matters more than who (at 80 columns
        # "root@vm · le…" said neither): its leading folders go first, then the words around it, then who
        room = self.size.width - text.cell_len - 2
        path = short_path(app.ledger_dir)  # type: ignore[attr-defined]
        right = ""
        for lead in (f"{app.who} · ledger ", "ledger ", ""):  # type: ignore[attr-defined]
            fitted = fit_path(path, room - len(lead) - 1)
            if len(lead) + len(fitted) + 1 <= room and (fitted == path or len(fitted) >= MIN_PATH or not lead):
                right = f"{lead}{fitted} "
                break
        else:  # not even the last two folders fit: the last one, which names it (its end if it is too long)
            last = "…/" + path.rstrip("/").rsplit("/", 1)[-1]
            right = (last if len(last) < room else "…" + last[-(room - 2):]) + " " if room > 2 else ""
        text.append(" " * max(1, self.size.width - text.cell_len - len(right)))
        text.append(right, style=tone(self.app, "quiet"))
        return text
