"""`?`: every key, by screen."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from app.tui.base import NotesDialog
from app.tui.keys import Key, app_keys, screen_keys


class HelpScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield Static(self._table(), id="help")
            yield Static("escape closes · ctrl+p finds any action by name", classes="hint")

    def _table(self) -> Table:
        app = self.app
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()

        def section(title: str, keys: list[Key]) -> None:
            table.add_row(Text(title, style="bold underline"), "")
            for k in keys:
                table.add_row(k.keys, k.what)
            table.add_row("", "")

        section("Everywhere", app_keys(type(app)))
        for mode, screen_cls in app.MODES.items():
            key, title = app.SCREEN_KEYS[mode]
            section(f"{key} {title}", screen_keys(screen_cls))
        return table

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)
