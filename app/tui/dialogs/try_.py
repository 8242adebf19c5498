"""Try: a handful of notes to the model, each with its note text, raw reply, validated answer or validation error,
attempts, tokens, latency, truncation, and agreement with gold labels when the experiment names them. Nothing is
written. With `check`, the one place that shows note text, because the user asked."""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static

from app.errors import UserError
from app.tui.base import NotesDialog
from app.tui.tones import tone

VERDICT_TONE = {"valid": "ok", "invalid": "bad", "error": "bad", "empty": "warn"}


class TrialScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape", "close", "Close", show=False)]

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"try {self.path.name}: a few notes, nothing written", classes="dialog-title")
            with Horizontal(classes="fields labels"):
                yield Label("notes", classes="short")
                yield Label("random seed")
                yield Label("or one note id")
            with Horizontal(classes="fields"):
                yield Input(value="5", placeholder="5", id="n", classes="short")
                yield Input(placeholder="empty: first notes", id="seed")
                yield Input(placeholder="as the ledger shows it", id="id")
            with VerticalScroll(id="try-body"):
                yield Static("enter sends the notes to the model", id="try-reply")
            yield Static("", id="try-done")
            yield Static("enter sends · tab: next field · escape closes · note text is shown here because you asked",
                         classes="hint")

    def on_mount(self) -> None:
        self.query_one("#n", Input).focus()

    @on(Input.Submitted)
    def _go(self, _event: Input.Submitted) -> None:
        values = {k: self.query_one(f"#{k}", Input).value.strip() for k in ("n", "seed", "id")}
        body = self.query_one("#try-reply", Static)
        try:
            n = int(values["n"] or "5")
            seed = int(values["seed"]) if values["seed"] else None
        except ValueError:
            body.update(Text("error: notes and seed are whole numbers", style=tone(self.app, "bad")))
            return
        if n < 1:
            body.update(Text("error: try at least one note", style=tone(self.app, "bad")))
            return
        body.update(Text("asking the model…"))
        self.query_one("#try-done", Static).update(Text("asking the model…", style=tone(self.app, "accent")))
        self._try(n, seed, values["id"] or None)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _try(self, n: int, seed: int | None, unit_id: str | None) -> None:
        from app.experiment import load_experiment
        from app.tryout import try_notes
        from app.tryout.report import report_lines, summary

        started = time.monotonic()
        try:
            report = try_notes(load_experiment(self.path), n=1 if unit_id else n, seed=seed, unit_id=unit_id)
            text = self._styled(report_lines(report), report)
            counts = summary(report).splitlines()[0].split(";")[0]  # the whole summary ends the replies above
            done = Text(f"done in {time.monotonic() - started:.1f} s · {counts}", style=tone(self.app, "ok"),
                        no_wrap=True, overflow="ellipsis")
        except UserError as exc:
            text = Text(f"error: {exc}", style=tone(self.app, "bad"))
            done = Text("not sent: see the error above", style=tone(self.app, "bad"))
        except Exception as exc:  # noqa: BLE001 - a failed try is a line here, not a crash of the app
            text = Text(f"error: {exc.__class__.__name__}: {exc}", style=tone(self.app, "bad"))
            done = Text("failed: see the error above", style=tone(self.app, "bad"))
        self.app.call_from_thread(self.query_one("#try-reply", Static).update, text)
        self.app.call_from_thread(self.query_one("#try-done", Static).update, done)

    def _styled(self, lines: list[str], report) -> Text:
        text = Text()
        verdicts = iter(report.notes)
        for line in lines:
            if line.startswith("[") and "] note " in line:
                note = next(verdicts)
                text.append(line + "\n", style=tone(self.app, VERDICT_TONE.get(note.outcome, "strong")))
            elif line.startswith("--- "):
                text.append(line + "\n", style=tone(self.app, "quiet"))
            else:
                text.append(line + "\n")
        text.rstrip()
        return text

    def action_close(self) -> None:
        self.dismiss(None)
