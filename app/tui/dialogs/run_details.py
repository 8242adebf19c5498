"""One run from the ledger in a dialog — everything recorded about it (with its evals and the end of its log), its
report, or its comparison with the other runs marked on the Ledger screen. The same text the ledger commands print."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Markdown, Static

from app.tui.base import NotesDialog
from app.tui.tones import tone

LOG_TAIL = 40
TITLES = {"show": "run {}", "report": "report of run {}", "compare": "run {} compared"}
REPORT_TOGETHER = "report of runs {} (one experiment, each note counted once)"


REPORT_DIR = "reports"  # in the workspace: where the Ledger screen saves a report


class RunDetailsScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q", "close", "Close", show=False),
                Binding("m", "save('md')", "Save as Markdown", show=False),
                Binding("h", "save('html')", "Save as HTML", show=False)]

    def __init__(self, run_id: str, what: str, others: list[str] | None = None):
        super().__init__()
        self.run_id, self.what, self.others = run_id, what, others or []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            title = REPORT_TOGETHER.format(", ".join(r[:10] for r in self.runs)) if self.what == "report" and \
                self.others else TITLES[self.what].format(self.run_id)
            yield Label(title, classes="dialog-title")
            with VerticalScroll(id="run-body"):
                yield Static("reading the ledger…", id="run-text")
            yield Static("↑/↓ scroll · escape closes · " + (
                "m saves it as Markdown, h as one HTML page" if self.what == "report" else
                "notes-tui ledger show|report|compare|eval print the same"), classes="hint", id="run-hint")

    def on_mount(self) -> None:
        self.query_one("#run-body").focus()
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        from ledger import Ledger

        led = Ledger(self.app.ledger_dir)
        try:
            text = led.read(self._text_of, None)
        except (LookupError, ValueError) as exc:  # a run gone, runs that cannot be compared: say so
            text = Text(f"error: {exc}", style=tone(self.app, "bad"))
        except Exception as exc:  # noqa: BLE001 - a ledger problem is a line in the dialog
            text = Text(f"error: cannot read the ledger: {exc.__class__.__name__}: {exc}", style=tone(self.app, "bad"))
        if text is None:
            text = Text("the ledger has no index yet", style=tone(self.app, "bad"))
        self.app.call_from_thread(self._show, text)

    def _show(self, content: Text | str) -> None:
        if isinstance(content, str):  # the report, in Markdown
            self.query_one("#run-text", Static).display = False
            self.query_one("#run-body").mount(Markdown(content, id="run-markdown"))
        else:
            self.query_one("#run-text", Static).update(content)

    def _text_of(self, db) -> Text | str:
        if self.what == "report":
            from ledger.report import render
            from ledger.report.data import build_report

            return render(build_report(db, self.runs), "md")  # shown as Markdown: its tables read as tables
        if self.what == "compare":
            from ledger.compare import compare_runs
            from ledger.report.terminal import format_compare

            return Text(format_compare(compare_runs(db, [self.run_id, *self.others])))
        from ledger.report.terminal import format_show
        from ledger.show import run_details

        run = run_details(db, self.run_id)
        if run is None:
            raise LookupError(f"run {self.run_id} is not in the ledger")
        text = Text(format_show(run))
        log = self.app.ledger_dir / "logs" / f"{self.run_id}.log"
        if log.is_file():
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            text.append(f"\n\n--- the end of its log ({log}) ---\n", style=tone(self.app, "strong"))
            text.append("\n".join(lines))
        return text

    @property
    def runs(self) -> list[str]:
        return [self.run_id, *self.others]

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return self.what == "report" if action == "save" else True

    def action_save(self, fmt: str) -> None:
        self._save(fmt)

    @work(thread=True, exclusive=True, group="save", exit_on_error=False)
    def _save(self, fmt: str) -> None:
        from ledger import Ledger
        from ledger.report import render
        from ledger.report.data import build_report

        folder = self.app.ctx.workspace / REPORT_DIR
        path = folder / f"report-{self.run_id[:10]}{'-and-' + str(len(self.others)) if self.others else ''}.{fmt}"
        try:
            text = Ledger(self.app.ledger_dir).read(lambda db: render(build_report(db, self.runs), fmt), None)
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text or "", encoding="utf-8")
            message = Text(f"saved: {path}", style=tone(self.app, "ok"))
        except Exception as exc:  # noqa: BLE001 - a report that cannot be written is a line in the dialog
            message = Text(f"cannot save the report to {path}: {exc}", style=tone(self.app, "bad"))
        self.app.call_from_thread(self.query_one("#run-hint", Static).update, message)

    def action_close(self) -> None:
        self.dismiss(None)
