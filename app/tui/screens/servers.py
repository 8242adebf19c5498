"""Screen 1, Servers: every known Ollama server, how it is, and the models loaded on it now."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable

from app.cluster import present
from app.cluster.health import Health
from app.cluster.known import KnownServer
from app.tui.tones import state_tone, tone
from app.tui.widgets.app_header import AppHeader, short_path
from app.tui.widgets.fit_table import Col, FitTable
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.shown import Shown
from app.tui.widgets.status_line import StatusLine

COLUMNS = (
    Col("server", "Server", None, min_width=12, max_width=32),
    Col("from", "From", None, min_width=8, max_width=24),
    Col("state", "State", None, min_width=13, max_width=24),
    Col("version", "Version", 7, hide_below=100),
    Col("rtt", "RTT", 6, right=True),
    Col("loaded", "Loaded now", None, min_width=10, grow=1),
)
def state_cell(app, health: Health) -> Text:
    return Text(present.state(health), style=state_tone(app, health.state))


class ServersScreen(Screen):
    BINDINGS = [
        Binding("a", "add_server", "Add server", id="servers.add"),
        Binding("r", "refresh", "Refresh", id="servers.refresh"),
    ]
    HELP = [("enter", "the models of the selected server (screen 2)")]
    _refreshing = False

    def __init__(self) -> None:
        super().__init__()
        self._rtt_shown: dict[str, float | None] = {}

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

    @property
    def table(self) -> FitTable:
        return self.query_one("#servers-table", FitTable)

    def render_servers(self) -> None:
        app = self.app
        servers: list[KnownServer] = app.servers
        self.query_one("#servers-title", Shown).show(Text.assemble(
            ("Servers", "bold"), f"  {len(servers)} known · health every 5 s · enter: its models"))
        rows = []
        for s in servers:
            h = app.health(s.url)
            loaded = ", ".join(present.loaded(m, app.now()) for m in h.loaded) or ("-" if h.answers else "")
            rows.append((s.url, (s.label, s.origin_text, state_cell(app, h), h.version or "", self._rtt(s.url, h),
                                 loaded)))
        self.table.set_rows(rows)
        if app.selected_url:
            self.table.select_key(app.selected_url)
        self.render_detail()

    def _rtt(self, url: str, health: Health) -> str:
        """The round trip as shown: a change of a millisecond or two is jitter, not news, and redraws nothing."""
        shown = self._rtt_shown.get(url)
        new = health.rtt_ms
        if shown is None or new is None or abs(new - shown) >= max(2.0, 0.25 * shown):
            self._rtt_shown[url] = shown = new
        return "-" if shown is None else f"{shown:.0f} ms"

    def _health_changed(self, url: str) -> None:
        self.render_servers()
        if self._refreshing and not self.app.monitor.in_flight():
            self._refreshing = False
            self.query_one(StatusLine).clear()

    def render_detail(self) -> None:
        app = self.app
        detail = self.query_one("#server-detail", Shown)
        server = app.server(app.selected_url)
        if server is None:
            detail.show(Text.assemble(
                ("No Ollama server is known yet. ", "bold"),
                "Press a to add one (http://HOST:PORT), export OLLAMA_HOST before starting notes-tui, "
                f"or name hosts in an experiment in {short_path(app.ctx.workspace / 'experiments')}/."))
            return
        h = app.health(server.url)
        text = Text()
        text.append(server.label, style="bold")
        if server.name:
            text.append(f"  {server.url}")
        text.append(f"  (from {server.origin_text})\n", style=tone(app, "quiet"))
        text.append_text(state_cell(app, h))
        if h.answers:
            text.append(f" · Ollama {h.version} · {self._rtt(server.url, h)}")
        elif h.state == "down":
            text.append(f" — {present.advice(h)}")
        if h.loaded:
            width = max(len(m.name) for m in h.loaded)
            for i, m in enumerate(h.loaded):
                text.append("\nloaded: " if i == 0 else "\n        ")
                until = present.until(m.expires_at, app.now())
                text.append(f"{m.name:<{width}}  {present.size(m.size_vram):>8} VRAM  {until}")
        elif h.answers:
            text.append("\nno model loaded now")
        detail.show(text)

    @on(DataTable.RowHighlighted, "#servers-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value and event.row_key.value != self.app.selected_url:
            self.app.selected_url = event.row_key.value
            self.render_detail()

    @on(DataTable.RowSelected, "#servers-table")
    async def _selected(self, event: DataTable.RowSelected) -> None:
        self.app.selected_url = event.row_key.value
        await self.app.run_action("show('models')")

    def action_refresh(self) -> None:
        self.app.poll_servers()
        self._refreshing = True
        self.query_one(StatusLine).say("asking every server again…")

    def action_add_server(self) -> None:
        from app.tui.screens.add_server import AddServerScreen

        def added(url: str | None) -> None:
            if url:
                self.app.reload_servers(select=url)
                self.query_one(StatusLine).say(f"saved {url} in {short_path(self.app.ctx.config_path)}")

        self.app.push_screen(AddServerScreen(), added)
