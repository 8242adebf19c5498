"""Screen 2, Models: the models of the selected server against the quota; pull (queued, with progress; each pull
a process of its own that goes on without the app, app.cluster.detached_pull), delete (after a confirmation naming
model and size), details. A pull job (`models pull NAME --profile P`, app.cluster.pulljob) shows beside the pulls of
every server job that uses its models directory, `c` cancels it (scancel), and the list is read again once it is
done."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from app.backends.ollama import full_name
from app.cluster import present
from app.cluster.models import OPENAI_NO_MANAGEMENT, ModelEntry, ServerError, delete_model
from app.cluster.pulljob import same_dir, server_models_dir
from app.cluster.pulls import DONE, PULLING, QUEUED, Pull
from app.tui.base import NotesScreen
from app.tui.tones import state_tone
from app.tui.widgets.app_header import AppHeader
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.pull_panel import PullPanel
from app.tui.widgets.quota_bar import QuotaBar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine
from ledger.clock import format_duration

COLUMNS = (
    Col("name", "Name", None, min_width=14, grow=1, keep_tag=True),
    Col("size", "Size", 7, right=True),
    Col("params", "Params", 6, right=True),
    Col("quant", "Quant", 6),
    Col("family", "Family", 7, hide_below=90),
    Col("modified", "Modified", 10),
    Col("digest", "Digest", 12, hide_below=90),
)
SORTS = {"name": (lambda m: m.name, False), "size": (lambda m: m.size, True),
         "modified": (lambda m: m.modified_at.timestamp() if m.modified_at else 0.0, True)}
SORT_BY_COLUMN = {"name": "name", "size": "size", "modified": "modified"}


class ModelsScreen(NotesScreen):
    BINDINGS = [
        Binding("p", "pull", "Pull", id="models.pull"),
        Binding("d", "delete", "Delete", id="models.delete"),
        Binding("i", "details", "Details", id="models.details"),
        Binding("c", "cancel_pull", "Cancel pull", id="models.cancel"),
        Binding("n", "sort('name')", "Sort by name", show=False, id="models.sort_name"),
        Binding("s", "sort('size')", "Sort by size", show=False, id="models.sort_size"),
        Binding("m", "sort('modified')", "Sort by modified", show=False, id="models.sort_modified"),
        Binding("r", "refresh", "Refresh", show=False, id="models.refresh"),
    ]
    HELP = [("enter", "details of the selected model"),
            ("n / s / m", "sort by name, size, modified (again: reverse); or click a column header")]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key = "name"
        self.sort_reverse = False
        self.url: str | None = None
        self._flagged: set[int | str] = set()  # pulls already announced as over the quota
        self._job_pulls_seen: set[int | str] = set()  # pull jobs of this server's models directory seen active
        self._dir_for: tuple[str | None, str | None] | None = None  # (url, job id) whose models directory is known
        self._dir: str | None = None

    def compose(self) -> ComposeResult:
        yield AppHeader("models")
        yield Shown(id="models-title", classes="screen-title")
        yield QuotaBar(id="quota")
        yield FitTable(COLUMNS, id="models-table")
        yield PullPanel(id="pulls")
        yield StatusLine(id="status")
        yield KeyBar()

    def on_mount(self) -> None:
        app = self.app
        app.models_changed.subscribe(self, self._models_changed)
        app.pulls_changed.subscribe(self, lambda _: self.render_pulls())
        app.health_changed.subscribe(self, self._health_changed)
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        app = self.app
        if self.url != app.state.selected_url:
            self.query_one(StatusLine).clear()
        chosen = app.state.server(app.state.selected_url)  # the selected row can be a server job that has no server yet
        self.url = chosen.url if chosen else (app.state.servers[0].url if app.state.servers else None)
        if self.url is not None:
            app.load_models(self.url, unless_fresh=True)
        self.render_models()

    @property
    def table(self) -> FitTable:
        return self.query_one("#models-table", FitTable)

    # ---- rendering ----
    def _models_changed(self, url: str) -> None:
        if url == self.url:
            self.render_models()

    def _health_changed(self, url: str) -> None:
        if url == self.url:
            self.render_title()

    def render_models(self) -> None:
        self.render_title()
        status = self.query_one(StatusLine)
        if self.url is None:
            self.table.set_rows([])
            self.query_one(QuotaBar).display = False
            status.say("no Ollama server is known yet — press 1, then a to add one")
            return
        state = self.app.state.model_list(self.url)
        served = self.served()
        self.query_one(QuotaBar).display = not served
        key, default_reverse = SORTS[self.sort_key]
        entries = sorted(state.entries, key=key, reverse=default_reverse != self.sort_reverse)
        self.table.set_rows([(m.name, (Text(m.name, style="italic") if m.cloud else m.name, present.model_size(m),
                                        m.parameter_size or "-", m.quantization or "-", m.family or "-",
                                        present.modified(m.modified_at), m.short_digest)) for m in entries])
        cloud = [m.name for m in entries if m.cloud]
        if state.error:
            kept = " — the list shown is the last known" if state.listed_at is not None and state.entries else ""
            status.say(state.error + kept, error=True)
        elif served:
            status.say(f"served models — {OPENAI_NO_MANAGEMENT}")
        elif cloud:
            status.say(f"cloud: {', '.join(cloud)} {present.CLOUD_NOTE}")
        elif state.loaded_once and not state.entries:
            status.say("no model on this server yet — press p to pull one (e.g. llama3.1:8b)")
        self.render_pulls()

    def render_title(self) -> None:
        app = self.app
        title = self.query_one("#models-title", Shown)
        server = app.state.server(self.url)
        if server is None:
            title.show(Text("Models", style="bold"))
            return
        h = app.health(server.url)
        state = app.state.model_list(server.url)
        arrow = "↓" if (SORTS[self.sort_key][1] != self.sort_reverse) else "↑"
        text = Text.assemble(("Models", "bold"), " on ", (server.label, "bold"), " · ")
        text.append(present.state(h), style=state_tone(app, h.state))  # a failed list is probed at once (app)
        if h.version:
            text.append(f" · {'Ollama ' if h.kind != 'openai-compatible' else ''}{h.version}")
        text.append(f" · {self._count_text(state)} · sort: {self.sort_key} {arrow}")
        title.show(text)

    @staticmethod
    def _count_text(state) -> str:
        if state.loading and not state.loaded_once:
            return "loading…"
        if state.error and state.listed_at is None:
            return "models unknown (never reached)"
        count = f"{len(state.entries)} model{'' if len(state.entries) == 1 else 's'}"
        if state.error:
            return f"{count} last known, {format_duration(time.monotonic() - state.listed_at)} ago"
        return count

    def models_dir(self) -> str | None:
        """Where the selected server keeps its models, when it is a server job of the user's (else unknown)."""
        job = self.app.state.job_of(self.url)
        key = (self.url, job.job_id if job else None)
        if self._dir_for != key:
            self._dir_for = key
            self._dir = server_models_dir(job, self.app.ctx.config, self.app.ctx.environ)
        return self._dir

    def pulls_here(self) -> list[Pull]:
        """The pulls through this server, and the pull jobs into its models directory."""
        folder = self.models_dir()
        return [p for p in self.app.pulls.pulls
                if p.url == self.url or (p.job_id and folder and same_dir(p.models_dir, folder))]

    def render_pulls(self) -> None:
        if self.url is None:
            return
        app = self.app
        pulls = self.pulls_here()
        ended = False
        for pull in pulls:
            if pull.job_id and pull.active:
                self._job_pulls_seen.add(pull.id)
            elif pull.job_id and pull.id in self._job_pulls_seen:
                self._job_pulls_seen.discard(pull.id)
                ended = ended or pull.state == DONE
        if ended:  # the model is in the directory now: this server lists it
            app.load_models(self.url)
        self.query_one(PullPanel).show_pulls(pulls)
        state = app.state.model_list(self.url)
        pulling = sum(p.total for p in pulls if p.state == PULLING)
        used = sum(m.size for m in state.entries) if state.listed_at is not None else None
        self.query_one(QuotaBar).show_usage(used, app.ctx.config.quota_bytes, pulling,
                                            last_known=bool(state.error and used is not None),
                                            unknown="the server was never reached" if state.error and used is None
                                            else None)
        for pull in pulls:
            if pull.over_quota and pull.id not in self._flagged:
                self._flagged.add(pull.id)
                self.notify(f"{pull.name}: {pull.over_quota}", title="quota", severity="warning", timeout=10)

    def served(self) -> bool:
        """An OpenAI-compatible server: it lists what it serves, and has nothing to pull or delete."""
        if self.url is None:
            return False
        entries = self.app.state.model_list(self.url).entries
        return bool(entries) and all(m.served for m in entries) or self.app.health(self.url).kind == "openai-compatible"

    # ---- actions ----
    def selected_model(self) -> ModelEntry | None:
        if self.url is None:
            return None
        key = self.table.selected_key
        return next((m for m in self.app.state.model_list(self.url).entries if m.name == key), None)

    def action_sort(self, key: str) -> None:
        if self.sort_key == key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, False
        self.render_models()

    @on(DataTable.HeaderSelected, "#models-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = SORT_BY_COLUMN.get(str(event.column_key.value))
        if key:
            self.action_sort(key)

    @on(DataTable.RowSelected, "#models-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_details()

    def action_refresh(self) -> None:
        if self.url:
            self.app.load_models(self.url)

    def action_pull(self) -> None:
        if self.url is None:
            self.query_one(StatusLine).say("no server to pull to — press 1, then a to add one", error=True)
            return
        if self.served():
            self.query_one(StatusLine).say(OPENAI_NO_MANAGEMENT, error=True)
            return
        from app.tui.dialogs.pull_model import PullModelScreen

        url = self.url

        def chosen(name: str | None) -> None:
            if not name:
                return
            job = next((p for p in self.pulls_here() if p.job_id and p.active and p.url != url
                        and full_name(p.name) == full_name(name.strip())), None)
            if job is not None:  # two servers writing the same blobs would spoil them
                said = f"{job.name} is being pulled into this server's models directory by {job.url} — wait for it " \
                       "(c cancels it)"
                # after the screen is back (its resume says what the list shows, an empty one included)
                self.call_after_refresh(self.query_one(StatusLine).say, said, error=True)
                return
            try:
                pull = self.app.pulls.add(url, name)
            except ServerError as exc:
                self.query_one(StatusLine).say(str(exc), error=True)
                return
            running = [p for p in self.app.pulls.active() if p.url == url and p.state == PULLING and p is not pull]
            if pull.state == QUEUED and running:
                message = f"{pull.name} queued behind {running[0].name} · c cancels {running[0].name} (pulling now)"
            else:
                message = f"pull of {pull.name} started (c cancels it)"
            self.query_one(StatusLine).say(message)
            self.render_pulls()

        self.app.push_screen(PullModelScreen(self.app.state.server(url).label), chosen)

    def action_cancel_pull(self) -> None:
        pulls = [p for p in self.pulls_here() if p.active]
        running = [p for p in pulls if p.state == PULLING]
        target = running[0] if running else (pulls[-1] if pulls else None)
        if target is None:
            self.query_one(StatusLine).say("no pull to cancel on this server")
            return
        if target.job_id:
            self.query_one(StatusLine).say(f"cancelling {target.url}, the pull of {target.name}")
            self.run_worker(lambda: self._cancel_job(target), thread=True, group="cancel-pull", exit_on_error=False)
            return
        try:
            sent = self.app.pulls.cancel(target)
        except ServerError as exc:  # driven from another login node
            self.query_one(StatusLine).say(str(exc), error=True)
            return
        if sent:
            self.query_one(StatusLine).say(f"cancelling the pull of {target.name}")

    def _cancel_job(self, pull: Pull) -> None:
        """In a worker thread: scancel (blocking)."""
        from app.cluster.detached_pull import SUFFIX
        from app.cluster.pulljob import cancel_pull_job
        from app.errors import UserError

        try:
            cancel_pull_job(pull, self.app.pulls.dir / f"{pull.id}{SUFFIX}")
        except UserError as exc:
            self.app.call_from_thread(self.query_one(StatusLine).say, str(exc), error=True)

    def action_details(self) -> None:
        model = self.selected_model()
        if model is None or self.url is None:
            return
        if model.served:
            self.query_one(StatusLine).say(f"{model.name}: an OpenAI-compatible server tells no more than the id it "
                                           "serves; a run records what it says of itself (ledger show)")
            return
        from app.tui.dialogs.model_details import ModelDetailsScreen

        self.app.push_screen(ModelDetailsScreen(self.url, model))

    def action_delete(self) -> None:
        model = self.selected_model()
        if model is None or self.url is None:
            self.query_one(StatusLine).say("no model selected")
            return
        if model.served:
            self.query_one(StatusLine).say(OPENAI_NO_MANAGEMENT, error=True)
            return
        if any(p.active and full_name(p.name) == model.name for p in self.pulls_here()):
            self.query_one(StatusLine).say(f"{model.name} is being pulled — cancel the pull first (c)", error=True)
            return
        from app.tui.dialogs.confirm import ConfirmScreen

        url, label = self.url, self.app.state.server(self.url).label
        question = (f"Delete {model.name} ({present.size(model.size)}) from {label}?\n"
                    "It frees that much of the quota; pulling it again downloads it again.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._delete(url, model), group="delete", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(question, yes="Delete", no="Keep"), answered)

    async def _delete(self, url: str, model: ModelEntry) -> None:
        status = self.query_one(StatusLine)
        status.say(f"deleting {model.name}…")
        try:
            await delete_model(url, model.name)
        except ServerError as exc:
            status.say(str(exc), error=True)
            return
        status.say(f"deleted {model.name} ({present.size(model.size)})")
        self.app.load_models(url)
