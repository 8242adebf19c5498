"""Screen 3, Experiments: every `experiments/*.toml` of the workspace — valid or its one-line error, backend and model,
the last run from the ledger, notes to do (counted in a worker) — and what to do with one: check, edit, try, run here
(the run outlives the app), submit to Slurm. While shown, the rows follow the ledger: a run that advances or ends
changes its experiment's last run and, at most every RECOUNT_S, its notes to do; a file added, changed or removed in
the folder is read again (the app notices it: NotesApp.watch_experiments)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.widgets import DataTable

from app.errors import UserError
from app.tui.base import NotesScreen
from app.tui.tones import tone
from app.tui.widgets.app_header import AppHeader, short_path
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from app.tui.dialogs.submit import SubmitChoice

COLUMNS = (
    Col("name", "Experiment", None, min_width=14, max_width=32),
    Col("model", "Backend / model", None, min_width=12, max_width=30, keep_tag=True),
    Col("valid", "File", None, min_width=6, max_width=40, grow=1),
    Col("last", "Last run", None, min_width=12, max_width=34),
    Col("todo", "To do", 8, right=True),
)
LOOK_S = 5.0  # while the screen is shown: each experiment's last run (one import of the ledger, one query each)
RECOUNT_S = 10.0  # notes to do of an experiment whose run advances: at most this often (the count asks the source)


@dataclass
class ExperimentRow:
    """What the screen knows of one experiment file."""

    path: Path
    name: str = ""
    model: str = ""
    error: str | None = None
    description: str = ""
    exp: object = None  # the loaded Experiment when valid
    todo: int | None = None
    todo_error: str | None = None
    counting: bool = False
    last_run: dict | None = None
    details: list[str] = field(default_factory=list)
    stamp: tuple[int, int] | None = None  # the file's (mtime, size) when read
    looked: bool = False  # its last run was read from the ledger once
    ledger_error: str | None = None
    counted_at: float | None = None  # when notes to do were last counted (time.monotonic())
    recount: bool = False  # its last run moved since then
    recount_now: bool = False  # its last run ended since then: count again at once


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def experiment_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every `*.toml` of the folder with its (mtime, size): a glob and a stat per file, what the app compares every
    few seconds to notice a file added, changed or removed."""
    out = {}
    for path in sorted(folder.glob("*.toml")):
        stamp = file_stamp(path)
        if stamp is not None:
            out[str(path)] = stamp
    return out


def load_row(path: Path) -> ExperimentRow:
    from app.experiment import load_experiment

    row = ExperimentRow(path=path, name=path.stem, stamp=file_stamp(path))  # before reading: a later change is seen
    try:
        exp = load_experiment(path)
    except UserError as exc:
        row.error = str(exc).removeprefix(f"{path}: ")
        return row
    spec = exp.spec
    row.exp, row.name, row.description = exp, spec.name, spec.description
    model = spec.model.name or (exp.gguf_path.name if exp.gguf_path else "SmolLM2-135M (bundled)")
    row.model = f"{spec.model.backend} · {model}"
    hosts = "auto (server jobs)" if exp.auto_hosts else ", ".join(exp.hosts) if exp.hosts else "in-process"
    row.details = [f"source: {exp.source_label} ({spec.source.table or 'query'}) → results {spec.results.table}",
                   f"hosts: {hosts}"]
    return row


LEAVE = {"nano": "ctrl+o saves, ctrl+x leaves; ",
         "vi": "i to type, then escape and :wq saves and leaves (:q! leaves without saving); "}


def fallback_editor() -> str:
    """The editor e opens when neither $VISUAL nor $EDITOR is set: nano where it is installed (its keys are on its
    screen), else vi (on every Unix)."""
    return "nano" if shutil.which("nano") else "vi"


def last_run_text(run: dict | None) -> str:
    if not run:
        return "never run"
    counts = run.get("counts") or {}
    return f"{run['status']} {counts.get('done', 0)}/{counts.get('total', 0)} · {(run.get('started_at') or '')[:10]}"


def run_key(run: dict | None) -> tuple | None:
    """What of a last run the screen shows and follows: which run, its status, how far it got (not when it was last
    seen, which moves without the run moving)."""
    if not run:
        return None
    return run.get("run_id"), run.get("status"), (run.get("counts") or {}).get("done")


def run_ended(was: dict | None, now: dict | None) -> bool:
    """The last run is closed now and was not at the last look (it ended, or a new one ran and ended in between)."""
    if not now or now.get("status") == "running":
        return False
    return was is None or (was.get("run_id"), was.get("status")) != (now.get("run_id"), now.get("status"))


class ExperimentsScreen(NotesScreen):
    BINDINGS = [
        Binding("c", "check", "Check", id="experiments.check"),
        Binding("e", "edit", "Edit", id="experiments.edit"),
        Binding("t", "try", "Try", id="experiments.try"),
        Binding("g", "run_here", "Run here", id="experiments.run"),
        Binding("b", "submit", "Submit", id="experiments.submit"),
        Binding("r", "refresh", "Refresh", show=False, id="experiments.refresh"),
    ]
    HELP = [("enter", "check the selected experiment")]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, ExperimentRow] = {}
        self._editor_told = False  # the editor e opens without $VISUAL/$EDITOR was named (once a session)
        self._look_timer = None
        self._looking = False  # a look (ledger, then counts) is under way in a worker
        self._look_again = False  # rows were read again meanwhile: look once more when it ends

    def compose(self) -> ComposeResult:
        yield AppHeader("experiments")
        yield Shown(id="experiments-title", classes="screen-title")
        yield FitTable(COLUMNS, id="experiments-table")
        yield Shown(id="experiment-detail", classes="detail")
        yield StatusLine(id="status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.app.experiments_changed.subscribe(self, self._files_changed)
        self.action_refresh()

    # ---- the ledger is looked at only while the screen is shown: an idle app polls nothing ----
    def on_screen_resume(self) -> None:
        self.render_rows()
        self.app.watch_experiments()  # a file added a moment ago is listed now, not at the app's next look
        self._look_now()
        if self._look_timer is None:
            self._look_timer = self.set_interval(LOOK_S, self._look_now)

    def on_screen_suspend(self) -> None:
        if self._look_timer is not None:
            self._look_timer.stop()
            self._look_timer = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "submit":
            return self.app.jobs.available
        return True

    @property
    def table(self) -> FitTable:
        return self.query_one("#experiments-table", FitTable)

    @property
    def folder(self) -> Path:
        return self.app.ctx.workspace / "experiments"

    # ---- loading ----
    def action_refresh(self) -> None:
        """Read every experiment file again; count notes to do and look up last runs in a worker."""
        self.rows = {str(p): load_row(p) for p in sorted(self.folder.glob("*.toml"))}
        self.render_rows()
        self._look_now(rows_changed=True)
        self.app.watch_experiments()  # their hosts on Servers too

    def reload_one(self, path: Path) -> ExperimentRow:
        row = load_row(path)
        self.rows[str(path)] = row
        self.render_rows()
        self._look_now(rows_changed=True)
        self.app.watch_experiments()
        return row

    def _files_changed(self, files: dict[str, tuple[int, int]]) -> None:
        """The app saw the folder change: read again the files added or changed (not those read since), drop those
        removed."""
        rows = {key: row if (row := self.rows.get(key)) is not None and row.stamp == stamp else load_row(Path(key))
                for key, stamp in files.items()}
        if list(rows) == list(self.rows) and all(rows[key] is self.rows[key] for key in rows):
            return
        self.rows = rows
        self.render_rows()
        self._look_now(rows_changed=True)

    def _look_now(self, rows_changed: bool = False) -> None:
        """Each experiment's last run from the ledger, then notes to do where due — in a worker, one at a time."""
        if self._looking:
            self._look_again = self._look_again or rows_changed
            return
        self._looking, self._look_again = True, False
        self._look(list(self.rows.values()))

    def _looked(self) -> None:
        self._looking = False
        if self._look_again:
            self._look_now()

    @work(thread=True, group="look", exit_on_error=False)
    def _look(self, rows: list[ExperimentRow]) -> None:
        try:
            if self._last_runs(rows):
                self.app.call_from_thread(self.render_rows)
            self._recount(rows)
        finally:
            self.app.call_from_thread(self._looked)

    def _last_runs(self, rows: list[ExperimentRow]) -> bool:
        """Read each valid experiment's last run (one import of new journal data, then the index as it is); mark for
        a count those whose run moved. True if a row changed."""
        from ledger import Ledger

        ledger, changed = Ledger(self.app.ledger_dir), False
        for row in rows:
            if row.exp is None:
                continue
            # a study's runs are its cells, each under its own experiment name
            by = {"study": row.name} if row.exp.spec.study else {"experiment": row.name}
            try:
                runs = ledger.list_runs(limit=1, **by)
            except Exception as exc:  # noqa: BLE001 - a ledger that cannot be read is shown, not raised
                changed = changed or row.ledger_error != f"ledger: {exc}"
                row.ledger_error = f"ledger: {exc}"
                continue
            finally:
                ledger.auto_sync = False
            run = runs[0] if runs else None
            if row.looked and row.ledger_error is None and run_key(run) == run_key(row.last_run):
                continue
            if row.looked and run_key(run) != run_key(row.last_run):
                row.recount = True
                row.recount_now = row.recount_now or run_ended(row.last_run, run)
            row.last_run, row.ledger_error, row.looked, changed = run, None, True, True
        return changed

    def _recount(self, rows: list[ExperimentRow]) -> None:
        """Notes to do of the rows never counted, and of those whose run moved (at once when it ended, else at most
        every RECOUNT_S): the count asks the source database."""
        for row in rows:
            if row.exp is None:
                continue
            due = row.counted_at is None or (
                row.recount and (row.recount_now or time.monotonic() - row.counted_at >= RECOUNT_S))
            if not due:
                continue
            row.counting, row.counted_at, row.recount, row.recount_now = True, time.monotonic(), False, False
            if row.todo is None:
                self.app.call_from_thread(self.render_rows)  # "…" until the first count; a recount shows the last
            row.todo, row.todo_error = _count_todo(row.exp)
            row.counting = False
            self.app.call_from_thread(self.render_rows)

    # ---- rendering ----
    def render_rows(self) -> None:
        app = self.app
        out = []
        for key, row in self.rows.items():
            if row.error:
                valid = Text(f"error: {row.error}", style=tone(app, "bad"))
            else:
                valid = Text("valid", style=tone(app, "ok"))
            todo = "-" if row.todo is None and not row.counting else "…" if row.todo is None else f"{row.todo:,}"
            out.append((key, (row.name, row.model or "-", valid, last_run_text(row.last_run) if not row.error else "",
                              todo)))
        self.query_one("#experiments-title", Shown).show(Text.assemble(
            ("Experiments", "bold"), f"  {len(self.rows)} in {short_path(self.folder)} · e edits, c checks"))
        self.table.set_rows(out)
        self.render_detail()

    def selected(self) -> ExperimentRow | None:
        key = self.table.selected_key
        return self.rows.get(key) if key else None

    def render_detail(self) -> None:
        detail = self.query_one("#experiment-detail", Shown)
        row = self.selected()
        if row is None:
            detail.show(Text.assemble(("No experiment files here yet. ", "bold"),
                                      f"Put experiment TOML files in {short_path(self.folder)}/ "
                                      "(experiments/demo.toml in the notes-tui checkout is one)."))
            return
        text = Text()
        text.append(row.name, style=tone(self.app, "strong"))
        text.append(f"  {short_path(row.path)}\n", style=tone(self.app, "quiet"))
        if row.error:
            text.append(f"error: {row.error}", style=tone(self.app, "bad"))
            text.append("\ne opens it in your editor; it is checked again when you come back")
        else:
            if row.description:
                text.append(row.description.strip().splitlines()[0] + "\n")
            text.append("\n".join(row.details))
            if row.todo_error:
                text.append(f"\nnotes to do: {row.todo_error}", style=tone(self.app, "bad"))
            elif row.todo is not None:
                text.append(f"\nnotes to do: {row.todo:,}")
            if row.last_run:
                run = row.last_run
                text.append(f"\nlast run {run['run_id']}: {last_run_text(run)}")
            if row.ledger_error:
                text.append(f"\n{row.ledger_error}", style=tone(self.app, "bad"))
        detail.show(text)

    @on(DataTable.RowHighlighted, "#experiments-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.render_detail()

    @on(DataTable.RowSelected, "#experiments-table")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        self.action_check()

    # ---- actions ----
    def _need_row(self, valid: bool = True) -> ExperimentRow | None:
        row = self.selected()
        if row is None:
            self.query_one(StatusLine).say("no experiment selected")
            return None
        if valid and row.error:
            self.query_one(StatusLine).say(f"{row.path.name} has an error — e opens it to fix: {row.error}", error=True)
            return None
        return row

    def action_check(self) -> None:
        row = self._need_row(valid=False)
        if row is not None:
            from app.tui.dialogs.check import CheckScreen

            self.app.push_screen(CheckScreen(row.path))

    def action_edit(self) -> None:
        row = self._need_row(valid=False)
        if row is None:
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if editor or self._editor_told:
            self._edit(row, editor or fallback_editor())
            return
        # no editor chosen: say which one opens, and how to leave it, while the screen is still there to say it
        chosen = fallback_editor()
        from app.tui.dialogs.confirm import ConfirmScreen

        question = (f"No $VISUAL or $EDITOR is set, so {row.path.name} opens in {chosen}: {LEAVE.get(chosen, '')}"
                    "notes-tui comes back and checks the file again.\n"
                    "To choose your editor: export EDITOR=… (e.g. in ~/.bashrc).")

        def answered(yes: bool | None) -> None:
            if yes:
                self._editor_told = True  # once per session
                self._edit(row, chosen)

        self.app.push_screen(ConfirmScreen(question, yes=f"Open in {chosen}", no="Cancel", danger=False), answered)

    def _edit(self, row: ExperimentRow, editor: str) -> None:
        status = self.query_one(StatusLine)
        command = [*shlex.split(editor), str(row.path)]
        try:
            try:
                with self.app.suspend():
                    done = subprocess.run(command)
            except SuspendNotSupported:  # no terminal to hand over (headless): the editor runs without one
                done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
        except (OSError, ValueError) as exc:  # no such editor, a quoting mistake: the app must come back all the same
            status.say(f"could not start the editor {editor!r} ({exc}) — set VISUAL or EDITOR", error=True)
            return
        row = self.reload_one(row.path)
        if done.returncode != 0:
            status.say(f"the editor exited with status {done.returncode}; {row.path.name} read again", error=True)
        elif row.error:
            status.say(f"{row.path.name} still has an error: {row.error}", error=True)
        else:
            status.say(f"{row.path.name} is valid")

    def action_try(self) -> None:
        row = self._need_row()
        if row is not None:
            from app.tui.dialogs.try_ import TrialScreen

            self.app.push_screen(TrialScreen(row.path))

    def action_run_here(self) -> None:
        row = self._need_row()
        if row is not None:
            self.app.start_run(row.path)

    def action_submit(self) -> None:
        """Ask for the job's time limit and array size (as `notes-tui submit --time --array`), then sbatch."""
        row = self._need_row()
        if row is None:
            return
        from app.tui.dialogs.submit import SubmitScreen

        def chosen(choice: SubmitChoice | None) -> None:
            if choice is not None:
                tasks = f" as a job array of {choice.array} tasks" if choice.array > 1 else ""
                self.query_one(StatusLine).say(f"submitting {row.path.name} to Slurm{tasks}…", lasting=True)
                self._submit(row.path, choice)

        sqlite = row.exp.spec.source.kind == "sqlite"
        self.app.push_screen(SubmitScreen(row.path, sqlite, self.app.ctx.config.slurm.run.time), chosen)

    @work(thread=True, exclusive=True, group="submit", exit_on_error=False)
    def _submit(self, path: Path, choice: SubmitChoice) -> None:
        from app.cluster.submit import submit_experiment

        app = self.app
        try:
            job_id, _ = submit_experiment(str(path), app.ctx, app.ledger_dir,
                                          array=choice.array if choice.array > 1 else None, time=choice.time)
        except UserError as exc:
            app.call_from_thread(self.query_one(StatusLine).say, str(exc), True)
            return
        except Exception as exc:  # noqa: BLE001 - "submitting…" must not stay on screen: the failure is a line
            app.call_from_thread(self.query_one(StatusLine).say, f"sbatch failed: {exc.__class__.__name__}: {exc}",
                                 True)
            return
        tasks = f" ({choice.array} array tasks, one shard each)" if choice.array > 1 else ""
        limit = f", time limit {choice.time}" if choice.time else ""
        app.call_from_thread(self.query_one(StatusLine).say, f"submitted {path.name} as job {job_id}{tasks}{limit}; "
                             "press 4 to follow the run once it starts")


def _count_todo(exp) -> tuple[int | None, str | None]:
    """Notes to do; for a study, requests to do over all its cells."""
    from app.experiment.study import study_cells
    from app.sources import todo_count

    try:
        return sum(todo_count(cell) for cell in study_cells(exp)), None
    except UserError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a count that fails is shown, never raised into the screen
        return None, f"{exc.__class__.__name__}: {str(exc)[:120]}"
