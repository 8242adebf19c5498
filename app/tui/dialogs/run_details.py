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


class RunDetailsScreen(NotesDialog[None]):
    BINDINGS = [Binding("escape,q", "close", "Close", show=False)]

    def __init__(self, run_id: str, what: str, others: list[str] | None = None):
        super().__init__()
        self.run_id, self.what, self.others = run_id, what, others or []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(TITLES[self.what].format(self.run_id), classes="dialog-title")
            with VerticalScroll(id="run-body"):
                yield Static("reading the ledger…", id="run-text")
            yield Static("↑/↓ scroll · escape closes · notes-tui ledger " + (
                "report RUN --format html -o FILE writes it as one page" if self.what == "report" else
                "show|report|compare|eval print the same"), classes="hint")

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

            return render(build_report(db, [self.run_id]), "md")  # shown as Markdown: its tables read as tables
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

    def action_close(self) -> None:
        self.dismiss(None)
