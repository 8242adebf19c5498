"""Submit an experiment to Slurm (`b`), as `notes-tui submit FILE [--time T] [--array N]` does: the job's time limit
(default `[slurm.run] time`, else the partition's own) and how many array tasks (1: one job; N: a job array, each task
its own shard — MySQL sources only)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static

from app.cluster.submit import MAX_ARRAY
from app.settings.user import SLURM_TIME
from app.tui.base import NotesDialog


@dataclass(frozen=True)
class SubmitChoice:
    time: str | None  # None: [slurm.run] time, else the partition's default
    array: int  # 1: one job; N > 1: a job array of N shards


def check_choice(time: str, array: str, sqlite: bool) -> SubmitChoice | str:
    """The choice, or the one line that says what is wrong with it."""
    time, array = time.strip(), array.strip() or "1"
    if time and not re.match(SLURM_TIME, time):
        return f"time {time!r}: not a Slurm time — D-HH:MM:SS, HH:MM:SS or minutes"
    if not array.isdigit() or not 1 <= int(array) <= MAX_ARRAY:
        return f"array {array!r}: a whole number from 1 (one job) to {MAX_ARRAY}"
    if int(array) > 1 and sqlite:  # as `submit --array` refuses: many jobs writing one SQLite file over NFS corrupt it
        return f"array {array}: a SQLite source takes one job (an array needs MySQL)"
    return SubmitChoice(time or None, int(array))


class SubmitScreen(NotesDialog[SubmitChoice | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, path: Path, sqlite: bool, default_time: str | None):
        super().__init__()
        self.path, self.sqlite, self.default_time = path, sqlite, default_time

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Submit {self.path.name} to Slurm", classes="dialog-title")
            with Horizontal(classes="fields labels"):
                yield Label("time limit")
                yield Label("array", classes="short")
            with Horizontal(classes="fields"):
                yield Input(value=self.default_time or "", placeholder="empty: the partition's default",
                            id="time")
                yield Input(value="1", id="array", classes="short")
            where = "default: your [slurm.run] time" if self.default_time else "empty: the partition's limit"
            yield Static(f"time: D-HH:MM:SS or minutes; {where}", classes="hint")
            if self.sqlite:
                yield Static("array: 1 only — this source is SQLite (an array needs MySQL)", classes="hint")
            else:
                yield Static("array: 1 = one job; N = N tasks, each answering its own shard", classes="hint")
            yield Static("enter submits (sbatch) · tab: next field · escape cancels", classes="hint")
            yield Static("", id="error", classes="error")

    def on_mount(self) -> None:
        self.query_one("#time", Input).focus()

    @on(Input.Submitted)
    def _submit(self, _event: Input.Submitted) -> None:
        choice = check_choice(self.query_one("#time", Input).value, self.query_one("#array", Input).value,
                              self.sqlite)
        if isinstance(choice, str):
            self.query_one("#error", Static).update(choice)
            return
        self.dismiss(choice)

    def action_cancel(self) -> None:
        self.dismiss(None)
