"""Screen 5, Ledger: every run in the ledger dir, newest first, a page at a time (10,000 runs open at once), filtered by
experiment, model (any part of the name) or status — a filter that matches nothing says so, with the names there
are; a run's details, its report, the eval where there is one, and a comparison of the runs marked with space."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from app.cluster.present import local_time, local_zone
from app.tui.base import NotesScreen
from app.tui.dialogs.ledger_filter import Filters
from app.tui.tones import tone
from app.tui.widgets.app_header import AppHeader, short_path
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine

PAGE = 200
COLUMNS = (
    Col("mark", "", 1),
    Col("run", "Run", 10),
    Col("experiment", "Experiment", None, min_width=10, max_width=30, grow=1),
    Col("model", "Model", None, min_width=8, max_width=24, keep_tag=True),
    Col("digest", "Digest", 8, hide_below=110),
    Col("prompt", "Prompt", 8, hide_below=120),
    Col("status", "Status", 11),
    Col("done", "Done", None, min_width=7, max_width=15, right=True),
    Col("valid", "Valid", 6, right=True),
    Col("started", f"Started ({local_zone()})", 16, hide_below=100),
    Col("duration", "Took", 7, right=True),
)
STATUS_TONE = {"completed": "ok", "running": "accent", "interrupted": "warn", "failed": "bad", "crashed": "bad"}


def run_cells(app, run: dict, marked: bool) -> tuple:
    from ledger.clock import format_duration

    took = run.get("duration_s")
    if run["status"] == "running" and run.get("started_at"):  # how long so far, by the app's clock
        took = (app.now() - datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))).total_seconds()
    c = run.get("counts") or {}
    done, total, valid = c.get("done") or 0, c.get("total") or 0, c.get("valid") or 0
    return ("•" if marked else " ", run["run_id"][:10], run.get("experiment") or "-", run.get("model") or "-",
            (run.get("model_digest") or "").removeprefix("sha256:")[:8], (run.get("prompt_hash") or "")[:8],
            Text(run["status"], style=tone(app, STATUS_TONE.get(run["status"], "quiet"))),
            f"{done:,}/{total:,}", f"{valid / done:.0%}" if done else "-",
            local_time(run.get("started_at")), format_duration(took))


class LedgerScreen(NotesScreen):
    BINDINGS = [
        Binding("f", "filter", "Filter", id="ledger.filter"),
        Binding("space", "mark", "Mark", id="ledger.mark"),
        Binding("c", "compare", "Compare", id="ledger.compare"),
        Binding("p", "report", "Report", id="ledger.report"),
        Binding("s", "study", "Study", id="ledger.study"),
        Binding("n", "more", "More", id="ledger.more"),
        Binding("r", "refresh", "Refresh", show=False, id="ledger.refresh"),
        Binding("escape", "clear_filter", "Clear filter", id="ledger.clear_filter"),  # on the key bar while filtered
    ]
    HELP = [("enter", "the selected run: everything the ledger holds, its evals, its log"),
            ("p, runs marked", "one report of the marked runs together (a run and its resumption)"),
            ("m / h", "in a report: save it as Markdown / one HTML page in reports/")]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict] = []
        self.filters = Filters()
        self.marked: list[str] = []
        self.complete = False  # every run matching the filters is loaded
        self.no_match: str | None = None  # why the filter matches no run, with the names there are

    def compose(self) -> ComposeResult:
        yield AppHeader("ledger")
        yield Shown(id="ledger-title", classes="screen-title")
        yield FitTable(COLUMNS, id="ledger-table")
        yield Shown(id="ledger-detail", classes="detail")
        yield StatusLine(id="status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            return self.filters.active  # esc does nothing, and is not offered, when nothing is filtered
        return True

    @property
    def table(self) -> FitTable:
        return self.query_one("#ledger-table", FitTable)

    # ---- loading, a page at a time, in a worker (the first read imports new journals) ----
    def action_refresh(self) -> None:
        self._load(0, len(self.runs) or PAGE)

    def action_more(self) -> None:
        if self.complete:
            self.query_one(StatusLine).say("every run is shown")
            return
        self._load(len(self.runs), PAGE)

    @work(thread=True, exclusive=True, group="ledger", exit_on_error=False)
    def _load(self, offset: int, count: int) -> None:
        from ledger import Ledger
        from ledger.names import nothing_matched

        f = self.filters
        why = None
        try:
            led = Ledger(self.app.ledger_dir)
            page = led.list_runs(experiment=f.experiment, model=f.model, status=f.status, limit=count + 1,
                                 offset=offset, partial=True)
            if not page and not offset and f.active:
                why = nothing_matched(led, experiment=f.experiment, model=f.model, status=f.status)
        except Exception as exc:  # noqa: BLE001 - an unreadable ledger is a line on the screen
            self.app.call_from_thread(self.query_one(StatusLine).say, f"cannot read the ledger: {exc}", True)
            return
        self.app.call_from_thread(self._loaded, offset, page[:count], len(page) <= count, why)

    def _loaded(self, offset: int, page: list[dict], complete: bool, why: str | None = None) -> None:
        self.runs = self.runs[:offset] + page
        self.complete = complete
        self.no_match = why if not self.runs else None
        self.render_runs()

    # ---- rendering ----
    def render_runs(self) -> None:
        app = self.app
        more = "" if self.complete else f" · n loads {PAGE} more"
        runs = f"{len(self.runs):,} run" + ("" if len(self.runs) == 1 else "s")
        self.query_one("#ledger-title", Shown).show(Text.assemble(
            ("Ledger", "bold"), f"  {runs} shown{more} · filter: {self.filters.text()}"
            f"{' (esc clears)' if self.filters.active else ''} · {short_path(app.ledger_dir)}"))
        self.table.set_rows([(r["run_id"], run_cells(app, r, r["run_id"] in self.marked)) for r in self.runs])
        self.render_detail()

    def selected(self) -> dict | None:
        key = self.table.selected_key
        return next((r for r in self.runs if r["run_id"] == key), None)

    def render_detail(self) -> None:
        detail = self.query_one("#ledger-detail", Shown)
        run = self.selected()
        if run is None and self.no_match and self.no_match != "no runs recorded":
            detail.show(Text.assemble(("No run matches the filter: ", "bold"), self.no_match,
                                      ". f changes the filter, esc clears it."))
            return
        if run is None:
            detail.show(Text("No runs recorded here yet: run an experiment (3, then g) or notes-tui --run FILE."
                             if not self.runs else ""))
            return
        c = run.get("counts") or {}
        text = Text()
        text.append(run["run_id"], style=tone(self.app, "strong"))
        text.append(f"  {run.get('experiment')} · {run.get('model')} · {run['status']}"
                    f" on {run.get('hostname')} (pid {run.get('pid')}) · started {local_time(run.get('started_at'))}"
                    f" {local_zone()}\n")
        text.append(f"done {c.get('done', 0)}/{c.get('total', 0)}: valid {c.get('valid', 0)}, invalid "
                    f"{c.get('invalid', 0)}, retried {c.get('retried', 0)}, empty {c.get('empty', 0)}, truncated "
                    f"{c.get('truncated', 0)}, errors {c.get('errors', 0)}")
        if run.get("last_error"):
            text.append(f"\nlast error: {run['last_error']}", style=tone(self.app, "bad"))
        if self.marked:
            text.append(f"\nmarked for compare: {', '.join(m[:10] for m in self.marked)}")
        detail.show(text)

    @on(DataTable.RowHighlighted, "#ledger-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.render_detail()

    @on(DataTable.RowSelected, "#ledger-table")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        run = self.selected()
        if run is not None:
            from app.tui.dialogs.run_details import RunDetailsScreen

            self.app.push_screen(RunDetailsScreen(run["run_id"], "show"))

    # ---- actions ----
    def action_mark(self) -> None:
        run = self.selected()
        if run is None:
            return
        rid = run["run_id"]
        self.marked.remove(rid) if rid in self.marked else self.marked.append(rid)
        self.render_runs()

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.query_one(StatusLine).say("mark two runs or more with space first, then c compares them")
            return
        from app.tui.dialogs.run_details import RunDetailsScreen

        self.app.push_screen(RunDetailsScreen(self.marked[0], "compare", others=self.marked[1:]))

    def action_report(self) -> None:
        """The marked runs together (an interrupted run and its resumption, the shards of an array), as
        `ledger report A B` does; else the selected run."""
        from app.tui.dialogs.run_details import RunDetailsScreen

        if self.marked:
            self.app.push_screen(RunDetailsScreen(self.marked[0], "report", others=self.marked[1:]))
            return
        run = self.selected()
        if run is not None:
            self.app.push_screen(RunDetailsScreen(run["run_id"], "report"))

    def action_study(self) -> None:
        run = self.selected()
        if run is None:
            return
        if not run.get("study"):
            self.query_one(StatusLine).say(f"run {run['run_id'][:10]} is not a cell of a study: s opens a study from "
                                           "one of its cells (an experiment file with [study])")
            return
        from app.tui.screens.study import StudyScreen

        self.app.push_screen(StudyScreen(run["study"]))

    def action_filter(self) -> None:
        from app.tui.dialogs.ledger_filter import LedgerFilterScreen

        def chosen(filters: Filters | None) -> None:
            if filters is not None:
                self._filter_by(filters)

        self.app.push_screen(LedgerFilterScreen(self.filters), chosen)

    def action_clear_filter(self) -> None:
        self._filter_by(Filters())

    def _filter_by(self, filters: Filters) -> None:
        self.filters, self.runs, self.no_match = filters, [], None
        self.query_one(KeyBar).refresh()  # esc Clear filter comes and goes with the filter
        self._load(0, PAGE)
