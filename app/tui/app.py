"""NotesApp: the screens behind keys 1–5, the Textual lifecycle around the state they share (app.tui.state: servers,
jobs, models, runs; health and pulls with their monitors), the timers and signals that keep it fresh, and `make_app`,
the one factory the CLI and the tests build it with."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.signal import Signal

from app.cluster.detached_pull import DetachedPulls
from app.cluster.health import Health, HealthMonitor, Prober
from app.cluster.known import KnownServer, known_servers
from app.cluster.models import ServerError, list_models
from app.cluster.pulls import QUEUED, Pull
from app.cluster.slurm import ServerJob
from app.context import Context
from app.tui.screens.experiments import ExperimentsScreen, experiment_files
from app.tui.screens.ledger_runs import LedgerScreen
from app.tui.screens.models import ModelsScreen
from app.tui.screens.runs import RunsScreen
from app.tui.screens.servers import ServersScreen
from app.tui.state import StartedRun, TuiState
from app.tui.widgets.app_header import user_at_host

POLL_S = 5.0  # server health: an upper limit, one request in flight per server
JOBS_S = 15.0  # squeue: at most this often for the whole app (sites treat `watch squeue` as an RPC storm)
EXPERIMENTS_S = 5.0  # the workspace's experiments/*.toml: a glob and a stat per file, so a new file's hosts show
SWITCH_HOLD_S = 0.01
REPAINT_AFTER_RESIZE_S = 0.2
EXIT_WATCHDOG_S = 3.0


MODELS_FRESH_S = 30.0  # coming back to screen 2 within this long shows the list as it was (r asks again)


class NotesApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "notes-tui"
    MODES = {"servers": ServersScreen, "models": ModelsScreen, "experiments": ExperimentsScreen, "runs": RunsScreen,
             "ledger": LedgerScreen}
    DEFAULT_MODE = "servers"
    SCREEN_KEYS = {"servers": ("1", "Servers"), "models": ("2", "Models"), "experiments": ("3", "Experiments"),
                   "runs": ("4", "Runs"), "ledger": ("5", "Ledger")}
    BINDINGS = [
        # the header shows the screens with their keys; the footer keeps its room for the screen's own actions
        Binding("1", "show('servers')", "Servers", show=False, id="screen.servers"),
        Binding("2", "show('models')", "Models", show=False, id="screen.models"),
        Binding("3", "show('experiments')", "Experiments", show=False, id="screen.experiments"),
        Binding("4", "show('runs')", "Runs", show=False, id="screen.runs"),
        Binding("5", "show('ledger')", "Ledger", show=False, id="screen.ledger"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, ctx: Context, ledger_dir: Path, prober: Prober | None = None, who: str | None = None,
                 now: Callable[[], datetime] | None = None):
        super().__init__()
        self.ctx = ctx
        self.ledger_dir = ledger_dir
        self.who = who or user_at_host()
        self.now = now or (lambda: datetime.now().astimezone())
        # the server jobs come from squeue, which blocks: a worker asks (one call per 15 s for the whole process)
        self.jobs = ctx.jobs()
        self._experiment_files = experiment_files(ctx.workspace / "experiments")  # before they are read for hosts
        servers = known_servers(ctx.workspace, ctx.config, ctx.environ)
        self.state = TuiState(servers=servers, selected_url=servers[0].url if servers else None)
        self.monitor = HealthMonitor(self._health_changed, prober)
        # each pull a process of its own that goes on after the app (Ollama stops a pull whose client went away);
        # the app follows its progress file and picks up those still going when it opens again
        self.pulls = DetachedPulls(ledger_dir, self._pull_changed, workspace=ctx.workspace, environ=ctx.environ,
                                   on_batch=self._redraw_pulls)
        self._repaint_timer = None
        self._model_tasks: dict[str, asyncio.Task] = {}
        self._pull_redraw_due = False
        self._pulls_seen_active: set[int | str] = set()
        # what screens subscribe to; each carries the server URL it is about ("" for all)
        self.servers_changed: Signal[str] = Signal(self, "servers_changed")
        self.health_changed: Signal[str] = Signal(self, "health_changed")
        self.models_changed: Signal[str] = Signal(self, "models_changed")
        self.pulls_changed: Signal[str] = Signal(self, "pulls_changed")
        # the experiments folder changed: every file with its (mtime, size)
        self.experiments_changed: Signal[dict[str, tuple[int, int]]] = Signal(self, "experiments_changed")

    # ---- life ----
    def on_mount(self) -> None:
        # SIGTERM (kill, a job's end) and SIGHUP (the SSH connection dropped) end the app the normal way, so the
        # terminal is put back as it was (no mouse reporting, no alternate screen); runs and pulls started here go on
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._ended_by, sig)
        self.pulls.start()
        self.poll_servers()
        self.set_interval(POLL_S, self.poll_servers)
        self.set_interval(EXPERIMENTS_S, self.watch_experiments)
        if self.jobs.available:
            self.refresh_jobs()
            self.set_interval(JOBS_S, self.refresh_jobs)

    def on_resize(self, _event) -> None:
        # after the terminal's size changed (a window dragged, tmux resized), repaint every line once the resizing
        # has settled: partial updates meant for the old size can land after the resize and leave stale lines
        if self._repaint_timer is not None:
            self._repaint_timer.stop()
        self._repaint_timer = self.set_timer(REPAINT_AFTER_RESIZE_S, self._repaint)

    def _repaint(self) -> None:
        self._repaint_timer = None
        if self.screen_stack:  # not before the first screen, nor after the last one left
            self.screen.refresh(repaint=True, layout=True)

    def _ended_by(self, sig: signal.Signals) -> None:
        # with the terminal gone (SSH dropped) Textual's shutdown can wait for ever on its output thread: on a login
        # node an app must not linger, so a watchdog ends the process if the clean exit has not within a moment
        threading.Thread(target=_exit_soon, args=(128 + sig.value,), daemon=True, name="exit-watchdog").start()
        message = "\n".join(filter(None, [self._goes_on_message(self.state.still_running_here()),
                                          self._pulls_go_on(self.pulls.active(), kill=True)]))
        self.exit(return_code=128 + sig.value, message=message or None)

    @work(thread=True, exclusive=True, group="squeue", exit_on_error=False)
    def refresh_jobs(self) -> None:
        jobs = self.jobs.get()  # squeue, at most once per 15 s however often this is called
        self.call_from_thread(self._jobs_arrived, jobs, self.jobs.error)
        urls = [j.url for j in jobs if j.url]
        if urls:  # each job's proxy says how long it has been idle and when it stops: one request each, at once
            from app.cluster.idle import fetch_idle_all

            idle = asyncio.run(fetch_idle_all(urls, self.ctx.environ))
            self.call_from_thread(self._idle_arrived, idle)

    def _idle_arrived(self, idle: dict) -> None:
        self.state.idle = {url: state for url, state in idle.items() if state is not None}
        self.servers_changed.publish("")

    def _jobs_arrived(self, jobs: list[ServerJob], error: str | None = None) -> None:
        state = self.state
        first, state.jobs_asked = not state.jobs_asked, True
        if not first and jobs == state.job_list and error == state.jobs_error and state.servers == self._servers_now(jobs):
            return
        state.job_list, state.jobs_error = jobs, error
        state.servers = self._servers_now(jobs)
        self.servers_changed.publish("")
        self.poll_servers()

    def _servers_now(self, jobs: list[ServerJob]) -> list[KnownServer]:
        return known_servers(self.ctx.workspace, self.ctx.config, self.ctx.environ, jobs)

    @work(thread=True, exclusive=True, group="experiment-files", exit_on_error=False)
    def watch_experiments(self) -> None:
        """Has a file of experiments/ been added, changed or removed? (In a worker: the folder can be on NFS.)"""
        files = experiment_files(self.ctx.workspace / "experiments")
        if files != self._experiment_files:
            self.call_from_thread(self._experiments_changed, files)

    def _experiments_changed(self, files: dict[str, tuple[int, int]]) -> None:
        if files == self._experiment_files:
            return
        self._experiment_files = files
        servers = self._servers_now(self.state.job_list)  # the hosts the experiments name
        if servers != self.state.servers:
            self.state.servers = servers
            self.servers_changed.publish("")
            self.poll_servers()
        self.experiments_changed.publish(files)

    async def on_unmount(self) -> None:
        await self.pulls.aclose()  # stops following them; they go on
        await self.monitor.aclose()

    def poll_servers(self) -> None:
        self.monitor.poll(s.url for s in self.state.servers)

    # ---- state the screens read ----
    def health(self, url: str) -> Health:
        return self.monitor.get(url)

    def reload_servers(self, select: str | None = None) -> None:
        """After the user config changed: the known servers again, probed at once."""
        self.ctx.reload()
        self.state.servers = self._servers_now(self.state.job_list)
        if select:
            self.state.selected_url = select
        self.servers_changed.publish("")
        self.poll_servers()

    def load_models(self, url: str, unless_fresh: bool = False) -> None:
        """Fetch the model list of a server in the background (one fetch per server at a time)."""
        state = self.state.model_list(url)
        if url in self._model_tasks or (unless_fresh and state.loaded_once and not state.error
                                        and time.monotonic() - state.fetched_at < MODELS_FRESH_S):
            return
        state.loading = True
        self.models_changed.publish(url)
        self._model_tasks[url] = asyncio.create_task(self._fetch_models(url))

    async def _fetch_models(self, url: str) -> None:
        state = self.state.model_list(url)
        try:
            state.entries, state.error = await list_models(url), None
            state.listed_at = time.monotonic()
        except ServerError as exc:  # the entries stay: the last list known, marked as such
            state.error = str(exc)
            self.monitor.poll([url])  # is it down? asked now, so the header says so at once, not at the next round
        finally:
            state.loading, state.loaded_once, state.fetched_at = False, True, time.monotonic()
            self._model_tasks.pop(url, None)
        self.models_changed.publish(url)

    # ---- callbacks from app.cluster (on this event loop) ----
    def _health_changed(self, url: str, health: Health) -> None:
        self.health_changed.publish(url)
        state = self.state.models.get(url)
        if health.answers and state is not None and state.error:
            self.load_models(url)  # it was down when we asked: ask again now that it answers

    def _pull_changed(self, pull: Pull) -> None:
        if pull.active:
            self._pulls_seen_active.add(pull.id)
        elif pull.id in self._pulls_seen_active:  # it ended now (not one that ended before the app opened)
            self._pulls_seen_active.discard(pull.id)
            self.load_models(pull.url)
        self._pull_redraw_due = True

    def _redraw_pulls(self) -> None:
        # once per read of the progress files (every 0.5 s while pulls run), however many pulls changed in it
        if self._pull_redraw_due:
            self._pull_redraw_due = False
            self.pulls_changed.publish("")

    def delay_update(self, delay: float = 0.05) -> None:
        # Textual masks a screen switch by holding updates for 50 ms: that alone put a key press past the 50 ms it
        # may take to reach the screen. The screens here are laid out in a few milliseconds; 10 ms still masks it.
        super().delay_update(min(delay, SWITCH_HOLD_S))

    # ---- actions ----
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("show", "help") and isinstance(self.screen, ModalScreen):
            return False  # a dialog is open: its keys first
        return True

    async def action_show(self, mode: str) -> None:
        if mode != self.current_mode:
            await self.switch_mode(mode)

    def action_help(self) -> None:
        from app.tui.dialogs.help import HelpScreen

        self.push_screen(HelpScreen())

    def start_run(self, path: Path) -> None:
        """"Run here": ask for a limit, start `notes-tui --run` detached, follow it on the Runs screen."""
        from app.tui.dialogs.run_here import RunHereScreen

        def chosen(choice) -> None:
            if choice is not None:
                self._start_detached(path, choice.limit, choice.rerun_invalid)

        self.push_screen(RunHereScreen(path), chosen)

    @work(thread=True, exclusive=True, group="run-here", exit_on_error=False)
    def _start_detached(self, path: Path, limit: int | None, rerun_invalid: bool) -> None:
        from app.errors import UserError
        from app.experiment import load_experiment
        from app.runs.detach import start_detached

        try:
            name = load_experiment(path).name
            detached = start_detached(path, self.ledger_dir, limit=limit, rerun_invalid=rerun_invalid,
                                      env=self.ctx.environ)
        except UserError as exc:
            self.call_from_thread(self.notify, str(exc), title="not started", severity="error", timeout=10)
            return
        self.call_from_thread(self._run_started, StartedRun(detached, name, path))

    async def _run_started(self, run: StartedRun) -> None:
        self.state.started[run.detached.run_id] = run
        self.state.follow_run_id = run.detached.run_id
        await self.action_show("runs")
        self.notify(f"{run.experiment} started; it goes on without this app", title="running", timeout=4)

    async def action_quit(self) -> None:
        pulls, runs = self.pulls.active(), self.state.still_running_here()
        goes_on = self._goes_on_message(runs)
        if not pulls and not runs:
            self.exit()
            return
        from app.tui.dialogs.confirm import ConfirmScreen

        question = "\n".join(filter(None, [self._pulls_go_on(pulls), goes_on])) + "\nQuit?"
        message = "\n".join(filter(None, [goes_on, self._pulls_go_on(pulls, kill=True)]))

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit(message=message or None)

        self.push_screen(ConfirmScreen(question, yes="Quit", no="Stay"), answered)

    def _goes_on_message(self, runs: list[StartedRun]) -> str:
        if not runs:
            return ""
        listed = "; ".join(f"{r.experiment} (run {r.detached.run_id}, pid {r.detached.pid}, output "
                           f"{r.detached.log})" for r in runs)
        return (f"{len(runs)} run{'s' if len(runs) > 1 else ''} started here keep{'s' if len(runs) == 1 else ''} "
                f"running after you quit: {listed}. Follow or stop {'them' if len(runs) > 1 else 'it'} from the Runs "
                f"screen (4, then s) when you open notes-tui again, or stop with: kill -TERM "
                f"{' '.join(str(r.detached.pid) for r in runs)}")

    def _pulls_go_on(self, pulls: list[Pull], kill: bool = False) -> str:
        """`1 pull goes on: llama3.1:8b on gpu-a — reopen notes-tui to follow it.` (and, printed after quitting, how
        to cancel it without the app)."""
        if not pulls:
            return ""
        listed = ", ".join(f"{p.name} on {self._server_label(p.url)}{' (queued)' if p.state == QUEUED else ''}"
                           for p in pulls)
        one = len(pulls) == 1
        text = (f"{len(pulls)} pull{'' if one else 's'} go{'es' if one else ''} on: {listed} — reopen notes-tui to "
                f"follow {'it' if one else 'them'}.")
        pids = [str(pid) for pid in map(self.pulls.pid, pulls) if pid is not None]
        if kill and pids:
            text += f" Cancel {'it' if one else 'them'} without the app: kill -TERM {' '.join(pids)}"
        return text

    def _server_label(self, url: str) -> str:
        server = self.state.server(url)
        return server.label if server else url.removeprefix("http://")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        from app.tui.commands import palette_commands

        yield from palette_commands(self, screen)
        yield from (c for c in super().get_system_commands(screen) if c.title not in ("Quit", "Keys"))


def _exit_soon(code: int) -> None:
    time.sleep(EXIT_WATCHDOG_S)
    os._exit(code)


def make_app(ctx: Context, ledger_dir: Path, prober: Prober | None = None, who: str | None = None,
             now: Callable[[], datetime] | None = None) -> NotesApp:
    """The one way to build the app: the CLI passes what the user gave, tests pass their own workspace and config
    (and, for snapshots, what would change between runs: round trips, user@host, the time of day)."""
    return NotesApp(ctx, ledger_dir, prober=prober, who=who, now=now)
