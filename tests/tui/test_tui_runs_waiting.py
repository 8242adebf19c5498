"""Runs (4): a run waiting for its servers, or unable to write its results, says so in its row and below the table —
which server or database, since when, the error, when it gives up — instead of a rate fading to nothing; and goes
back to its rate when the wait is over. The run is forged (a journal naming this process, so the ledger sees it
alive, and a feed the test appends to), so the screen is checked line by line."""

from __future__ import annotations

import json
import re
import time

from tests.helpers.ledgerkit import forge_journal, make_header
from tests.helpers.tuikit import build_app, rows, run, screen_text, until

RUN = "01KWAITING00000000000000AA"
SCHEMA = {"type": "object", "properties": {"response": {"enum": ["(1) Likely", "(2) Unlikely"], "type": "string"}},
          "required": ["response"]}


def counts(done: int) -> dict:
    return {"total": 500, "done": done, "valid": done, "invalid": 0, "retried": 0, "empty": 0, "truncated": 0,
            "errors": 0, "tokens_in": done * 400, "tokens_out": done * 30}


class Feed:
    def __init__(self, ledger, t0: float, run_id: str = RUN):
        self.path = ledger / "live" / f"{run_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = t0
        self.elapsed = 0.0
        self.done = 0
        self.add({"type": "feed", "provisional": True, "v": 1, "run": run_id, "journal": f"journal/{run_id}.jsonl",
                  "experiment": "pna-v1", "total": 500, "model": "llama3:latest", "t": t0})

    def add(self, *lines: dict) -> None:
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))

    def tick(self, notes: int = 0, waiting: list[dict] | None = None) -> None:
        """One second of the run: `notes` finished, then its progress line."""
        self.elapsed += 1.0
        units = [{"type": "unit", "id": str(self.done + i), "outcome": "valid", "answer": {"response": "(1) Likely"},
                  "attempts": 1, "latency_ms": 200.0, "tokens_in": 400, "tokens_out": 30, "truncated": False,
                  "error": None, "host": "http://gpu-a:11434", "t": self.t0 + self.elapsed} for i in range(notes)]
        self.done += notes
        progress = {"type": "progress", "counts": counts(self.done), "in_flight": 4, "limits": {},
                    "elapsed_s": self.elapsed, "rate": self.done / self.elapsed, "t": self.t0 + self.elapsed}
        if waiting:
            progress["waiting"] = waiting
        self.add(*units, progress)


def state_of_row(app) -> str:
    return rows(app, "runs-table")[RUN][4]


def progress_line(app) -> str:
    """The followed run's progress line (its rate, ETA, state), without the sparkline's scale."""
    return app.screen.query_one("#run-progress")._shown.plain


def one_line(app) -> str:
    """The screen's text with its lines joined: a long line wraps at any width."""
    return " ".join(line.strip() for line in screen_text(app).splitlines())


def forged_run(tmp_path, monkeypatch, model: str, started_ago: float, run_id: str = RUN) -> tuple:
    """Clock times in UTC (the test reads them off the screen), a run's journal header and its feed so far."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    ledger = tmp_path / "ledger"
    forge_journal(ledger, run_id, [("2026-11-30T08:00:00.000Z", {"type": "header", "header": make_header(
        experiment="pna-v1", model=model, answer_schema=SCHEMA, total=500, slurm={},
        hosts=["http://gpu-a:11434"])})])
    return ledger, Feed(ledger, time.time() - started_ago, run_id)


@run
async def test_a_run_waiting_for_its_server_or_its_results_says_so_and_what_until(tmp_path, monkeypatch):
    ledger, feed = forged_run(tmp_path, monkeypatch, "llama3:latest", started_ago=30)
    for _ in range(5):
        feed.tick(notes=20)
    app = build_app(tmp_path, ledger_dir=ledger)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: app.screen.followed is not None and app.screen.followed.counts is not None
                        and app.screen.followed.counts.done == 100 and app.screen.followed.rate, timeout=20,
                        what="the run followed")
            await pilot.pause(0.3)
            assert state_of_row(app) == "running" and "notes/s" in progress_line(app)

            # its only server is killed: the run says it waits, since when, and when it gives up
            since = feed.t0 + feed.elapsed + 0.5
            wait = {"on": "servers", "where": ["http://gpu-a:11434"], "error": "connection refused", "since": since,
                    "give_up_at": since + 60, "over": False}
            feed.add({"type": "waiting", **wait, "t": since})
            feed.tick(waiting=[wait])
            await until(pilot, lambda: app.screen.followed.waiting, what="the wait on screen")
            await pilot.pause(0.3)
            assert state_of_row(app) == "waiting for server"
            clock = time.strftime("%H:%M:%S", time.gmtime(since))
            gives_up = time.strftime("%H:%M:%S", time.gmtime(since + 60))
            shown = one_line(app)
            assert re.search(rf"waiting for its server gpu-a:11434 \(connection refused\) since {clock} UTC \(\d+s\); "
                             rf"gives up at {gives_up} UTC \(in \d+s\)", shown), shown
            # no rate fading to nothing (the sparkline keeps its scale, "0–20.0 notes/s", beside it)
            progress = progress_line(app)
            assert "notes/s" not in progress and "ETA" not in progress, progress

            # it answers again: the wait is over, the rate is back
            feed.add({"type": "waiting", **wait, "over": True, "t": since + 5})
            feed.tick(notes=20)
            await until(pilot, lambda: not app.screen.followed.waiting, what="the wait over")
            await pilot.pause(0.3)
            assert state_of_row(app) == "running" and "notes/s" in progress_line(app)
            assert "waiting for its server" not in one_line(app)

            # its results cannot be written (the database gone): the same, in the words of the database
            since = feed.t0 + feed.elapsed + 0.5
            db = {"on": "results", "where": ["pna_results in db-1:3306/notes"],
                  "error": "Can't connect to MySQL server on 'db-1' ([Errno 111] Connection refused)",
                  "since": since, "give_up_at": since + 120, "over": False}
            feed.add({"type": "waiting", **db, "t": since})
            feed.tick(waiting=[db])
            await until(pilot, lambda: app.screen.followed.waiting, what="the results wait on screen")
            await pilot.pause(0.3)
            assert state_of_row(app) == "cannot write results"
            shown = one_line(app)
            assert ("cannot write its results to pna_results in db-1:3306/notes (Can't connect to MySQL server on "
                    "'db-1' ([Errno 111] Connection refused)) since") in shown, shown
            assert f"retries until {time.strftime('%H:%M:%S', time.gmtime(since + 120))} UTC" in shown

            # a follower that attaches mid-wait learns it from the progress lines alone
            await pilot.press("1", "4")
            app.screen._follow(RUN)
            feed.tick(waiting=[db])
            await until(pilot, lambda: app.screen.followed.waiting, what="the wait seen again")
            assert [w.on for w in app.screen.followed.waiting] == ["results"]

            # the run gives up and ends: the end line says how, and the wait is gone
            feed.add({"type": "end", "status": "failed", "reason": "error", "counts": counts(feed.done), "t": time.time()})
            await until(pilot, lambda: app.screen.followed.ended is not None, what="the end")
            await pilot.pause(0.3)
            assert not app.screen.followed.waiting and "cannot write its results" not in one_line(app)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@run
async def test_a_run_loading_its_model_says_so_before_its_first_note(tmp_path, monkeypatch):
    ledger, feed = forged_run(tmp_path, monkeypatch, "llama3.1:70b", started_ago=3)
    now = feed.t0 + 3
    load = {"on": "model", "where": ["http://gpu-a:11434"], "error": "not in memory", "since": now - 3,
            "give_up_at": None, "over": False}
    feed.add({"type": "waiting", **load, "t": now - 3})
    feed.tick(waiting=[load])
    app = build_app(tmp_path, ledger_dir=ledger)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: app.screen.followed is not None and app.screen.followed.waiting,
                        timeout=20, what="the run followed while it loads")
            await pilot.pause(0.3)
            assert state_of_row(app) == "loading model"
            clock = time.strftime("%H:%M:%S", time.gmtime(now - 3))
            shown = one_line(app)
            assert re.search(rf"loading its model on gpu-a:11434 \(not in memory\) since {clock} UTC \(\d+s\)", shown), shown
            assert "gives up" not in shown
            progress = progress_line(app)
            assert "notes/s" not in progress and "ETA" not in progress, progress

            feed.add({"type": "waiting", **load, "over": True, "t": now + 1})
            feed.tick(notes=20)
            await until(pilot, lambda: not app.screen.followed.waiting, what="the load over")
            await pilot.pause(0.3)
            assert state_of_row(app) == "running" and "notes/s" in progress_line(app)
            assert "loading its model" not in one_line(app)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@run
async def test_a_run_nobody_follows_says_it_waits_in_its_row(tmp_path, monkeypatch):
    """Two runs: the one followed moves on; the other's server is gone. Its row says so too (from its feed's last
    progress line), with its feed's counts, not the index's last batch."""
    other_id = "01KWAITING00000000000000AB"
    ledger, feed = forged_run(tmp_path, monkeypatch, "llama3:latest", started_ago=30)
    _, other = forged_run(tmp_path, monkeypatch, "qwen2.5:7b", started_ago=20, run_id=other_id)
    for _ in range(3):
        feed.tick(notes=20)
        other.tick(notes=10)
    app = build_app(tmp_path, ledger_dir=ledger)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: app.screen.followed is not None, timeout=20, what="a run followed")
            app.screen._follow(RUN)
            await until(pilot, lambda: rows(app, "runs-table").get(other_id, ("",) * 5)[4] == "running",
                        timeout=20, what="the other run listed")
            wait = {"on": "servers", "where": ["http://gpu-b:11434"], "error": "connection refused",
                    "since": other.t0 + other.elapsed, "give_up_at": other.t0 + other.elapsed + 60, "over": False}
            other.add({"type": "waiting", **wait, "t": wait["since"]})
            other.tick(waiting=[wait])
            feed.tick(notes=20)
            await until(pilot, lambda: rows(app, "runs-table")[other_id][4] == "waiting for server", timeout=10,
                        what="the other run's row: waiting")
            assert rows(app, "runs-table")[other_id][3] == "30/500 6%"
            assert app.screen.followed.run_id == RUN and state_of_row(app) == "running"
            other.add({"type": "waiting", **wait, "over": True, "t": wait["since"] + 5})
            other.tick(notes=10)
            await until(pilot, lambda: rows(app, "runs-table")[other_id][3:] == ("40/500 8%", "running"), timeout=10,
                        what="the other run's row: running again")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
