"""Add a server by URL: checked as it is typed into the config, saved to ~/.config/notes-tui/config.toml."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, Static

from app.errors import UserError
from app.tui.base import NotesDialog
from app.tui.widgets.app_header import short_path


class AddServerScreen(NotesDialog[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add an Ollama server", classes="dialog-title")
            yield Input(placeholder="http://HOST:PORT, e.g. http://gpu-n57:48362", id="url")
            yield Input(placeholder="a short name (optional), e.g. l40s-a", id="name")
            yield Static(f"tab: next field · enter saves it in {short_path(self.app.ctx.config_path)} · "
                         "escape cancels", classes="hint")
            yield Static("", id="error", classes="error")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        from app.settings.user import save_server

        url = self.query_one("#url", Input).value.strip()
        name = self.query_one("#name", Input).value.strip() or None
        try:
            entry = save_server(self.app.ctx.config_path, url, name)
        except UserError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.dismiss(entry.url)

    def action_cancel(self) -> None:
        self.dismiss(None)
