"""One model's details from /api/show: context length, family, parameters, template, license."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from app.cluster import present
from app.cluster.models import ModelDetails, ModelEntry, ServerError, show_model
from app.tui.base import NotesDialog
from app.tui.tones import tone


class ModelDetailsScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q,i", "close", "Close", show=False)]

    def __init__(self, url: str, entry: ModelEntry):
        super().__init__()
        self.url, self.entry, self.model = url, entry, entry.name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.model, classes="dialog-title")
            with VerticalScroll(id="details-body"):
                yield Static("asking the server…", id="details")
            yield Static("↑/↓ scroll · escape closes", classes="hint")

    def on_mount(self) -> None:
        self.run_worker(self._load(), exit_on_error=False)

    async def _load(self) -> None:
        body = self.query_one("#details", Static)
        try:
            details = await show_model(self.url, self.model)
        except ServerError as exc:
            body.update(Text(f"error: {exc}", style=tone(self.app, "bad")))
            return
        body.update(render_details(details, self.entry))
        self.query_one("#details-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def render_details(d: ModelDetails, entry: ModelEntry) -> Text:
    text = Text()
    rows = [("context length", str(d.context_length or "unknown")), ("family", d.family or "-"),
            ("parameters", d.parameter_size or "-"), ("quantization", d.quantization or "-"),
            ("size", present.size(entry.size)), ("modified", present.modified(entry.modified_at)),
            ("digest", entry.digest or "-")]
    if d.capabilities:
        rows.append(("capabilities", ", ".join(d.capabilities)))
    for key, value in rows:
        text.append(f"{key:<15}", style="bold")
        text.append(value + "\n")
    for title, body in (("parameters", d.parameters), ("template", d.template), ("license", d.license)):
        text.append(f"\n{title}\n", style="bold underline")
        text.append((body.strip() or "(none)") + "\n")
    text.rstrip()
    return text
