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

# The terms of a line of the Runs screen's per-note log (app.runs.followed.log_line), e.g.
# "14:02:11 valid   1007|ACC00007  response=(1) Likely  a1 812 ms 412/38 tok"
LOG_LEGEND = [
    ("14:02:11", "when the note's answer was written (local time)"),
    ("valid, invalid", "the answer passed the schema; or failed every attempt and the fallback was written"),
    ("empty, error", "the note had no text (not sent); or no answer could be had (not written)"),
    ("1007|ACC00007", "the note's id: its id columns joined with |"),
    ("response=…", "the labels of the answer's choice and bool fields (never free text)"),
    ("a1, a2", "attempts: a2 = the first answer was invalid and the model was asked again"),
    ("812 ms", "the model's time for the note, every attempt together"),
    ("412/38 tok", "tokens in (prompt and note) / out (the answer)"),
    ("TRUNCATED", "the note was longer than the context and was cut"),
    ("sparkline", "notes/s, one point per change of the recent rate, from zero (bottom) to its highest point (top)"),
]


class HelpScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield Static(self._table(), id="help")
            yield Static("setup not working? notes-tui doctor (in a shell) checks it all, with fixes", classes="hint")
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
            section(f"{key} {title}", screen_keys(screen_cls, slurm=app.jobs.available))
        table.add_row(Text("4 Runs: log", style="bold underline"), "the per-note log, term by term")
        for term, meaning in LOG_LEGEND:
            table.add_row(term, meaning)
        return table

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)
