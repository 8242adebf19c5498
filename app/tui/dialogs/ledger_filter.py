"""Which runs the Ledger screen lists: by experiment and model (any part of the name, any case, as `/` in k9s) and
status. Enter applies from every field, the status list included."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Select, Static

from app.tui.base import NotesDialog
from ledger.names import STATUSES


@dataclass
class Filters:
    experiment: str | None = None
    model: str | None = None
    status: str | None = None

    def text(self) -> str:
        parts = [f"{k} {v}" for k, v in (("experiment", self.experiment), ("model", self.model),
                                           ("status", self.status)) if v]
        return ", ".join(parts) or "none"

    @property
    def active(self) -> bool:
        return bool(self.experiment or self.model or self.status)


class StatusSelect(Select):
    """A Select whose enter applies the filter, as enter in the text fields does: down, up or space opens the
    list (enter there picks a status)."""

    BINDINGS = [
        Binding("down,space,up", "show_overlay", "Show menu", show=False),
        Binding("enter", "screen.apply", "Apply", show=False),
    ]


class LedgerFilterScreen(NotesDialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, current):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(classes="dialog"):
            yield Label("Filter the runs", classes="dialog-title")
            yield Input(value=c.experiment or "", placeholder="experiment, or part of its name (empty: all)",
                        id="experiment")
            yield Input(value=c.model or "", placeholder="model, or part of it: llama3, 8b (empty: all)", id="model")
            yield StatusSelect([(s, s) for s in STATUSES], value=c.status or Select.NULL, prompt="any status",
                               id="status", allow_blank=True)
            yield Static("any part of a name, any case · enter applies, from any field · tab: next field · "
                         "space: the statuses · escape cancels", classes="hint")

    @on(Input.Submitted)
    def _submitted(self, _event) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        status = self.query_one("#status", Select).value
        self.dismiss(Filters(experiment=self.query_one("#experiment", Input).value.strip() or None,
                             model=self.query_one("#model", Input).value.strip() or None,
                             status=None if status is Select.NULL else str(status)))

    def action_cancel(self) -> None:
        self.dismiss(None)
