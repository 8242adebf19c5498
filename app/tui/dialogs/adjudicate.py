"""Set a note's reference label: the answer values to choose from (each with the cells that gave it), the current
reference marked, and an optional comment. What is chosen is recorded by the study screen in the ledger's
adjudications, never in the source database."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from app.tui.base import NotesDialog
from ledger.report.layout import label_text


class AdjudicateScreen(NotesDialog[tuple[Any, str | None] | None]):
    BINDINGS = [Binding("escape", "close", "Close", show=False)]

    def __init__(self, unit: str, labels: list[Any], reference: Any, votes: dict[str, Any]):
        super().__init__()
        self.unit, self.labels, self.reference, self.votes = unit, labels, reference, votes

    def compose(self) -> ComposeResult:
        options = []
        for i, value in enumerate(self.labels):
            gave = [name for name, v in self.votes.items() if v == value]
            mark = "  ← reference now" if value == self.reference else ""
            options.append(Option(f"{label_text(value)}   ({len(gave)} of {len(self.votes)} cells){mark}", id=str(i)))
        with Vertical(classes="dialog"):
            yield Label(f"reference label of note {self.unit}", classes="dialog-title")
            yield OptionList(*options, id="adj-labels")
            yield Input(placeholder="comment (optional; no note text, please)", id="adj-comment", max_length=2000)
            yield Static("↑/↓ a label · enter records it · tab: the comment · escape: nothing recorded", classes="hint")

    def on_mount(self) -> None:
        labels = self.query_one("#adj-labels", OptionList)
        labels.highlighted = self.labels.index(self.reference) if self.reference in self.labels else 0
        labels.focus()

    @on(OptionList.OptionSelected, "#adj-labels")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self._finish(int(event.option.id or 0))

    @on(Input.Submitted, "#adj-comment")
    def _commented(self, _event: Input.Submitted) -> None:
        highlighted = self.query_one("#adj-labels", OptionList).highlighted
        self._finish(highlighted or 0)

    def _finish(self, index: int) -> None:
        comment = self.query_one("#adj-comment", Input).value.strip() or None
        self.dismiss((self.labels[index], comment))

    def action_close(self) -> None:
        self.dismiss(None)
