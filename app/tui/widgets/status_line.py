"""One line under a screen's content for what just happened: an error is one line, never a traceback. A message ages
out (10 s; an error 60 s, or until the next message), so an old "saved server X" does not read as news later."""

from __future__ import annotations

from rich.text import Text

from app.tui.tones import tone
from app.tui.widgets.shown import Shown

SAID_S = 10.0  # how long a message stays
ERROR_S = 60.0  # how long an error stays (a message after it replaces it sooner)


class StatusLine(Shown):
    DEFAULT_CSS = """
    StatusLine { height: auto; max-height: 3; padding: 0 1; }
    """
    _age_timer = None

    def say(self, message: str, error: bool = False, *, lasting: bool = False) -> None:
        """Show `message`; `lasting`: until the next message (work under way, whose outcome is said when it ends)."""
        prefix = "error: " if error else ""
        self.show(Text(prefix + message, style=tone(self.app, "bad") if error else ""))
        self.set_class(error, "-error")
        self._stop_aging()
        if not lasting:
            self._age_timer = self.set_timer(ERROR_S if error else SAID_S, self.clear)

    def clear(self) -> None:
        self._stop_aging()
        self.show("")
        self.remove_class("-error")

    def _stop_aging(self) -> None:
        if self._age_timer is not None:
            self._age_timer.stop()
            self._age_timer = None
