"""Run an experiment here: `notes-tui --run` started in its own session, its output in the ledger dir, so the run
goes on when the terminal or the SSH connection goes away."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from app.tui.base import NotesDialog
from app.tui.widgets.check_box import CheckBox


@dataclass(frozen=True)
class RunChoice:
    limit: int | None
    rerun_invalid: bool


class RunHereScreen(NotesDialog[RunChoice | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Run {self.path.name} here", classes="dialog-title")
            yield Input(placeholder="at most this many notes (empty: every note to do)", id="limit")
            yield CheckBox("answer again the notes whose answer was invalid", id="rerun")
            yield Static("The run is a process of its own: it keeps going when this app or your SSH connection "
                         "ends, and the Runs screen (4) finds it again.", classes="hint")
            yield Static("enter starts it · escape cancels", classes="hint")
            yield Static("", id="error", classes="error")

    @on(Input.Submitted)
    def _start(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text and (not text.isdigit() or int(text) < 1):
            self.query_one("#error", Static).update(f"{text!r}: give a whole number of notes, or leave it empty")
            return
        self.dismiss(RunChoice(int(text) if text else None, self.query_one("#rerun", CheckBox).value))

    def action_cancel(self) -> None:
        self.dismiss(None)
