"""One note's text, read from the experiment's source database when asked (t on the study screen) and shown here
only: never written to the ledger, a log or a file."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from app.tui.base import NotesDialog
from app.tui.tones import tone


class NoteTextScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q,t", "close", "Close", show=False)]

    def __init__(self, exp: Any, unit: str):
        super().__init__()
        self.exp, self.unit = exp, unit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"note {self.unit}", classes="dialog-title")
            with VerticalScroll(id="note-body"):
                yield Static("reading the note from the source…", id="note-text")
            yield Static("read from the source now, shown here only, never stored · ↑/↓ scroll · escape closes",
                         classes="hint")

    def on_mount(self) -> None:
        self.query_one("#note-body").focus()
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _read(self) -> None:
        from app.errors import UserError
        from app.sources import open_source
        from app.tryout.pick import one

        try:
            source = open_source(self.exp)
            try:
                unit = one(source, self.unit)
            finally:
                source.close()
            content = Text(unit.text) if unit.text is not None else Text("(the note is empty)", style=tone(self.app, "warn"))
        except UserError as exc:
            content = Text(str(exc), style=tone(self.app, "bad"))
        except Exception as exc:  # noqa: BLE001 - a source that cannot be read is a line in the dialog
            content = Text(f"cannot read the note: {exc.__class__.__name__}: {exc}", style=tone(self.app, "bad"))
        self.app.call_from_thread(self.query_one("#note-text", Static).update, content)

    def action_close(self) -> None:
        self.dismiss(None)
