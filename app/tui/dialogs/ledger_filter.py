"""Which runs the Ledger screen lists: by experiment, model (a name without a tag matches every tag) and status."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Select, Static

from app.tui.base import NotesDialog

STATUSES = ("completed", "running", "interrupted", "failed", "crashed")


@dataclass
class Filters:
    experiment: str | None = None
    model: str | None = None
    status: str | None = None

    def text(self) -> str:
        parts = [f"{k} {v}" for k, v in (("experiment", self.experiment), ("model", self.model),
                                           ("status", self.status)) if v]
        return ", ".join(parts) or "none"


class LedgerFilterScreen(NotesDialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, current):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(classes="dialog"):
            yield Label("Filter the runs", classes="dialog-title")
            yield Input(value=c.experiment or "", placeholder="experiment (empty: all)", id="experiment")
            yield Input(value=c.model or "", placeholder="model, e.g. llama3 or llama3:8b (empty: all)", id="model")
            yield Select([(s, s) for s in STATUSES], value=c.status or Select.NULL, prompt="any status",
                         id="status", allow_blank=True)
            yield Static("tab: next field · enter applies · escape cancels", classes="hint")

    @on(Input.Submitted)
    def _apply(self, _event) -> None:
        status = self.query_one("#status", Select).value
        self.dismiss(Filters(experiment=self.query_one("#experiment", Input).value.strip() or None,
                             model=self.query_one("#model", Input).value.strip() or None,
                             status=None if status is Select.NULL else str(status)))

    def action_cancel(self) -> None:
        self.dismiss(None)
