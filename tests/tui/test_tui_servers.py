"""Screen 1, Servers, driven with Pilot against stand-in Ollama servers: where servers come from, up / down / back,
a hung server, the cursor across refreshes, adding a server."""

from __future__ import annotations

import os
import socket
import threading

from app.cluster.health import PROBE_TIMEOUT_S
from app.tui.dialogs.confirm import ConfirmScreen
from tests.helpers.tuikit import build_app, closed_url, rows, run, screen_text, until, write_config
from tests.standin.standin_ollama import StandinOllama, spawn_standin


@run
async def test_every_origin_listed_with_state_version_and_loaded_models(tmp_path, standin):
    down = closed_url()
    write_config(tmp_path / "user-config.toml", [(standin.url, "gpu-a")])
    ws = tmp_path / "workspace" / "experiments"
    ws.mkdir(parents=True)
    (ws / "pna.toml").write_text(f'[model]\nhosts = ["{down}", "{standin.url}"]\n')  # not valid, but names hosts
    other = StandinOllama(models=("mistral",), version="0.12.1").start()
    try:
        app = build_app(tmp_path, {"OLLAMA_HOST": other.url.removeprefix("http://")})
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: all(app.health(s.url).state != "unknown" for s in app.state.servers), what="probes")
            table = rows(app, "servers-table")
            assert list(table) == [standin.url, other.url, down]
            name, origin, state, kind, version, rtt, left, loaded = table[standin.url]
            assert (name, origin, state, kind, version) == ("gpu-a", "config, pna.toml", "up", "ollama", "0.11.10")
            assert rtt.endswith(" ms") and left == "" and loaded.startswith("llama3:latest 4.7 GB until ")
            assert table[other.url][1:5] == ("$OLLAMA_HOST", "up", "ollama", "0.12.1")
            assert table[down][2] == "down: refused" and table[down][3:5] == ("", "")
            text = screen_text(app)
            assert "gpu-a" in text and "down: refused" in text and "Ollama 0.11.10" in text
            await pilot.press("down", "down")  # the down server's detail says what to do
            assert "is the server job running? (squeue --me)" in screen_text(app)
    finally:
        other.stop()


@run
async def test_a_killed_server_turns_down_and_up_again_after_it_restarts(tmp_path):
    server = spawn_standin()
    port = int(server.url.rsplit(":", 1)[1])
    app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.health(server.url).state == "up", what="up")
            server.kill()
            app.poll_servers()
            await until(pilot, lambda: app.health(server.url).state == "down", what="down")
            assert "down: refused" in screen_text(app)
            server = spawn_standin(port=port)
            app.poll_servers()
            await until(pilot, lambda: app.health(server.url).state == "up", what="up again")
            assert rows(app, "servers-table")[server.url][2] == "up"
    finally:
        server.stop()


class HungServer:
    """Accepts connections and never answers: what a server whose node is wedged looks like."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@run
async def test_a_hung_server_does_not_hold_up_keys_and_ends_down_after_the_timeout(tmp_path, standin):
    hung = HungServer()
    write_config(tmp_path / "user-config.toml", [(hung.url, "wedged"), (standin.url, "gpu-a")])
    app = build_app(tmp_path)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.health(standin.url).state == "up", what="the good server up")
            assert app.monitor.get(hung.url).state == "unknown" and app.monitor.in_flight() == 1
            await pilot.press("2")  # keys are handled while the probe of the hung server waits
            assert app.current_mode == "models" and app.monitor.in_flight() == 1
            await pilot.press("1")
            assert app.current_mode == "servers" and app.monitor.in_flight() == 1
            await until(pilot, lambda: app.health(hung.url).state == "down", timeout=PROBE_TIMEOUT_S + 5,
                        what="the hung server marked down")
            assert app.health(hung.url).reason == f"no answer in {PROBE_TIMEOUT_S:g} s"
    finally:
        hung.close()


@run
async def test_the_cursor_stays_on_its_server_across_refreshes_and_additions(tmp_path, standin):
    second = StandinOllama().start()
    write_config(tmp_path / "user-config.toml", [(standin.url, "gpu-a"), (second.url, "gpu-b")])
    app = build_app(tmp_path)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.health(second.url).state == "up", what="probes")
            await pilot.press("down")
            table = app.screen.query_one("#servers-table")
            assert table.selected_key == second.url and app.state.selected_url == second.url
            for _ in range(3):
                app.poll_servers()
                await until(pilot, lambda: app.monitor.in_flight() == 0, what="refresh")
                assert table.selected_key == second.url
            second.configure(version="0.12.0")  # a changed cell is redrawn, the cursor does not move
            app.poll_servers()
            await until(pilot, lambda: rows(app, "servers-table")[second.url][4] == "0.12.0", what="new version")
            assert table.selected_key == second.url
            assert "gpu-b" in app.screen.query_one("#server-detail").render().plain
    finally:
        second.stop()


@run
async def test_add_server_checks_the_url_saves_it_and_shows_it(tmp_path, standin):
    config = tmp_path / "user-config.toml"
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert "No model server is known yet" in screen_text(app)
        await pilot.press("a")
        await pilot.press(*"gpu-n57")  # no port: refused with the fix
        await pilot.press("enter")
        error = app.screen.query_one("#error").render().plain
        assert "is not a server address" in error and "http://HOST:PORT" in error
        assert not config.exists()
        app.screen.query_one("#url").value = standin.url.removeprefix("http://")
        await pilot.press("tab", *"gpu-a", "enter")
        await until(pilot, lambda: app.health(standin.url).state == "up", what="the new server probed")
        assert f'url = "{standin.url}"' in config.read_text() and 'name = "gpu-a"' in config.read_text()
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        assert rows(app, "servers-table")[standin.url][:3] == ("gpu-a", "config", "up")
        assert "saved" in screen_text(app)
        await pilot.press("a")  # the same URL again: refused in one line, the file unchanged
        before = config.read_text()
        app.screen.query_one("#url").value = standin.url
        await pilot.press("enter")
        assert "is already saved" in app.screen.query_one("#error").render().plain
        await pilot.press("escape")
        assert config.read_text() == before


@run
async def test_remove_a_saved_server_after_a_confirmation_keeping_the_rest_of_the_config(tmp_path, standin):
    config = tmp_path / "user-config.toml"
    gone = closed_url()
    config.write_text(f'# my servers\n[models]\nquota_gb = 50  # the lab\'s allowance\n\n[[servers]]\nurl = "{standin.url}"'
                      f'\nname = "gpu-a"\n\n[[servers]]  # the old box\nurl = "{gone}"\nname = "old"\n')
    config.chmod(0o640)
    ws = tmp_path / "workspace" / "experiments"
    ws.mkdir(parents=True)
    (ws / "pna.toml").write_text(f'[model]\nhosts = ["{standin.url}"]\n')  # gpu-a is also named here
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: list(rows(app, "servers-table")) == [standin.url, gone], what="both listed")
        await pilot.press("x")  # gpu-a: asks first, saying it stays listed from pna.toml
        question = " ".join(app.screen.query_one(".question").render().plain.split())
        assert f"Remove the saved server gpu-a ({standin.url}) from" in question
        assert "It stays listed while it comes from pna.toml." in question
        before = config.read_text()
        await pilot.press("n")  # no: nothing written
        assert config.read_text() == before and rows(app, "servers-table")[standin.url][1] == "config, pna.toml"

        await pilot.press("x", "y")
        await until(pilot, lambda: rows(app, "servers-table")[standin.url][1] == "pna.toml", what="gpu-a unsaved")
        assert "removed gpu-a from" in screen_text(app) and "still listed: from pna.toml" in screen_text(app)
        text = config.read_text()
        assert standin.url not in text and "gpu-a" not in text
        assert text.startswith("# my servers\n[models]\nquota_gb = 50  # the lab's allowance\n") and "old" in text
        assert oct(config.stat().st_mode & 0o777) == "0o640"  # its mode kept
        assert not list(tmp_path.glob(".user-config.toml.*"))  # no temp file left behind

        await pilot.press("x")  # a server only named by an experiment: nothing to remove, and where it comes from
        text = " ".join(screen_text(app).split())
        assert app.screen.query_one("#servers-table").selected_key == standin.url
        assert "is not a saved server (it comes from pna.toml): nothing to remove — edit the hosts of pna.toml" in text
        assert not isinstance(app.screen, ConfirmScreen)

        await pilot.press("up", "x", "y")  # the old box (saved ones come first): gone, the cursor on the next
        await until(pilot, lambda: list(rows(app, "servers-table")) == [standin.url], what="the old box gone")
        assert app.screen.query_one("#servers-table").selected_key == standin.url
        assert "[[servers]]" not in config.read_text() and "quota_gb = 50" in config.read_text()
        assert app.ctx.config.servers == []


def fake_squeue(tmp_path, monkeypatch, script: str) -> None:
    """A stand-in squeue on PATH running `script` (the real one cannot be made slow or broken on demand)."""
    import app.cluster.slurm as slurm_module

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "squeue"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(slurm_module, "_shared", {})
    monkeypatch.setattr(slurm_module.Slurm, "available", property(lambda self: True))  # the autouse no_slurm undone


@run
async def test_a_failing_squeue_is_said_with_its_cause_not_shown_as_no_jobs(tmp_path, monkeypatch):
    """A stand-in squeue that fails as Slurm's does when slurmctld is down (the real one cannot be stopped here
    on demand): Servers says the jobs are unknown and why, not "0 server jobs"."""
    fake_squeue(tmp_path, monkeypatch, "echo 'squeue: error: Unable to contact slurm controller (connect failure)' >&2\n"
                                       "exit 1")
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: "squeue failed" in screen_text(app), what="the failure on screen")
        text = screen_text(app)
        assert "0 server jobs" not in text and "server jobs unknown: squeue failed (below)" in text
        assert "squeue could not get the job list: Unable to contact slurm controller (connect failure)" in text
        assert "slurmctld) is not answering" in text and "partition" not in text


@run
async def test_before_squeue_answers_the_jobs_are_being_asked_for_not_zero(tmp_path, monkeypatch):
    """A busy controller: squeue takes seconds. Meanwhile Servers says it is asking, not "0 server jobs"."""
    fake_squeue(tmp_path, monkeypatch, "sleep 2\nexit 0")  # no job, after a while
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: "Servers" in screen_text(app), what="the Servers screen")
        assert "server jobs: asking squeue…" in screen_text(app) and "0 server jobs" not in screen_text(app)
        await until(pilot, lambda: "0 server jobs" in screen_text(app), timeout=15, what="squeue's answer")
        assert "asking squeue" not in screen_text(app)
