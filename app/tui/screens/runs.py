"""Screen 4, Runs: every run the ledger dir shows running — started here, headless on this host, or under sbatch on
another node — and the last ones that ended, each in the ledger's words (completed, interrupted, failed: why,
crashed) with the counts it ended with; the one selected followed live through its feed: progress with ETA, the
counters, notes/s as a sparkline with its scale, how its labels fall, each note as it finishes (never note text or
free text), what it waits for when it cannot go on (its servers, writing its results: where, since when, the error,
until when), how long it took and its rate once it ended, and a graceful stop from anywhere."""

from __future__ import annotations

import collections
import time

from rich.highlighter import Highlighter
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Log, Sparkline

from app.cluster.present import local_zone
from app.runs.followed import FollowedRun, waiting_state
from app.runs.listing import Started, listing, progress_words, title_counts
from app.tui.base import NotesScreen
from app.tui.tones import tone
from app.tui.widgets.app_header import AppHeader
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.quota_bar import bar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine
from ledger.clock import format_duration
from ledger.procinfo import this_host

FOLLOW_S = 0.25  # the run flushes its feed every 200 ms: a note is on screen well within a second of finishing
RUNS_S = 3.0  # which runs are live: the ledger index, imported anew each time
LOG_LINES = 5000
COLUMNS = (
    Col("run", "Run", 10),
    Col("experiment", "Experiment", None, min_width=10, max_width=28, grow=1),
    Col("where", "Where", None, min_width=8, max_width=24),
    Col("progress", "Progress", None, min_width=12, max_width=22, right=True),
    Col("state", "State", None, min_width=9, max_width=22),
)
OUTCOME_TONE = {"valid": "ok", "invalid": "bad", "error": "bad", "empty": "warn"}


class OutcomeHighlighter(Highlighter):
    """The outcome word of a log line in its colour (weight and underline with NO_COLOR)."""

    def __init__(self, app) -> None:
        self.styles = {k: tone(app, v) for k, v in OUTCOME_TONE.items()}

    def highlight(self, text: Text) -> None:
        for word, style in self.styles.items():
            if style:
                text.highlight_regex(rf"(?<=^.{{8}} ){word}(?= )", style)


def host_label(url: str) -> str:
    return url.split("://", 1)[-1]


def where(hostname: str | None, slurm: dict) -> str:
    """A run's host as its row says it: "here" for this host, and its Slurm job when it has one."""
    shown = "here" if hostname == this_host() else (hostname or "?")
    return shown + (f" · job {slurm['job_id']}" if slurm.get("job_id") else "")


SHORT_LINES = 24


def table_height(lines: int) -> int:
    """The runs table's most lines (borders and header included) in a terminal this tall: 8 from 30 lines, less below,
    so that the per-note log keeps its rows; the table scrolls."""
    return 8 if lines >= 30 else 7 if lines >= 24 else 4


def rate_scale(peak: float | None) -> str:
    """The sparkline's scale: it is drawn from 0 to its highest point."""
    if not peak:
        return ""
    return f"0–{peak:.1f} notes/s" if peak < 100 else f"0–{peak:,.0f} notes/s"


def took_words(seconds: float | None) -> str:
    """How long a run took: tenths of a second for a run of a few seconds, else as everywhere (3m07s)."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 10 else format_duration(seconds)


def flow(text: Text, part: str, width: int, style: str = "") -> None:
    """Append `part` to the last line of `text` where it fits in `width` cells, else on a line of its own (without
    its leading " · "): a phrase is never cut in two by the wrap."""
    line = text.plain.rsplit("\n", 1)[-1]
    if width and Text(line).cell_len + Text(part).cell_len > width:
        part = "\n" + part.lstrip(" ·")
    text.append(part, style=style)


def last_line(path) -> str | None:
    """The last line of a run's log: a run that stops on a mistake names it there, in one line."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, 2) - 4096))
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


class RunsScreen(NotesScreen):
    BINDINGS = [
        Binding("s", "stop", "Stop run", id="runs.stop"),
        Binding("l", "show_log", "Its log", id="runs.log"),
        Binding("r", "refresh", "Refresh", show=False, id="runs.refresh"),
    ]
    HELP = [("↑/↓ enter", "choose the run to follow")]
    DEFAULT_CSS = """
    #rate-row { height: 1; }
    #rate { width: 1fr; }
    #rate-scale { width: auto; padding: 0 2 0 0; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.runs: list = []  # RunningRun: those running, then the last that ended, each newest first
        self.glances: dict = {}  # run id -> app.runs.follow.Glance: the running runs' feeds, at a glance
        self.followed: FollowedRun | None = None
        self._follow_timer = None
        self._runs_timer = None
        self._exit_lines: dict[str, str | None] = {}  # a run started here that exited: the last line of its log

    def compose(self) -> ComposeResult:
        yield AppHeader("runs")
        yield Shown(id="runs-title", classes="screen-title")
        yield FitTable(COLUMNS, id="runs-table")
        yield Shown(id="run-progress", classes="counters")
        yield Shown(id="run-counters", classes="counters")
        with Horizontal(id="rate-row"):
            yield Sparkline([], id="rate")
            yield Shown(id="rate-scale")
        yield Shown(id="run-labels", classes="counters")
        log = Log(max_lines=LOG_LINES, highlight=True, id="run-log")
        log.highlighter = OutcomeHighlighter(self.app)
        log.border_title = f"per-note log · times {local_zone()}"
        yield log
        yield StatusLine(id="status")
        yield KeyBar()

    def on_resize(self, event) -> None:
        # the last runs that ended fill the table: on a short terminal it scrolls rather than squeeze the log; below
        # 24 lines the counters (the progress line has done/total) and the log's border give their rows to the log,
        # which keeps 5 at 60×20 (it had 1: a horizontal scrollbar took its last row, hence no sideways scroll)
        self.table.styles.max_height = table_height(event.size.height)
        self.set_class(event.size.height < SHORT_LINES, "short")

    # ---- the timers run only while the screen is shown: an idle app polls nothing ----
    def on_screen_resume(self) -> None:
        self.action_refresh()
        self._runs_timer = self.set_interval(RUNS_S, self.action_refresh)
        self._follow_timer = self.set_interval(FOLLOW_S, self._poll)

    def on_screen_suspend(self) -> None:
        for timer in (self._runs_timer, self._follow_timer):
            if timer is not None:
                timer.stop()
        self._runs_timer = self._follow_timer = None

    @property
    def table(self) -> FitTable:
        return self.query_one("#runs-table", FitTable)

    # ---- which runs are live ----
    def action_refresh(self) -> None:
        self._find_runs()

    @work(thread=True, exclusive=True, group="live-runs", exit_on_error=False)
    def _find_runs(self) -> None:
        from app.runs.follow import glance
        from app.runs.running import recent_runs

        try:
            runs = recent_runs(self.app.ledger_dir)
        except Exception as exc:  # noqa: BLE001 - a ledger that cannot be read is a line
            self.app.call_from_thread(self.query_one(StatusLine).say, f"cannot read the ledger: {exc}", True)
            return
        # every running run's feed, at a glance: its row says when it waits, not only the followed one's
        glances = {r.run_id: g for r in runs if r.status == "running" and r.feed is not None
                   and (g := glance(r.feed)) is not None}
        self.app.call_from_thread(self._runs_found, runs, glances)

    def _runs_found(self, runs: list, glances: dict | None = None) -> None:
        self.runs = runs
        self.glances = glances or {}
        f = self.followed
        if f is not None:
            f.recorded = next((r for r in runs if r.run_id == f.run_id), f.recorded)
            self._render_followed()
        self._render_rows()

    def _started(self) -> list[Started]:
        """The runs started here, each with its exit status once it exited (and then its log's last line, read
        once)."""
        out = []
        for run_id, d in self.app.state.started.items():
            code = d.detached.exit_code()
            if code is not None and run_id not in self._exit_lines:
                self._exit_lines[run_id] = last_line(d.detached.log)
                self.call_later(self.action_refresh)  # the ledger's word for how it ended, without waiting 3 s
            out.append(Started(run_id, d.experiment, code, self._exit_lines.get(run_id)))
        return out

    def _render_rows(self) -> None:
        app = self.app
        started = self._started()
        f = self.followed
        if f is not None:
            mine = next((s for s in started if s.run_id == f.run_id), None)
            if mine is not None and mine.exit_code is not None and f.exit_code is None:
                f.exit_code, f.exit_line = mine.exit_code, mine.exit_line
                if f.ended is None and f.state.status == "failed":
                    # it ended before its feed said so (a mistake before the first note): its log says why
                    f.start_error = f.state.why or "its log says why: l shows it"
                self._render_followed()
        listed = listing(self.runs, started, f, self.glances)
        rows = [(r.run_id, (r.run_id[:10], r.experiment, where(r.hostname, r.slurm), progress_words(r.done, r.total),
                             r.state)) for r in listed]
        self.table.set_rows(rows)
        want = app.state.follow_run_id or self.table.selected_key
        if want and any(k == want for k, _ in rows):
            self.table.select_key(want)
            if self.followed is None or self.followed.run_id != want:
                self._follow(want)
        elif self.followed is None and rows:
            self._follow(rows[0][0])
        self.query_one("#runs-title", Shown).show(Text.assemble(
            ("Runs", "bold"), f"  {title_counts(listed)} · enter follows · s stops the one followed"))
        if not rows:
            self._show_nothing()

    # ---- following one run ----
    @on(DataTable.RowSelected, "#runs-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        # enter, not the cursor: rows come and go as runs start and end, and a moving cursor must not change
        # which run is followed
        key = event.row_key.value
        if key and (self.followed is None or self.followed.run_id != key):
            self._follow(key)

    def _follow(self, run_id: str) -> None:
        self.app.state.follow_run_id = run_id
        self.followed = FollowedRun(self.app.ledger_dir, run_id)
        self.followed.recorded = next((r for r in self.runs if r.run_id == run_id), None)
        self.query_one("#run-log", Log).clear()
        self._show_rates(self.followed)
        self._render_followed()

    def _show_rates(self, f: FollowedRun) -> None:
        # a new list (Sparkline redraws only then), from zero: a rate that wobbles by 5 % must not look like 100 %;
        # beside it the scale it is drawn against
        self.query_one("#rate", Sparkline).data = [0.0, *f.rates] if f.rates else []
        self._show_scale(f)

    def _show_scale(self, f: FollowedRun) -> None:
        too_short = not f.rates and f.state.over and f.duration_s is not None
        # a run of a few seconds has no recent rate to draw: its line above says its rate over the whole run
        self.query_one("#rate-scale", Shown).show("too short to draw" if too_short else rate_scale(f.rate_peak))

    def _poll(self) -> None:
        f = self.followed
        if f is None or f.ended is not None or f.feed_done:
            return
        self._read_feed(f)

    @work(thread=True, group="follow", exit_on_error=False)
    def _read_feed(self, f: FollowedRun) -> None:
        if not f.reading.acquire(blocking=False):
            return  # the last read is still under way; the next tick reads what arrived meanwhile
        try:
            if not f.header:
                f.read_header()
            update = f.follower.poll()
            f.polled(update.bytes_read, time.monotonic())  # over in the ledger and nothing more: stop reading
            if update.units or update.counts is not None or update.ended is not None or update.header is not None:
                self.app.call_from_thread(self._apply, f, update)  # applied before the next read may start
        finally:
            f.reading.release()

    def _apply(self, f: FollowedRun, update) -> None:
        if f is not self.followed:
            return  # the user moved on to another run meanwhile
        was_over = f.ended is not None
        lines, rate_moved = f.apply(update)
        if rate_moved:
            self._show_rates(f)
        if f.ended is not None and not was_over:
            self.action_refresh()  # the ledger has its close by now: its words (a failed run's error) at once
        if lines:
            self.query_one("#run-log", Log).write_lines(lines)
        eta = f.eta_s
        jobs = [str(e.get("job_id")) for e in f.header.get("server_jobs") or [] if e.get("job_id")]
        if eta is not None and jobs:  # the Servers screen warns about the same jobs
            self.app.state.run_needs_jobs(f.run_id, jobs, eta)
        self._render_followed()
        self._render_rows()

    def _show_nothing(self) -> None:
        self.query_one("#run-progress", Shown).show(Text(
            "No run in this ledger dir yet. Start one from Experiments (3, then g), or notes-tui --run FILE "
            "here or under sbatch: it shows here as soon as it starts."))
        for wid in ("#run-counters", "#run-labels"):
            self.query_one(wid, Shown).show("")

    def _render_followed(self) -> None:
        f = self.followed
        if f is None:
            return
        app = self.app
        c, total, frac, eta = f.shown_counts, f.shown_total, f.fraction, f.eta_s
        state = f.state
        text = Text()
        text.append(f"{f.run_id[:10]} ", style=tone(app, "strong"))
        # narrower below 100 columns: an ended run's line (status, how long, its rate) fits on one row at 80
        text.append(bar(frac, 24 if self.size.width >= 100 else 10) + " ", style=tone(app, "accent"))
        text.append(f"{c.done:,}/{total:,} ({frac:.1%})")
        if state.over:
            # the ledger's word, then how long it took and its rate over the whole run (a run of a few seconds
            # never had a settled recent rate); each part on this line where it fits, else on the next
            width = self.query_one("#run-progress", Shown).content_size.width or self.size.width - 4
            flow(text, f" · {state.status}", width, tone(app, "ok" if state.status == "completed" else "warn"))
            if state.why and state.status == "interrupted":
                flow(text, f" ({state.why})", width)
            if f.duration_s is not None:
                flow(text, f" in {took_words(f.duration_s)}" + (f" at {f.final_rate:.1f} notes/s" if f.final_rate
                                                                 else ""), width)
            if state.status == "failed":
                text.append(f"\n{state.words}", style=tone(app, "bad"))
        else:
            if f.waiting:
                text.append(f" · {waiting_state(f.waiting)}", style=tone(app, "warn"))
            if not any(w.stalls for w in f.waiting):  # with no server to answer, not a rate fading to nothing
                text.append(f" · {f.rate:.1f} notes/s" if f.rate else " · - notes/s")
                text.append(f" · ETA {format_duration(eta)}" if eta is not None else "")
                if f.in_flight is not None and self.size.width >= 100:
                    text.append(f" · in flight {f.in_flight}" + (f" of {sum(f.limits.values())}" if f.limits else ""))
            # what it waits for, since when, the error, and when it gives up
            for line in f.waiting_words():
                text.append(f"\n{line}", style=tone(app, "bad"))
            if len(f.limits) > 1:
                # the limit the run found for each server (it grows while answers stay fast, shrinks when they queue)
                text.append("\nlimit per host: " + " · ".join(f"{host_label(url)} {n}" for url, n in f.limits.items()),
                            style=tone(app, "quiet"))
        warning = self._job_warning(f, eta)
        if warning:
            text.append(f"\n{warning}", style=tone(app, "bad"))
        why = f.why_invalid()
        if why:
            text.append(f"\n{why}", style=tone(app, "bad"))
        self.query_one("#run-progress", Shown).show(text)
        self._show_scale(f)
        trunc, err = ("truncated", "errors") if self.size.width >= 100 else ("trunc", "err")
        self.query_one("#run-counters", Shown).show(
            f"done {c.done:,} · valid {c.valid:,} · invalid {c.invalid:,} · retried {c.retried:,} · {trunc} "
            f"{c.truncated:,} · empty {c.empty:,} · {err} {c.errors:,}")
        self.query_one("#run-labels", Shown).show(self._labels_text(f))

    def _labels_text(self, f: FollowedRun) -> Text:
        """Each field's labels with their bars and counts, wrapped between labels only: Rich breaks lines at any
        whitespace, no-break spaces included, and "(2)" at a line's end with "Unlikely" below reads as two labels."""
        width = max(20, self.query_one("#run-labels").size.width)
        lines: list[Text] = []
        scope = f.labels_scope()
        for field in f.fields:
            counts = f.labels.get(field.name, collections.Counter())
            n = sum(counts.values())
            if not n:
                continue
            line = Text(f"{field.name}{scope}:", style=tone(self.app, "strong"))
            for label in [*field.labels, *(k for k in counts if k not in field.labels)]:
                if not counts.get(label):
                    continue
                item = Text.assemble(f"{label} ", (bar(counts[label] / n, 10), tone(self.app, "accent")),
                                     f" {counts[label]:,}")
                if line.cell_len + 2 + item.cell_len > width and line.plain.strip():
                    lines.append(line)
                    line = Text("  ")
                line.append("  ")
                line.append_text(item)
            lines.append(line)
        return Text("\n").join(lines)

    def _job_warning(self, f: FollowedRun, eta: float | None) -> str:
        """A server job that reaches its time limit before the run is done takes its server with it."""
        from app.cluster.jobactions import ends_before, time_left_text

        app = self.app
        for entry in f.header.get("server_jobs") or []:
            job = app.state.job(str(entry.get("job_id")))
            if job is not None and ends_before(job, eta, app.jobs.age_s() or 0.0):
                return (f"server job {job.job_id} ends in {time_left_text(job)}, before this run does (ETA "
                        f"{format_duration(eta)}): start another server job (1, then s), or the run stops when it goes")
        return ""

    # ---- actions ----
    def action_stop(self) -> None:
        f = self.followed
        if f is None or f.ended is not None or f.state.over:
            self.query_one(StatusLine).say("no running run is followed")
            return
        from app.tui.dialogs.confirm import ConfirmScreen

        run_id = f.run_id

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop(run_id)

        self.app.push_screen(ConfirmScreen(
            f"Stop run {run_id}?\nNo new note is sent, the notes in flight finish, everything answered is saved and "
            "the run ends interrupted: run the experiment again to finish it.", yes="Stop", no="Let it run"), answered)

    @work(thread=True, exclusive=True, group="stop", exit_on_error=False)
    def _stop(self, run_id: str) -> None:
        from app.runs.stop import request_stop

        sent = request_stop(self.app.ledger_dir, run_id)
        self.app.call_from_thread(self.query_one(StatusLine).say, sent.message, not sent.sent)

    def action_show_log(self) -> None:
        f = self.followed
        if f is not None:
            from app.tui.dialogs.run_details import RunDetailsScreen

            self.app.push_screen(RunDetailsScreen(f.run_id, "show"))
