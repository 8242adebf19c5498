"""A server job looked into (`l` on the Servers screen): the end of its output file, read again every few seconds
while the job writes on; `c` turns to what it runs — the profile's command and the sbatch options as notes-tui
submitted them, what Slurm holds of it, and its script. app/cluster/joblook.py does the reading."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from app.cluster import present
from app.cluster.joblook import TAIL_LINES, JobLook
from app.cluster.slurm import ServerJob
from app.tui.base import NotesDialog
from app.tui.tones import tone

REREAD_S = 3.0
HINTS = {"output": "↑/↓ scroll · c: its command and script · r: read again · esc closes",
         "command": "↑/↓ scroll · c: back to its output · esc closes"}


class JobOutputScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q,l", "close", "Close", show=False),
                Binding("c", "turn", "Command and script", show=False),
                Binding("r", "reread", "Read again", show=False)]

    def __init__(self, job: ServerJob, looker: Callable[[ServerJob], JobLook] | None = None):
        super().__init__()
        self.job = job
        self.looker = looker
        self.look: JobLook | None = None
        self.view = "output"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="job-dialog"):
            yield Label(self._title(), classes="dialog-title", id="job-title")
            with VerticalScroll(id="job-body"):
                yield Static("asking Slurm where the job writes…", id="job-text")
            yield Static(HINTS["output"], classes="hint", id="job-hint")

    def on_mount(self) -> None:
        self.query_one("#job-body").focus()
        self._load()
        self.set_interval(REREAD_S, self._tick)

    def _title(self) -> str:
        what = "the end of its output" if self.view == "output" else "what it runs"
        return f"server job {self.job.job_id} ({self.job.name}) — {what}"

    def _look(self, job: ServerJob) -> JobLook:
        from app.cluster.joblook import look_at_job
        from app.cluster.slurm import Slurm

        app = self.app
        return look_at_job(Slurm(job.cluster), job.job_id, job.name, app.ledger_dir, app.ctx.environ)

    @work(thread=True, exclusive=True, group="job-look", exit_on_error=False)
    def _load(self) -> None:
        try:
            look = (self.looker or self._look)(self.job)
        except Exception as exc:  # noqa: BLE001 - what went wrong is a line in the dialog, not a crash
            self.app.call_from_thread(self._failed, f"{exc.__class__.__name__}: {exc}")
            return
        self.app.call_from_thread(self._arrived, look)

    def _failed(self, why: str) -> None:
        self.query_one("#job-text", Static).update(Text(f"cannot look into job {self.job.job_id}: {why}",
                                                        style=tone(self.app, "bad")))

    def _arrived(self, look: JobLook) -> None:
        self.look = look
        self._show_look(at_end=True)

    @work(thread=True, exclusive=True, group="job-reread", exit_on_error=False)
    def _reread(self, look: JobLook) -> None:
        before = (list(look.lines), look.size, look.output_problem)
        look.reread()
        if (look.lines, look.size, look.output_problem) != before:
            self.app.call_from_thread(self._show_look)

    def _tick(self) -> None:
        if self.look is not None and self.view == "output":
            self._reread(self.look)

    def _show_look(self, at_end: bool = False) -> None:
        look = self.look
        if look is None:
            return
        body = self.query_one("#job-body", VerticalScroll)
        follow = at_end or body.scroll_y >= body.max_scroll_y - 1  # at the end: stay there as lines come
        text = output_text(self.app, look) if self.view == "output" else command_text(self.app, look)
        self.query_one("#job-text", Static).update(text)
        if self.view == "output" and follow:
            self.call_after_refresh(body.scroll_end, animate=False)
        elif self.view == "command" and at_end:
            self.call_after_refresh(body.scroll_home, animate=False)

    def action_turn(self) -> None:
        self.view = "command" if self.view == "output" else "output"
        self.query_one("#job-title", Label).update(self._title())
        self.query_one("#job-hint", Static).update(HINTS[self.view])
        self._show_look(at_end=True)

    def action_reread(self) -> None:
        if self.look is not None:
            self._reread(self.look)

    def action_close(self) -> None:
        self.dismiss(None)


def output_text(app, look: JobLook) -> Text:
    quiet = tone(app, "quiet")
    text = Text()
    if look.output is not None:
        size = f" · {present.size(look.size)}" if look.size is not None else ""
        shown = f" · its last {len(look.lines)} lines" if len(look.lines) >= TAIL_LINES else ""
        text.append(f"{look.output}{size}{shown}\n", style=quiet)
    if look.output_problem:
        text.append(look.output_problem, style=tone(app, "warn"))
        return text
    if not look.lines:
        text.append("(empty: the job has written nothing yet)", style=quiet)
        return text
    text.append("\n".join(look.lines))
    return text


def command_text(app, look: JobLook) -> Group:
    """What the job runs: as notes-tui submitted it, as Slurm holds it, its script. Each value wraps under itself."""
    strong, quiet = tone(app, "strong"), tone(app, "quiet")
    parts: list = []

    def rows(pairs: list[tuple[str, str]]) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style=strong, no_wrap=True, min_width=8)
        grid.add_column(overflow="fold")
        for key, value in pairs:
            grid.add_row(key, value)
        return grid

    sub = look.submitted
    if sub:
        parts.append(Text(f"as notes-tui submitted it (profile {sub.get('profile')}, "
                          f"{present.local_time(sub.get('submitted_at'))})", style=quiet))
        pairs = [("command", sub.get("command") or "-"),
                 ("kind", f"{sub.get('kind') or 'ollama'} · idle {_idle(sub.get('idle'))}"
                  + ("" if sub.get("isolate", True) else " · isolate = false")),
                 ("script", str(sub.get("script") or "-")),
                 ("sbatch", " ".join(sub.get("options") or []) or "-")]
        if sub.get("models_dir"):
            pairs.append(("models", str(sub["models_dir"])))
        parts.append(rows(pairs))
    else:
        parts.append(Text("not submitted by notes-tui from this ledger dir: its script (below) says what it runs",
                          style=quiet))
    facts = look.slurm
    if facts:
        parts.append(Text(f"\nas Slurm holds it (scontrol show job {look.job_id})", style=quiet))
        state = facts.get("JobState", "-") + (f" ({facts['Reason']})" if facts.get("Reason", "None") != "None" else "")
        parts.append(rows([
            ("state", f"{state} · partition {facts.get('Partition', '-')} · node {facts.get('NodeList', '-')}"),
            ("TRES", facts.get("TRES") or facts.get("ReqTRES") or "-"),
            ("time", f"limit {facts.get('TimeLimit', '-')} · ran {facts.get('RunTime', '-')} · started "
             f"{facts.get('StartTime', '-').replace('T', ' ')}"),
            ("runs", facts.get("Command", "-")),
            ("work dir", facts.get("WorkDir", "-"))]))
    if look.script is not None:
        parts.append(Text(f"\nits script (scontrol write batch_script {look.job_id} -)", style=quiet))
        parts.append(Text(look.script))
    elif look.script_problem:
        parts.append(Text(f"\n{look.script_problem}", style=tone(app, "warn")))
    return Group(*parts)


def _idle(text: str | None) -> str:
    """The job's idle limit as submitted (`1800s`, `0`): `30m00s`, `never`."""
    from app.settings.user import idle_seconds
    from ledger.clock import format_duration

    try:
        seconds = idle_seconds(text) if text else None
    except ValueError:
        return str(text)
    return "-" if not text else "never" if seconds is None else format_duration(seconds)
