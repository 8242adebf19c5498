"""Start an Ollama server job from one of the user's profiles (`[profiles.NAME]` in the user config)."""

from __future__ import annotations

import re

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from app.settings.user import SLURM_TIME, Profile
from app.tui.base import NotesDialog
from app.tui.widgets.app_header import short_path


def profile_summary(name: str, p: Profile) -> str:
    gpu = p.gres or (f"gpus={p.gpus}" if p.gpus else "no GPU")
    cpus = f"{p.cpus} CPU{'s' if p.cpus != 1 else ''}" if p.cpus else ""
    parts = [p.partition or "default partition", gpu, cpus, p.mem or "",
             p.time or "site default time"]
    return f"{name}: " + ", ".join(x for x in parts if x)


class StartJobScreen(NotesDialog[tuple[str, str | None] | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def compose(self) -> ComposeResult:
        profiles = self.app.ctx.config.profiles
        with Vertical(classes="dialog"):
            yield Label("Start an Ollama server job", classes="dialog-title")
            if not profiles:
                yield Static(f"No profiles in {short_path(self.app.ctx.config_path)} yet — add [profiles.NAME] "
                             "sections (slurm/config.example.toml has the SOP's L40S and A100 ones).", classes="error")
                yield Static("escape closes", classes="hint")
                return
            yield OptionList(*(Option(profile_summary(n, p), id=n) for n, p in profiles.items()), id="profiles")
            yield Input(placeholder="time limit, e.g. 0-04:00:00 (empty: the profile's)", id="time")
            yield Static("↑/↓ choose · enter submits (sbatch) · escape cancels", classes="hint")
            yield Static("", id="error", classes="error")

    def on_mount(self) -> None:
        if self.app.ctx.config.profiles:
            self.query_one("#profiles", OptionList).highlighted = 0
            self.query_one("#profiles", OptionList).focus()

    @on(OptionList.OptionSelected)
    @on(Input.Submitted)
    def _submit(self, _event) -> None:
        options = self.query_one("#profiles", OptionList)
        if options.highlighted is None:
            return
        profile = options.get_option_at_index(options.highlighted).id
        time = self.query_one("#time", Input).value.strip() or None
        if time and not re.match(SLURM_TIME, time):
            self.query_one("#error", Static).update(f"{time!r} is not a Slurm time — write D-HH:MM:SS or HH:MM:SS")
            return
        self.dismiss((str(profile), time))

    def action_cancel(self) -> None:
        self.dismiss(None)
