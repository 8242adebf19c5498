"""Runs (4) after runs end (issue 24 items 4 and 17): one vocabulary for a run's end — the ledger's words
(`completed`, `interrupted`, `failed: why`, `crashed`), never an exit status —, title counts that agree with the rows,
a finished run that keeps its progress, the last runs of the ledger listed in an app opened after they ended, the
sparkline's scale beside it, and a short run's final rate and duration."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from app.runs.states import ENDED
from tests.helpers.ledgerkit import counts_for, forge_journal, make_header
from tests.helpers.tuikit import build_app, rows, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama
from tests.tui.test_tui_runs import run_here, workspace

ALIVE = "01KB9ALIVE0000000000000000"  # names this test process: the ledger sees it running
CRASHED = "01KB9CRASH0000000000000000"  # this host, a process that is gone, no close: crashed
STATUSES = ("completed", "interrupted", "failed")


def ended_id(i: int) -> str:
    return f"01KB8END{i:02d}000000000000000"


def forge(ledger, run_id: str, minute: int, status: str | None, done: int, pid: int, last_error=None) -> None:
    started = f"2026-11-30T08:{minute:02d}:00.000Z"
    h = make_header(experiment=f"pna-{minute:02d}", total=100, started_at=started, slurm={}, pid=pid,
                    pid_start=make_header()["pid_start"] if pid == os.getpid() else None)
    records = [(started, {"type": "header", "header": h}),
               (started, {"type": "batch", "units": [], "counts": counts_for(done, 100)})]
    if status is not None:
        records.append((f"2026-11-30T08:{minute:02d}:30.000Z", {
            "type": "close", "status": status, "counts": counts_for(done, 100), "last_error": last_error}))
    forge_journal(ledger, run_id, records)


def forge_feed(ledger, run_id: str, rates: list[int]) -> None:
    """A live feed whose recent rate climbs and falls: `rates[i]` notes in second i+1."""
    t0 = time.time() - len(rates)
    lines = [{"type": "feed", "provisional": True, "v": 1, "run": run_id, "experiment": "pna-59", "total": 100,
              "t": t0}]
    done = 0
    for second, n in enumerate(rates, start=1):
        done += n
        lines.append({"type": "progress", "counts": counts_for(done, 100), "in_flight": 2, "limits": {},
                      "elapsed_s": float(second), "rate": done / second, "t": t0 + second})
    path = ledger / "live" / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def title(app) -> str:
    return app.screen.query_one("#runs-title")._shown.plain


def progress_line(app) -> str:
    return app.screen.query_one("#run-progress")._shown.plain


def counted(app) -> str:
    """The title's counts as the rows read: running (or waiting, starting) against ended."""
    states = [cells[4] for cells in rows(app, "runs-table").values()]
    ended = sum(1 for s in states if s.split(":")[0] in ENDED)
    starting = states.count("starting")
    running = len(states) - ended - starting
    return ", ".join([f"{running} running"] + ([f"{starting} starting"] if starting else []) +
                     ([f"{ended} ended"] if ended else []))


@run
async def test_an_app_opened_after_runs_ended_lists_the_last_of_them_in_the_ledgers_words(tmp_path):
    ledger = tmp_path / "ledger"
    for i in range(12):  # twelve runs ended, a minute apart: the last ten are listed
        forge(ledger, ended_id(i), 10 + i, STATUSES[i % 3], 20 + i, 4242,
              last_error="results table pna_results: disk full" if STATUSES[i % 3] == "failed" else None)
    forge(ledger, CRASHED, 40, None, 7, 2 ** 22 + 11)
    forge(ledger, ALIVE, 59, None, 30, os.getpid())
    forge_feed(ledger, ALIVE, [2, 4, 10, 14, 6, 4])
    app = build_app(tmp_path, ledger_dir=ledger)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: len(rows(app, "runs-table")) == 11 and app.screen.followed is not None
                    and app.screen.followed.rates, timeout=20, what="the runs listed and the running one followed")
        await pilot.pause(0.3)
        listed = rows(app, "runs-table")
        assert list(listed) == [ALIVE, CRASHED] + [ended_id(i) for i in range(11, 2, -1)]
        states = {key: cells[4] for key, cells in listed.items()}
        assert states[ALIVE] == "running" and states[CRASHED] == "crashed"
        assert [states[ended_id(i)] for i in (11, 10, 9)] == [
            "failed: results table pna_results: disk full", "interrupted", "completed"]
        # each ended run keeps the counts it ended with
        assert listed[ended_id(9)][3] == "29/100 29%" and listed[CRASHED][3] == "7/100 7%"
        # the title counts the rows as they read
        assert "1 running, 10 ended" in title(app) and counted(app) == "1 running, 10 ended"
        text = screen_text(app)
        assert "exit" not in text and "No run" not in text
        # eleven rows scroll in the table rather than squeeze the per-note log at 80x24
        assert app.screen.query_one("#run-log").size.height >= 6

        # the sparkline's scale: drawn from 0 to its highest point (the recent rate peaked above where it is now)
        f = app.screen.followed
        scale = app.screen.query_one("#rate-scale")._shown
        assert scale == f"0–{max(f.rates):.1f} notes/s" and max(f.rates) > f.rate
        assert scale in screen_text(app)

        # an ended run followed (its feed long gone): its progress as it ended, how long it took, its rate
        app.screen.table.select_key(ended_id(9))
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.followed.run_id == ended_id(9), what="the ended run followed")
        await pilot.pause(0.3)
        line = progress_line(app)
        assert "29/100 (29.0%) · completed in 30s at 1.0 notes/s" in line, line
        assert "done 29 · valid 8" in screen_text(app)
        assert app.screen.query_one("#rate-scale")._shown == "too short to draw"
        # the one that failed says why, in full
        app.screen.table.select_key(ended_id(11))
        await pilot.press("enter")
        await until(pilot, lambda: "failed: results table pna_results: disk full" in progress_line(app),
                    what="why it failed")
        await pilot.press("s")  # nothing to stop: no question asked
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "RunsScreen"


@pytest.fixture
def server():
    with StandinOllama(latency=0.05, slots=4) as s:
        yield s


@pytest.mark.slow  # seconds of real time
def test_runs_started_here_end_in_the_ledgers_words_and_keep_their_progress_after_reopening(tmp_path, server):
    """Two runs started here; the one not followed is sent SIGTERM (its process exits 143) and the followed one is
    killed outright. Each row says interrupted / crashed — never `exit 143` — with the counts it ended with, the title
    counts what the rows say, and an app opened afterwards lists both the same way."""
    exp = workspace(tmp_path, server.url, n=3000)
    other = exp.with_name("pna-two.toml")  # one run of an experiment at a time: a second experiment
    other.write_text(exp.read_text().replace('name = "pna-test"', 'name = "pna-two"')
                     .replace("pna_results", "two_results"))
    seen: dict[str, tuple] = {}

    @run
    async def first_app():
        app = build_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            first = await run_here(pilot, app, exp)
            await until(pilot, lambda: first.counts is not None and first.counts.done > 20, timeout=30,
                        what="the first run moving")
            second = await run_here(pilot, app, other)
            await until(pilot, lambda: second.counts is not None and second.counts.done > 20, timeout=30,
                        what="the second run moving")
            os.kill(app.state.started[first.run_id].detached.pid, signal.SIGTERM)
            await until(pilot, lambda: rows(app, "runs-table")[first.run_id][4] == "interrupted", timeout=30,
                        what="the first run's row: interrupted")
            assert app.state.started[first.run_id].detached.exit_code() == 143
            assert rows(app, "runs-table")[first.run_id][3] not in ("-", "0/3,000 0%")  # its progress, kept
            await until(pilot, lambda: "1 running, 1 ended" in title(app) and counted(app) == "1 running, 1 ended",
                        timeout=10, what="the title's counts")  # the title follows the rows on the next refresh
            os.kill(app.state.started[second.run_id].detached.pid, signal.SIGKILL)
            await until(pilot, lambda: rows(app, "runs-table")[second.run_id][4] == "crashed", timeout=30,
                        what="the second run's row: crashed")
            await until(pilot, lambda: "crashed in" in progress_line(app), timeout=10, what="its duration")
            assert re.search(r"crashed in \d+(\.\d)?s at [\d.]+ notes/s", progress_line(app)), progress_line(app)
            await until(pilot, lambda: counted(app) == "0 running, 2 ended" and "0 running, 2 ended" in title(app),
                        timeout=10, what="the title's counts")
            text = screen_text(app)
            assert "exit" not in text and "143" not in text and "-9" not in text
            await until(pilot, lambda: all(cells[3] == progress_for(app, key)
                                           for key, cells in rows(app, "runs-table").items()), timeout=10,
                        what="the rows' counts from the ledger")
            seen.update({key: (cells[3], cells[4]) for key, cells in rows(app, "runs-table").items()})

    @run
    async def second_app():
        app = build_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: len(rows(app, "runs-table")) == 2, timeout=20, what="the runs listed")
            await pilot.pause(0.3)
            assert {key: (cells[3], cells[4]) for key, cells in rows(app, "runs-table").items()} == seen
            assert "0 running, 2 ended" in title(app)

    first_app()
    second_app()


def progress_for(app, run_id: str) -> str:
    """A row's progress as the ledger has it (the record, once the run is over)."""
    from app.runs.listing import progress_words

    r = next(r for r in app.screen.runs if r.run_id == run_id)
    return progress_words(r.counts["done"], r.total)


@pytest.mark.slow  # seconds of real time
@run
async def test_a_short_run_shows_its_final_rate_and_duration(tmp_path):
    with StandinOllama(latency=0.0, slots=8) as fast:
        exp = workspace(tmp_path, fast.url, n=400)
        app = build_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            f = await run_here(pilot, app, exp, limit="12")
            await until(pilot, lambda: f.ended is not None, timeout=30, what="the run to end")
            await until(pilot, lambda: " in " in progress_line(app), timeout=5, what="its duration on screen")
            line = progress_line(app)
            took = f.ended["elapsed_s"]
            assert f"12/12 (100.0%) · completed in {took:.1f}s at {12 / took:.1f} notes/s" in line, line
            await until(pilot, lambda: rows(app, "runs-table")[f.run_id][3:] == ("12/12 100%", "completed")
                        and "0 running, 1 ended" in title(app), timeout=10, what="the row and title: completed")
            scale = app.screen.query_one("#rate-scale")._shown
            assert scale == ("too short to draw" if not f.rates else f"0–{max(f.rates):.1f} notes/s")
            assert scale in screen_text(app)
