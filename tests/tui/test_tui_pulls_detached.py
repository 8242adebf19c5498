"""Pulls that outlive the app (issue 24 item 11): a pull started on screen 2 is a process of its own that the app
follows through `<ledger>/pulls/<id>.jsonl`. It keeps going after the app quits and completes on the server; the quit
dialog names it; a reopened app shows its progress and `c` cancels it; a pull whose process was killed is shown as
stopped, with the time, and the pull queued behind it starts."""

from __future__ import annotations

import os
import signal
import stat
import time

from app.cluster.detached_pull import pulls_dir, read_progress
from ledger.procinfo import pid_alive
from tests.helpers.tuikit import build_app, rows, run, screen_text, until, write_config
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama


async def open_models(pilot, app, url):
    await until(pilot, lambda: app.health(url).state == "up", what="server up")
    await pilot.press("2")
    await until(pilot, lambda: app.state.model_list(url).loaded_once, what="model list")


async def pull(pilot, name: str) -> None:
    await pilot.press("p", *name, "enter")


def progress_files(tmp_path):
    return sorted(pulls_dir(tmp_path / "ledger").glob("*.jsonl"))


def stop(pid: int | None) -> None:
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


@run
async def test_a_pull_goes_on_after_the_app_quits_and_completes_and_the_dialog_names_it(tmp_path, capsys):
    with StandinOllama(pull_seconds=4.0) as server:
        write_config(tmp_path / "user-config.toml", [(server.url, "gpu-a")])
        app = build_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_models(pilot, app, server.url)
            await pull(pilot, "llama3.1:8b")
            job = app.pulls.pulls[-1]
            await until(pilot, lambda: job.done > 0, what="pull moving")
            pid = app.pulls.pid(job)
            await pilot.press("q")
            assert app.screen.query_one(".question").render().plain == \
                "1 pull goes on: llama3.1:8b on gpu-a — reopen notes-tui to follow it.\nQuit?"
            await pilot.press("y")
        assert not app.is_running
        printed = " ".join(capsys.readouterr().err.split())  # after quitting: what goes on, how to cancel it
        assert f"1 pull goes on: llama3.1:8b on gpu-a — reopen notes-tui to follow it. Cancel it without the app: " \
               f"kill -TERM {pid}" in printed
        assert pid_alive(pid) and server.stats()["pulls_done"] == 0 and "llama3.1:8b" not in server.config()["models"]
        wait_for(lambda: server.stats()["pulls_done"] == 1, 20, "the pull to complete without the app", every=0.1)
        assert "llama3.1:8b" in server.config()["models"] and server.stats()["pulls_cancelled"] == 0
        [path] = progress_files(tmp_path)
        record = read_progress(path)
        assert record["state"] == "done" and record["done"] == record["total"] > 4e9 and record["pid"] == pid
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wait_for(lambda: not pid_alive(pid), 10, "the pull process to end", every=0.1)


@run
async def test_a_reopened_app_shows_the_running_pull_and_c_cancels_it(tmp_path):
    with StandinOllama(pull_seconds=40.0) as server:
        first = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        async with first.run_test(size=(80, 24)) as pilot:
            await open_models(pilot, first, server.url)
            await pull(pilot, "llama3.1:8b")
            job = first.pulls.pulls[-1]
            await until(pilot, lambda: job.done > 0, what="pull moving")
            pid = first.pulls.pid(job)
            await pilot.press("q", "y")
        assert not first.is_running
        try:
            app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: len(app.pulls.pulls) == 1, what="the pull picked up from its file")
                picked = app.pulls.pulls[0]
                assert picked.name == "llama3.1:8b" and picked.state == "pulling" and app.pulls.pid(picked) == pid
                await open_models(pilot, app, server.url)
                before = picked.done
                await until(pilot, lambda: picked.done > before and picked.rate, what="progress goes on")
                await until(pilot, lambda: "MB/s" in screen_text(app) and "ETA" in screen_text(app),
                            what="its progress on the screen")
                assert "pull  " in screen_text(app) and "llama3.1:8b" in screen_text(app)
                await pilot.press("c")
                assert app.screen.query_one("#status").render().plain == "cancelling the pull of llama3.1:8b"
                await until(pilot, lambda: picked.state == "cancelled", what="cancelled")
                await until(pilot, lambda: server.stats()["pulls_cancelled"] == 1, what="the server saw the cancel")
                await until(pilot, lambda: "cancelled at" in screen_text(app), what="cancelled on the screen")
            wait_for(lambda: not pid_alive(pid), 10, "the pull process to end", every=0.1)
            assert read_progress(progress_files(tmp_path)[0])["state"] == "cancelled"
            assert "llama3.1:8b" not in server.config()["models"]
        finally:
            stop(pid)


@run
async def test_a_killed_pull_is_shown_stopped_with_its_time_and_the_queue_goes_on(tmp_path):
    with StandinOllama(pull_seconds=40.0) as server:
        app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        pids = []
        try:
            async with app.run_test(size=(120, 30)) as pilot:
                await open_models(pilot, app, server.url)
                await pull(pilot, "llama3.1:8b")
                await pull(pilot, "mistral")
                first, second = app.pulls.pulls
                await until(pilot, lambda: first.done > 0, what="first pull moving")
                pids = [app.pulls.pid(first), app.pulls.pid(second)]
                assert second.state == "queued" and "queue mistral" in screen_text(app)
                killed_at = time.time()
                os.kill(pids[0], signal.SIGKILL)  # no last word in its file
                await until(pilot, lambda: first.state == "stopped", what="stopped")
                assert abs(first.stopped_at - killed_at) < 2.0
                await until(pilot, lambda: second.state == "pulling" and second.done > 0,
                            what="the queued pull starts once the one ahead is gone")
                await until(pilot, lambda: "stopped at " in screen_text(app), what="stopped on the screen")
                line = next(ln for ln in screen_text(app).splitlines() if "stopped at" in ln)
                assert time.strftime("%H:%M", time.localtime(first.stopped_at)) in line and "llama3.1:8b" in line
                await pilot.press("c")
                await until(pilot, lambda: second.state == "cancelled", what="second cancelled")
            reopened = build_app(tmp_path, {"OLLAMA_HOST": server.url})
            async with reopened.run_test(size=(120, 30)) as pilot:
                await until(pilot, lambda: len(reopened.pulls.pulls) == 2, what="both picked up")
                assert [p.state for p in reopened.pulls.pulls] == ["stopped", "cancelled"]
                await open_models(pilot, reopened, server.url)
                await until(pilot, lambda: "stopped at " in screen_text(reopened), what="stopped after reopening")
                assert "llama3.1:8b" not in rows(reopened, "models-table")
        finally:
            for pid in pids:
                stop(pid)
