"""What `notes-tui check` shows, for one experiment, in a dialog: config, source, notes to do, long notes, results
table, model and digest, options, prompt hash, answer schema, and the first prompt — note text, because you asked."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from app.errors import UserError
from app.tui.base import NotesDialog
from app.tui.tones import tone


class CheckScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q", "close", "Close", show=False)]

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.text = Text()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"check {self.path.name}", classes="dialog-title")
            with VerticalScroll(id="check-body"):
                yield Static("checking: reading the source, asking the server…", id="check")
            yield Static("↑/↓ scroll · escape closes · the first prompt holds note text: it is shown only here",
                         classes="hint")

    def on_mount(self) -> None:
        self.query_one("#check-body").focus()
        self._run()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _run(self) -> None:
        from app.tryout.check import check_lines

        try:
            for line, warning in check_lines(str(self.path)):
                self.app.call_from_thread(self._add, line, warning)
        except UserError as exc:
            self.app.call_from_thread(self._add, f"error: {exc}", True)
        except Exception as exc:  # noqa: BLE001 - a failing check is a line here, not a crash of the app
            self.app.call_from_thread(self._add, f"error: {exc.__class__.__name__}: {exc}", True)

    def _add(self, line: str, warning: bool) -> None:
        if self.text.plain:
            self.text.append("\n")
        self.text.append(line, style=tone(self.app, "bad") if warning else "")
        self.query_one("#check", Static).update(self.text)

    def action_close(self) -> None:
        self.dismiss(None)
