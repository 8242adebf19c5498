"""A study, from the Ledger screen (s on one of its cells): its cells against the reference, their stability across
repeats, and the per-note table — notes as rows, cells as columns, the reference beside them — where the researcher
reads a note (t: from the source database, now, never stored) and sets its reference label (a: kept in the ledger's
adjudications, never in the source). The same figures as `notes-tui ledger study`."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable

from app.errors import UserError
from app.tui.base import NotesScreen
from app.tui.tones import tone
from app.tui.widgets.app_header import AppHeader
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine
from ledger.report.layout import label_text as report_label_text

PAGE = 500
BOOTSTRAP_REPS = 200  # the screen's intervals; `ledger study` draws 1,000
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def cell_letter(i: int) -> str:
    return LETTERS[i] if i < len(LETTERS) else f"C{i + 1}"


def short_labels(labels: list[Any]) -> dict[str, str]:
    """Each label as few characters as tell it apart: "(1) Likely" -> "(1)", true -> "true"."""
    texts = [label_text(v) for v in labels]
    firsts = [t.split(" ", 1)[0] for t in texts]
    use = firsts if len(set(firsts)) == len(firsts) else [t[:10] for t in texts]
    return dict(zip(texts, use))


def label_text(value: Any) -> str:
    """A label as the ledger's reports write it; a note without one as –."""
    return "–" if value is None else report_label_text(value)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" + (f" [{low:.2f}–{high:.2f}]" if low is not None and high is not None else "")


class StudyScreen(NotesScreen):
    BINDINGS = [
        Binding("d", "different", "Different only", id="study.different"),
        Binding("t", "text", "Note text", id="study.text"),
        Binding("a", "adjudicate", "Adjudicate", id="study.adjudicate"),
        Binding("g", "reference", "Gold/adjudicated", id="study.reference"),
        Binding("n", "more", "More notes", id="study.more"),
        Binding("escape,q", "back", "Back", id="study.back"),
        Binding("r", "refresh", "Refresh", show=False, id="study.refresh"),
    ]
    HELP = [("columns A, B …", "the study's cells, named in the list above the table; red: differs from the reference")]

    def __init__(self, study: str) -> None:
        super().__init__()
        self.study = study
        self.different_only = True
        self.reference_kind = "adjudicated"  # what a researcher who adjudicated wants to see; g shows gold alone
        self.study_ctx: dict[str, Any] | None = None  # experiment, evaluation, gold: read once from the source
        self.report: dict[str, Any] | None = None
        self.notes: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield AppHeader("ledger")
        yield Shown(id="study-title", classes="screen-title")
        with VerticalScroll(classes="study-cells"):
            yield Shown(id="study-cells")
        yield FitTable([Col("unit", "Note", None, min_width=6, max_width=16), Col("ref", "Ref", 6)], id="study-notes")
        yield Shown(id="study-detail", classes="detail")
        yield StatusLine(id="status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#study-title", Shown).show(Text.assemble(("Study", "bold"), f"  {self.study} · reading…"))
        self.action_refresh()

    @property
    def table(self) -> FitTable:
        return self.query_one("#study-notes", FitTable)

    # ---- loading: gold from the source once, then the ledger's figures (both in a thread) ----
    def action_refresh(self) -> None:
        self._load(0, PAGE)

    def action_more(self) -> None:
        if self.report and len(self.notes) >= self.report["notes_total"]:
            self.query_one(StatusLine).say("every note is shown")
            return
        self._load(len(self.notes), PAGE)

    @work(thread=True, exclusive=True, group="study", exit_on_error=False)
    def _load(self, offset: int, count: int) -> None:
        try:
            report = self._read(offset, count)
        except UserError as exc:
            self.app.call_from_thread(self.query_one(StatusLine).say, str(exc), True)
            return
        except Exception as exc:  # noqa: BLE001 - an unreadable ledger or source is a line on the screen
            self.app.call_from_thread(self.query_one(StatusLine).say, f"cannot read the study: {exc}", True)
            return
        self.app.call_from_thread(self._loaded, offset, report)

    def _read(self, offset: int, count: int) -> dict[str, Any]:
        from ledger import Ledger
        from ledger.adjudication import reference
        from ledger.study import study_notes, study_report

        led = Ledger(self.app.ledger_dir)
        ctx = self.study_ctx or self._study_context(led)
        self.study_ctx = ctx

        if offset and self.report is not None:  # n: the next page only, not every figure again
            def page(db):
                labels, _ref = reference(db, self.study, ctx["field"], ctx["gold"], self.reference_kind,
                                       ctx["gold_info"])
                return self.report | study_notes(db, self.study, labels, ctx["field"], offset=offset, limit=count,
                                                  different_only=self.different_only)

            return led.read(page, None)

        def figures(db):
            labels, ref = reference(db, self.study, ctx["field"], ctx["gold"], self.reference_kind,
                                       ctx["gold_info"])
            result = study_report(db, self.study, labels, ctx["gold_info"], ctx["field"], reps=BOOTSTRAP_REPS,
                                  offset=offset, limit=count, different_only=self.different_only)
            result["reference"] = ref
            result["adjudicated_labels"] = {u: v for u, v in labels.items() if ctx["gold"].get(u, object()) != v}
            return result

        return led.read(figures, None)

    def _study_context(self, led) -> dict[str, Any]:
        from app.evaluation import evaluation_for, experiment_of_run, gold_info, read_gold
        from ledger.runs import load_run

        runs = led.list_runs(study=self.study, limit=1)
        if not runs:
            raise UserError(f"no runs of study {self.study} in the ledger")
        run = led.read(lambda db: load_run(db, runs[0]["run_id"]), None)
        exp, _note = experiment_of_run(run, None)
        ev = evaluation_for(exp)
        return {"exp": exp, "field": ev.field, "gold": read_gold(exp, ev), "gold_info": gold_info(ev)}

    def _loaded(self, offset: int, report: dict[str, Any] | None) -> None:
        if report is None:
            self.query_one(StatusLine).say("the ledger has no index yet", True)
            return
        self.report = report
        self.notes = self.notes[:offset] + report["notes"] if offset else list(report["notes"])
        self.render_study()

    # ---- rendering ----
    def render_study(self) -> None:
        rep = self.report
        assert rep is not None
        ref = rep["reference"]
        self.query_one("#study-title", Shown).show(Text.assemble(
            ("Study", "bold"), f"  {rep['study']} · {rep['field']} · reference {ref['kind']} "
            f"({ref['adjudicated']} adjudicated)"))
        self.query_one("#study-cells", Shown).show(self._cells_text(rep))
        names = [c["cell"] for c in rep["cells"]]
        self.short = short_labels(rep["labels"])
        cols = [Col("unit", "Note", None, min_width=6, max_width=16), Col("ref", "Ref", 6)]
        cols += [Col(f"c{i}", cell_letter(i), 5) for i in range(len(names))]
        self.table.set_columns(cols)
        self.table.set_rows([(n["unit"], self._note_cells(n, names)) for n in self.notes])
        self.render_detail()

    def _cells_text(self, rep: dict[str, Any]) -> Text:
        """A line a cell, in aligned columns; its repeats' agreement (Fleiss' kappa) on the line of its first repeat."""
        fleiss = {(s["model"], s["prompt"]): s for s in rep["stability"]}
        width = max(20, min(max((len(c["cell"]) for c in rep["cells"]), default=4), self.size.width - 56))
        text = Text(f"  {'cell':<{width}}    n  accuracy [95% CI]    κ   valid  repeats κ\n", style=tone(self.app, "quiet"))
        for i, c in enumerate(rep["cells"]):
            name = c["cell"] if len(c["cell"]) <= width else c["cell"][: width - 1] + "…"
            group = fleiss.get((c["model"], c["prompt"])) if c["repeat"] == 1 else None
            text.append(f"{cell_letter(i):<2}", style=tone(self.app, "strong"))
            text.append(f"{name:<{width}} {c['n']:>4}  {_ci(c['accuracy'], c['accuracy_low'], c['accuracy_high']):<19}"
                        f"{_num(c['kappa']):>5}  {_num(c['valid_pct'], 0):>5}%  "
                        f"{_num(group['fleiss_kappa']) if group else '':>6}\n")
        if any(c["small"] for c in rep["cells"]):
            text.append(f"under {rep['small_n']} notes with a reference: the intervals are wide",
                        style=tone(self.app, "warn"))
        text.rstrip()
        return text

    def _note_cells(self, note: dict[str, Any], names: list[str]) -> tuple:
        ref = note["gold"]
        adjudicated = note["unit"] in (self.report or {}).get("adjudicated_labels", {})
        ref_text = Text(self._short(ref) + ("*" if adjudicated else ""),
                        style=tone(self.app, "accent") if adjudicated else "")
        cells = []
        for name in names:
            value = note["labels"].get(name)
            text = self._short(value)
            wrong = ref is not None and value is not None and value != ref
            cells.append(Text(text, style=tone(self.app, "bad") if wrong else ""))
        return (note["unit"], ref_text, *cells)

    def _short(self, value: Any) -> str:
        """A label as its column shows it; a fallback outside the field's labels ("(4) LLM output invalid") by its
        leading "(4)" too."""
        text = label_text(value)
        if text in self.short:
            return self.short[text]
        first = text.split(" ", 1)[0]
        return first if first.startswith("(") and first.endswith(")") else text

    def selected(self) -> dict[str, Any] | None:
        key = self.table.selected_key
        return next((n for n in self.notes if n["unit"] == key), None)

    def render_detail(self) -> None:
        note = self.selected()
        detail = self.query_one("#study-detail", Shown)
        if note is None:
            detail.show(Text("no notes where cells disagree or differ from the reference — d shows every note"
                             if self.different_only else "no notes answered yet"))
            return
        counts: dict[str, int] = {}
        for value in note["labels"].values():
            if value is not None:
                counts[label_text(value)] = counts.get(label_text(value), 0) + 1
        votes = ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        mark = " (adjudicated)" if note["unit"] in (self.report or {}).get("adjudicated_labels", {}) else ""
        rep = self.report or {}
        listed = (f"{len(self.notes):,} of {rep.get('notes_total', 0):,} notes where cells disagree or differ from the "
                  "reference (d: every note)" if self.different_only else
                  f"{len(self.notes):,} of {rep.get('notes_total', 0):,} notes (d: only where they differ)")
        detail.show(Text(f"note {note['unit']}: reference {label_text(note['gold'])}{mark} · cells: {votes or 'none'}"
                         f"\n{listed} · t: the note's text · a: set its reference"))

    @on(DataTable.RowHighlighted, "#study-notes")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.render_detail()

    # ---- actions ----
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_different(self) -> None:
        self.different_only = not self.different_only
        self.notes = []
        self._load(0, PAGE)

    def action_reference(self) -> None:
        self.reference_kind = "gold" if self.reference_kind == "adjudicated" else "adjudicated"
        self.notes = []
        self._load(0, PAGE)

    def action_text(self) -> None:
        note = self.selected()
        if note is None or self.study_ctx is None:
            return
        from app.tui.dialogs.note_text import NoteTextScreen

        self.app.push_screen(NoteTextScreen(self.study_ctx["exp"], note["unit"]))

    def action_adjudicate(self) -> None:
        note, rep = self.selected(), self.report
        if note is None or rep is None or self.study_ctx is None:
            return
        from app.tui.dialogs.adjudicate import AdjudicateScreen

        def chosen(answer: tuple[Any, str | None] | None) -> None:
            if answer is not None:
                self._record(note["unit"], answer[0], answer[1])

        votes = {name: value for name, value in note["labels"].items()}
        self.app.push_screen(AdjudicateScreen(note["unit"], rep["labels"], note["gold"], votes), chosen)

    @work(thread=True, exclusive=True, group="study-write", exit_on_error=False)
    def _record(self, unit: str, label: Any, comment: str | None) -> None:
        from ledger import Ledger
        from ledger.adjudication import append, decide, reference_labels

        ctx = self.study_ctx
        assert ctx is not None
        led = Ledger(self.app.ledger_dir)
        say = self.query_one(StatusLine).say
        try:
            earlier = led.read(lambda db: reference_labels(db, self.study, ctx["field"]), {})
            decision = decide(self.study, ctx["field"], unit, label, ctx["gold"], earlier, comment)
            if decision is None:
                self.app.call_from_thread(say, f"note {unit}: {label_text(label)} is already its reference")
                return
            record = append(led.ledger_dir, decision)
            led.sync(wait_s=2.0)
        except Exception as exc:  # noqa: BLE001 - a ledger that cannot be written is a line on the screen
            self.app.call_from_thread(say, f"cannot record the adjudication: {exc}", True)
            return
        self.app.call_from_thread(say, f"note {unit}: reference {label_text(label)} (adjudication {record['seq']}, "
                                       f"was {label_text(decision.replaces)})")
        self.app.call_from_thread(self._load, 0, max(len(self.notes), PAGE))
