"""Runs started from the app and runs started elsewhere, followed on screen 4: run here → counters move → stop →
interrupted in the ledger → run again → completed; a headless run of another process followed live; the app closed
and opened again while its run goes on; try against a server that answers wrongly."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from tests.helpers.runhelp import ledger_runs, spawn_run
from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import build_app, closed_url, rows, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
N = 400


def workspace(tmp_path, url: str, n: int = N):
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}: streaky opacity at the left base.")
                                                          for i in range(n)])
    conn.commit()
    conn.close()
    exp = folder / "pna.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=[url], results='table = "pna_results"\nbatch_size = 25'))
    return exp


def result_rows(exp) -> int:
    conn = sqlite3.connect(exp.parent / "notes.db")
    try:
        return conn.execute("SELECT COUNT(*) FROM pna_results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


async def run_here(pilot, app, exp, limit: str = ""):
    await pilot.press("3")
    app.screen.query_one("#experiments-table").select_key(str(exp))
    before = set(app.state.started)
    await pilot.press("g", *limit, "enter")
    await until(pilot, lambda: app.current_mode == "runs" and app.screen.followed is not None
                and app.screen.followed.run_id not in before, what="the new run followed")
    return app.screen.followed


@pytest.fixture
def slow_server():
    with StandinOllama(latency=0.05, slots=4) as server:
        yield server


@pytest.mark.slow  # seconds of real time
@run
async def test_run_here_counters_move_stop_interrupted_then_run_again_completed(tmp_path, slow_server):
    exp = workspace(tmp_path, slow_server.url)
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        followed = await run_here(pilot, app, exp)
        first = followed.run_id
        await until(pilot, lambda: followed.counts is not None and followed.counts.done >= 40 and followed.rate,
                    timeout=30, what="counters moving")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "notes/s" in text and "ETA" in text and "valid" in text and "response" in text
        assert app.screen.query_one("#run-log").line_count >= 40
        await pilot.press("s", "y")
        await until(pilot, lambda: followed.ended is not None, timeout=40, what="the run to end")
        assert followed.ended["status"] == "interrupted" and followed.counts.done < N
        await until(pilot, lambda: any(r["run_id"] == first and r["status"] == "interrupted"
                                       for r in ledger_runs(app.ledger_dir)), timeout=20, what="ledger: interrupted")
        again = await run_here(pilot, app, exp)
        assert again.run_id != first
        await until(pilot, lambda: again.ended is not None, timeout=60, what="the second run to end")
        assert again.ended["status"] == "completed"
        assert again.counts.done == N - followed.counts.done
    assert result_rows(exp) == N  # every note answered once, over the two runs
    statuses = {r["run_id"]: r["status"] for r in ledger_runs(tmp_path / "ledger")}
    assert statuses == {first: "interrupted", again.run_id: "completed"}


@pytest.mark.slow  # seconds of real time
@run
async def test_a_run_started_here_that_stops_on_a_mistake_says_why_on_screen(tmp_path):
    exp = workspace(tmp_path, closed_url(), n=20)  # a valid file whose server is not there
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        followed = await run_here(pilot, app, exp)
        await until(pilot, lambda: followed.start_error is not None, timeout=30, what="the run to stop")
        await pilot.pause(0.1)
        text = screen_text(app)
        # the ledger's word and why, never the process's exit status; the title counts the row as it reads
        assert rows(app, "runs-table")[followed.run_id][4].startswith("failed: ")
        assert "no Ollama server answers" in text and "exit" not in text and "1 ended" in text
    assert result_rows(exp) == 0


async def follow_a_headless_run_to_its_end(tmp_path, server, check) -> None:
    """Start a headless run in another process, follow it on screen 4 to its end, then `await check(pilot, app,
    followed)`; the run itself must have completed."""
    exp = workspace(tmp_path, server.url)
    proc = spawn_run(exp, "--ledger", str(tmp_path / "ledger"))
    try:
        app = build_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: app.screen.followed is not None, timeout=30, what="the run found")
            followed = app.screen.followed
            await until(pilot, lambda: followed.ended is not None, timeout=60, what="the run to end")
            await check(pilot, app, followed)
    finally:
        proc.wait(60)
    assert proc.returncode == 0


@pytest.mark.slow  # seconds of real time
@run
async def test_the_monitor_follows_a_headless_run_of_another_process(tmp_path, slow_server):
    async def check(pilot, app, followed):
        assert followed.ended["status"] == "completed" and followed.counts.done == N
        assert app.screen.query_one("#run-log").line_count > 0
        # the screen shows the end at its next repaint, not in the same tick as the follower learns it
        await until(pilot, lambda: "completed" in screen_text(app), timeout=5, what="'completed' on screen")

    await follow_a_headless_run_to_its_end(tmp_path, slow_server, check)


@pytest.mark.slow  # seconds of real time
@run
async def test_a_feed_read_slower_than_the_poll_counts_each_note_once(tmp_path, slow_server, monkeypatch):
    """On NFS or a busy node one read of the feed can take longer than the 250 ms between polls: the reads must not
    overlap and hand out the same lines twice (the label bars once showed 78 answers for 45 notes)."""
    import ledger.feed

    read_new_bytes = ledger.feed.read_new_bytes

    def slow_read(*args, **kwargs):  # the bytes come back 0.4 s after they were asked for
        got = read_new_bytes(*args, **kwargs)
        time.sleep(0.4)
        return got

    monkeypatch.setattr(ledger.feed, "read_new_bytes", slow_read)

    async def check(pilot, app, followed):
        assert followed.counts.done == N and followed.seen == N
        assert app.screen.query_one("#run-log").line_count == N
        assert followed.fields and all(sum(followed.labels[f.name].values()) == followed.counts.valid
                                       for f in followed.fields)

    await follow_a_headless_run_to_its_end(tmp_path, slow_server, check)


@pytest.mark.slow  # seconds of real time
def test_the_app_closed_and_opened_again_finds_its_run_going_on(tmp_path, slow_server):
    exp = workspace(tmp_path, slow_server.url, n=600)
    state = {}

    @run
    async def first_app():
        app = build_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            followed = await run_here(pilot, app, exp)
            await until(pilot, lambda: followed.counts is not None and followed.counts.done > 10, timeout=30,
                        what="the run moving")
            await pilot.press("q")
            question = app.screen.query_one(".question").render().plain
            assert "keeps running after you quit" in question and "kill -TERM" in question
            state["run"], state["pid"] = followed.run_id, app.state.started[followed.run_id].detached.pid
            await pilot.press("y")

    @run
    async def second_app():
        app = build_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: app.screen.followed is not None, timeout=30, what="the run found again")
            followed = app.screen.followed
            assert followed.run_id == state["run"]
            await until(pilot, lambda: followed.ended is not None, timeout=60, what="the run to end")
            assert followed.ended["status"] == "completed"

    first_app()
    os.kill(state["pid"], 0)  # the run outlived the app that started it
    second_app()
    deadline = time.monotonic() + 20
    while result_rows(exp) < 600 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result_rows(exp) == 600


@run
async def test_try_shows_the_validation_error_and_writes_nothing(tmp_path):
    with StandinOllama(invalid_rate=1.0) as server:
        exp = workspace(tmp_path, server.url, n=10)
        app = build_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            app.screen.query_one("#experiments-table").select_key(str(exp))
            await pilot.press("t")
            app.screen.query_one("#n").value = "3"
            await pilot.press("enter")
            body = lambda: app.screen.query_one("#try-reply").render().plain  # noqa: E731
            await until(pilot, lambda: "3 notes:" in body(), timeout=30, what="the try to finish")
            text = body()
            assert text.count("INVALID after 2 attempts") == 3
            assert "CXR 0: streaky opacity" in text  # the note, because the user asked to see it
            assert "--- reply (attempt 1 of 2, " in text
    assert result_rows(exp) == 0 and not (tmp_path / "ledger" / "journal").exists()


@run
async def test_a_run_whose_answers_are_thinking_only_says_why_on_the_monitor(tmp_path):
    """A reasoning model left to think on a current Ollama: the monitor names the cause while the run goes and once
    it ends, in the words of the run's closing lines."""
    with StandinOllama(latency=0.01, slots=4, version="0.13.1", models=("qwen3:8b",)) as server:
        exp = workspace(tmp_path, server.url, n=60)
        exp.write_text(exp.read_text().replace('name = "llama3"', 'name = "qwen3:8b"\nthink = true'))
        app = build_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            followed = await run_here(pilot, app, exp)
            await until(pilot, lambda: followed.ended is not None, timeout=60, what="the run to end")
            await pilot.pause(0.3)
            text = " ".join(screen_text(app).split())
            assert "completed" in text and "60 invalid: the model answered only in its thinking: set think = false" \
                in text


@run
async def test_run_here_that_cannot_start_says_why(tmp_path, slow_server):
    """A file named `logs` where the run's log folder goes: the app says so instead of doing nothing."""
    exp = workspace(tmp_path, slow_server.url, n=5)
    app = build_app(tmp_path)
    app.ledger_dir.mkdir(parents=True, exist_ok=True)
    (app.ledger_dir / "logs").write_text("not a folder")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        app.screen.query_one("#experiments-table").select_key(str(exp))
        await pilot.press("g", "enter")
        await until(pilot, lambda: any("cannot write the run's log" in str(n.message) for n in app._notifications),
                    timeout=10, what="the reason on screen")
        assert not app.state.started and slow_server.stats()["chat"] == 0
