"""Ask for the name of a model to pull."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from app.cluster.models import ServerError
from app.cluster.pulls import check_model_name
from app.tui.base import NotesDialog


class PullModelScreen(NotesDialog[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, server_label: str):
        super().__init__()
        self.server_label = server_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Pull a model to {self.server_label}", classes="dialog-title")
            yield Input(placeholder="a model name, e.g. llama3.1:8b or qwen2.5:7b", id="name")
            yield Static("enter queues the pull (one at a time per server) · escape cancels", classes="hint")
            yield Static("", id="error", classes="error")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        try:
            name = check_model_name(event.value)
        except ServerError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
