"""One line under a screen's content for what just happened: an error is one line, never a traceback."""

from __future__ import annotations

from rich.text import Text

from app.tui.tones import tone
from app.tui.widgets.shown import Shown


class StatusLine(Shown):
    DEFAULT_CSS = """
    StatusLine { height: auto; max-height: 3; padding: 0 1; }
    """

    def say(self, message: str, error: bool = False) -> None:
        prefix = "error: " if error else ""
        self.show(Text(prefix + message, style=tone(self.app, "bad") if error else ""))
        self.set_class(error, "-error")

    def clear(self) -> None:
        self.show("")
