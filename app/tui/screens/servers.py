"""Screen 1, Servers: every known Ollama server and the user's Slurm server jobs — how each is, how long a job has
left, the models loaded now — with keys to add a server, remove a saved one, start a server job from a profile,
cancel one, and look into one (the end of its output, what it runs)."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from app.cluster import present
from app.cluster.health import UNKNOWN, Health
from app.cluster.jobactions import ends_before, job_status, time_left_text
from app.cluster.slurm import ServerJob
from app.errors import UserError
from app.tui.base import NotesScreen
from app.tui.tones import state_tone, tone
from app.tui.widgets.app_header import AppHeader, short_path
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine
from ledger.clock import format_duration

COLUMNS = (
    Col("server", "Server", None, min_width=12, max_width=32),
    Col("from", "From", None, min_width=8, max_width=24),
    Col("state", "State", None, min_width=13, max_width=28, grow=1),
    Col("kind", "Kind", 6, hide_below=100),
    Col("version", "Version", 7, hide_below=100),
    Col("rtt", "RTT", 6, right=True),
    Col("left", "Left", 8, right=True, hide_empty=True),  # time left of server jobs
    Col("loaded", "Loaded now", None, min_width=10, grow=1),
)
JOB_ROW = "job:"  # row key of a job that has no address yet (pending, starting)


def status_cell(app, health: Health, job: ServerJob | None) -> Text:
    """The server's state, or for a server job the job's: pending (reason), starting, up, unhealthy: why."""
    if job is None:
        return Text(present.state(health), style=state_tone(app, health.state))
    words = job_status(job, health if job.url else None)
    kind = "up" if words in ("up", "slow") else "down" if words.startswith("unhealthy") else "unknown"
    return Text(words, style=state_tone(app, "slow" if words == "slow" else kind))


class ServersScreen(NotesScreen):
    BINDINGS = [
        Binding("a", "add_server", "Add server", id="servers.add"),
        Binding("x", "remove_server", "Remove", id="servers.remove"),
        Binding("s", "start_job", "Start job", id="servers.start_job"),
        Binding("k", "cancel_job", "Cancel job", id="servers.cancel_job"),
        # not on the key bar, which it would push "q Quit" off at 80 columns: the job's detail line names it
        Binding("l", "job_output", "Output of a server job", show=False, id="servers.job_output"),
        Binding("r", "refresh", "Refresh", id="servers.refresh"),
    ]
    HELP = [("enter", "the models of the selected server (screen 2)")]
    _refreshing = False

    def __init__(self) -> None:
        super().__init__()
        self._rtt = present.SteadyRtt()

    def compose(self) -> ComposeResult:
        yield AppHeader("servers")
        yield Shown(id="servers-title", classes="screen-title")
        yield FitTable(COLUMNS, id="servers-table")
        yield Shown(id="server-detail", classes="detail")
        yield StatusLine(id="status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.app.health_changed.subscribe(self, self._health_changed)
        self.app.servers_changed.subscribe(self, lambda _: self.render_servers())
        self.render_servers()

    def on_screen_resume(self) -> None:
        self.render_servers()
        self.app.watch_experiments()  # the hosts of an experiment file added a moment ago, now

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start_job", "cancel_job", "job_output"):
            return self.app.jobs.available  # no squeue here (a laptop): the Slurm keys are simply absent
        return True

    @property
    def table(self) -> FitTable:
        return self.query_one("#servers-table", FitTable)

    # ---- rendering ----
    def render_servers(self) -> None:
        app = self.app
        rows = []
        for s in app.state.servers:
            h, job = app.health(s.url), app.state.job_of(s.url)
            loaded = ", ".join(present.loaded(m, app.now()) for m in h.loaded) or ("-" if h.answers else "")
            rows.append((s.url, (s.label, s.origin_text, status_cell(app, h, job), h.kind_text if h.kind else "",
                                 h.version or "",
                                 self._rtt.text(s.url, h), time_left_text(job) if job else "", loaded)))
        waiting = [j for j in app.state.job_list if not j.url]
        for job in waiting:
            rows.append((JOB_ROW + job.job_id, (job.name, job.origin, status_cell(app, UNKNOWN, job),
                                                "openai" if job.kind == "openai-compatible" else "ollama", "", "",
                                                time_left_text(job), "")))
        jobs = f" · {len(app.state.job_list)} server job{'s' if len(app.state.job_list) != 1 else ''}" if app.jobs.available \
            else ""
        if app.state.jobs_error:  # not "0 server jobs", which reads as "my job is gone"
            jobs = " · server jobs unknown: squeue failed (below)"
        elif app.jobs.available and not app.state.jobs_asked:  # nor before squeue has said anything
            jobs = " · server jobs: asking squeue…"
        self.query_one("#servers-title", Shown).show(Text.assemble(
            ("Servers", "bold"), f"  {len(app.state.servers)} known{jobs} · health every 5 s · enter: its models"))
        self.table.set_rows(rows)
        if app.state.selected_url:
            self.table.select_key(app.state.selected_url)
        self.render_detail()

    def _health_changed(self, url: str) -> None:
        self.render_servers()
        if self._refreshing and not self.app.monitor.in_flight():
            self._refreshing = False
            self.query_one(StatusLine).clear()

    def selected_job(self) -> ServerJob | None:
        key = self.table.selected_key or ""
        if key.startswith(JOB_ROW):
            return self.app.state.job(key[len(JOB_ROW):])
        return self.app.state.job_of(key)

    def _show_detail(self, detail: Shown, content: Text) -> None:
        """Say first why squeue failed, while it does (as `server list` does), then the selected server."""
        error = self.app.state.jobs_error
        if error:
            kept = " (the jobs listed are from before it failed)" if self.app.state.job_list else ""
            content = Text(f"{error}{kept}\n", style=tone(self.app, "bad")) + content
        detail.show(content)

    def render_detail(self) -> None:
        app = self.app
        detail = self.query_one("#server-detail", Shown)
        key = app.state.selected_url or ""
        job = self.selected_job()
        server = app.state.server(key)
        if server is None and job is None:
            slurm = " or start a server job with s" if app.jobs.available else ""
            self._show_detail(detail, Text.assemble(
                ("No model server is known yet. ", "bold"),
                f"Press a to add one (http://HOST:PORT){slurm}, export OLLAMA_HOST before starting notes-tui, "
                f"or name hosts in an experiment in {short_path(app.ctx.workspace / 'experiments')}/."))
            return
        text = Text()
        if server is not None:
            h = app.health(server.url)
            text.append(server.label, style=tone(app, "strong"))
            if server.name:
                text.append(f"  {server.url}")
            text.append(f"  (from {server.origin_text})\n", style=tone(app, "quiet"))
            text.append_text(status_cell(app, h, job))
            if h.answers:
                what = f"Ollama {h.version}" if h.kind == "ollama" else f"OpenAI-compatible {h.version or ''}".rstrip()
                text.append(f" · {what} · {self._rtt.text(server.url, h)}")
            elif h.state == "down":
                text.append(f" — {present.advice(h)}")
        if job is not None:
            if server is None:
                text.append(job.name, style=tone(app, "strong"))
                text.append(f"  {job.origin}\n", style=tone(app, "quiet"))
                text.append_text(status_cell(app, UNKNOWN, job))
            where = f" on {job.node}" if job.node else ""
            gpus = f" · {job.gpus} GPU{'s' if job.gpus != 1 else ''}" if job.gpus else ""
            left = "no time limit" if job.time_left_s is None else f"{time_left_text(job)} left"
            text.append(f"\njob {job.job_id} · {job.partition or 'default partition'}{where}{gpus} · {left} · "
                        "l its output · k cancels it")
            idle = app.state.idle.get(job.url) if job.url else None
            if idle is not None:  # as its proxy said it at the last squeue round, counted on since
                text.append(f"\nidle {idle.idle_text()} · stops {idle.stop_text()}", style=tone(app, "quiet"))
            need = app.state.run_needs.get(job.job_id)
            if need is not None:
                eta = need.eta_s()  # the ETA as it stands now
                if ends_before(job, eta, app.jobs.age_s() or 0.0):
                    text.append(f"\nthis job ends before run {need.run_id[:10]} is done (ETA {format_duration(eta)}): the run "
                                "loses this server — start another (s)", style=tone(app, "bad"))
        if server is not None:
            h = app.health(server.url)
            if h.loaded and h.kind == "openai-compatible":
                text.append("\nserves: " + ", ".join(m.name for m in h.loaded))
            elif h.loaded:
                width = max(len(m.name) for m in h.loaded)
                for i, m in enumerate(h.loaded):
                    until = present.until(m.expires_at, app.now())
                    text.append("\nloaded: " if i == 0 else "\n        ")
                    text.append(f"{m.name:<{width}}  {present.size(m.size_vram):>8} VRAM  {until}")
            elif h.answers:
                text.append("\nno model loaded now")
        self._show_detail(detail, text)

    # ---- events and actions ----
    @on(DataTable.RowHighlighted, "#servers-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value and event.row_key.value != self.app.state.selected_url:
            self.app.state.selected_url = event.row_key.value
            self.render_detail()

    @on(DataTable.RowSelected, "#servers-table")
    async def _selected(self, event: DataTable.RowSelected) -> None:
        if (event.row_key.value or "").startswith(JOB_ROW):
            return  # a job with no server yet has no models
        self.app.state.selected_url = event.row_key.value
        await self.app.run_action("show('models')")

    def action_refresh(self) -> None:
        self.app.watch_experiments()
        self.app.poll_servers()
        if self.app.jobs.available:
            self.app.jobs.expire()
            self.app.refresh_jobs()
        self._refreshing = True
        self.query_one(StatusLine).say("asking every server again…")

    def action_add_server(self) -> None:
        from app.tui.dialogs.add_server import AddServerScreen

        def added(url: str | None) -> None:
            if url:
                self.app.reload_servers(select=url)
                self.query_one(StatusLine).say(f"saved {url} in {short_path(self.app.ctx.config_path)}")

        self.app.push_screen(AddServerScreen(), added)

    def action_remove_server(self) -> None:
        from app.cluster.known import ORIGIN_CONFIG

        server = self.app.state.server(self.table.selected_key or "")
        status = self.query_one(StatusLine)
        if server is None:
            job = self.selected_job()
            status.say(f"server job {job.job_id} is not a saved server: k cancels it" if job else
                       "select a saved server first (its From column says config): x removes it from the user config")
            return
        if ORIGIN_CONFIG not in server.origins:
            status.say(f"{server.label} is not a saved server (it comes from {server.origin_text}): nothing to "
                       f"remove — {_not_saved_fix(server.origins)}")
            return
        from app.tui.dialogs.confirm import ConfirmScreen

        others = [o for o in server.origins if o != ORIGIN_CONFIG]
        stays = (f"\nIt stays listed while it comes from {', '.join(others)}." if others else "")
        question = (f"Remove the saved server {server.label}" + (f" ({server.url})" if server.name else "")
                    + f" from {short_path(self.app.ctx.config_path)}?\nThe server itself is not touched (a adds "
                    f"it again).{stays}")

        def answered(yes: bool | None) -> None:
            if yes:
                self._remove(server.url)

        self.app.push_screen(ConfirmScreen(question, yes="Remove", no="Keep"), answered)

    def _remove(self, url: str) -> None:
        from app.settings.user import remove_server

        before = [s.url for s in self.app.state.servers]
        status = self.query_one(StatusLine)
        try:
            gone = remove_server(self.app.ctx.config_path, url)
        except UserError as exc:
            status.say(str(exc), True)
            return
        self.app.reload_servers()
        still = self.app.state.server(url)
        if still is None and url in before:  # the cursor goes to the server that took its place, else the one above
            i, now = before.index(url), [s.url for s in self.app.state.servers]
            self.app.state.selected_url = next((u for u in before[i + 1:] + before[:i][::-1] if u in now), None)
            self.render_servers()
        status.say(f"removed {gone.name or gone.url} from {short_path(self.app.ctx.config_path)}"
                   + (f"; still listed: from {still.origin_text}" if still else ""))

    def action_start_job(self) -> None:
        from app.tui.dialogs.start_job import StartJobScreen

        def chosen(choice: tuple[str, str | None] | None) -> None:
            if choice:
                self.query_one(StatusLine).say(f"submitting a server job from profile {choice[0]}…")
                self._start(*choice)

        self.app.push_screen(StartJobScreen(), chosen)

    @work(thread=True, exclusive=True, group="sbatch", exit_on_error=False)
    def _start(self, profile: str, time: str | None) -> None:
        from app.cluster.jobactions import start_server_job

        app = self.app
        try:
            job_id = start_server_job(app.ctx.config, app.ctx.config_path, profile, app.ledger_dir, app.ctx.environ,
                                      time=time, jobs=app.jobs)
        except UserError as exc:
            self.app.call_from_thread(self.query_one(StatusLine).say, str(exc), True)
            return
        app.call_from_thread(self._submitted, job_id, profile)

    def _submitted(self, job_id: str, profile: str) -> None:
        self.app.state.selected_url = JOB_ROW + job_id
        self.query_one(StatusLine).say(f"submitted server job {job_id} ({profile}); it shows here as it starts")
        self.app.refresh_jobs()

    def action_cancel_job(self) -> None:
        job = self.selected_job()
        if job is None:
            self.query_one(StatusLine).say("the selected server is not one of your server jobs")
            return
        from app.tui.dialogs.confirm import ConfirmScreen

        where = f" on {job.node}" if job.node else ""
        question = (f"Cancel server job {job.job_id} ({job.name}{where}, {time_left_text(job)} left)?\n"
                    "Its Ollama server stops; a run using it carries on with its other servers or stops as "
                    "interrupted (resumable).")

        def answered(yes: bool | None) -> None:
            if yes:
                self.query_one(StatusLine).say(f"cancelling job {job.job_id}…")
                self._cancel(job.job_id)

        self.app.push_screen(ConfirmScreen(question, yes="Cancel job", no="Keep"), answered)

    def action_job_output(self) -> None:
        job = self.selected_job()
        if job is None:
            self.query_one(StatusLine).say("the selected server is not one of your server jobs: l shows the end of a "
                                           "server job's output and what it runs")
            return
        from app.tui.dialogs.job_output import JobOutputScreen

        self.app.push_screen(JobOutputScreen(job))

    @work(thread=True, exclusive=True, group="scancel", exit_on_error=False)
    def _cancel(self, job_id: str) -> None:
        from app.cluster.jobactions import stop_server_job

        app = self.app
        try:
            stop_server_job(app.ctx.config, job_id, jobs=app.jobs)
        except UserError as exc:
            app.call_from_thread(self.query_one(StatusLine).say, str(exc), True)
            return
        app.call_from_thread(self.query_one(StatusLine).say, f"cancelled job {job_id}")
        app.call_from_thread(app.refresh_jobs)


def _not_saved_fix(origins: tuple[str, ...]) -> str:
    """Where a server that is not saved comes from, and how it would leave the list."""
    from app.cluster.known import ORIGIN_ENV

    ways = []
    for origin in origins:
        if origin == ORIGIN_ENV:
            ways.append("unset OLLAMA_HOST before starting notes-tui")
        elif origin.startswith("job "):
            ways.append(f"k cancels {origin}")
        else:
            ways.append(f"edit the hosts of {origin}")
    return "; ".join(ways)
