"""What the Runs screen lists and says about a run's end, without a terminal: one vocabulary (the ledger's words,
never an exit status), title counts that agree with the rows, a finished run that keeps its counts, the last runs of
the ledger listed beside the running ones, and a short run's duration and rate (app.runs.states, app.runs.listing,
app.runs.running.recent_runs, app.runs.followed)."""

from __future__ import annotations

import json
import os

import pytest

from app.engine.events import Counts
from app.runs.follow import FeedFollower, FeedUpdate, Glance, glance
from app.runs.followed import QUIET_S, FollowedRun
from app.runs.listing import Started, listing, progress_words, title_counts
from app.runs.running import RunningRun, recent_runs
from app.runs.states import ENDED, exit_status, run_state, without_path
from ledger.procinfo import this_host
from tests.helpers.ledgerkit import counts_for, forge_journal, make_header

MISTAKE = ("notes-tui: error: /home/me/experiments/pna.toml: model.hosts: no Ollama server answers: "
           "http://gpu-a:11434 (connection refused)")


class NoFeed:
    """Updates are handed to apply() directly; nothing is read."""


def record(run_id: str, status: str = "running", done: int = 0, total: int = 100, last_error: str | None = None,
           duration_s: float | None = None, experiment: str = "pna") -> RunningRun:
    return RunningRun(run_id=run_id, experiment=experiment, model="llama3", total=total,
                      counts=counts_for(done, total), hostname="login1", pid=1, here=False,
                      started_at="2026-11-30T08:00:00.000Z", status=status, last_error=last_error,
                      duration_s=duration_s)


def followed(run_id: str, recorded: RunningRun | None = None) -> FollowedRun:
    f = FollowedRun(".", run_id, follower=NoFeed())
    f.recorded = recorded
    return f


# ---- one vocabulary ----

@pytest.mark.parametrize(("code", "word"), [
    (None, None), (0, "completed"), (1, "failed"), (2, "failed"), (130, "interrupted"), (143, "interrupted"),
    (-15, "interrupted"), (-2, "interrupted"), (-9, "crashed"), (-11, "crashed")])
def test_an_exit_status_is_said_in_the_ledgers_words(code, word):
    assert exit_status(code) == word


def test_the_ledger_wins_then_the_feed_then_the_process():
    # the ledger has closed it: its word, whatever the process or the feed said
    assert run_state("interrupted", None, {"status": "completed"}, exit_code=143).words == "interrupted"
    assert run_state("crashed", exit_code=-9).words == "crashed"
    # the index has not imported the close yet: the feed's end line
    assert run_state("running", ended={"status": "interrupted", "reason": "SIGTERM"}, exit_code=143) \
        .why == "SIGTERM"
    # the feed is not followed: the exit status of the process started here, in the same words
    state = run_state("running", exit_code=143)
    assert state.words == "interrupted" and state.over
    assert "143" not in state.words and "exit" not in state.words
    # nothing ended: running if the ledger lists it, starting if it has not heard of it yet
    assert run_state("running").words == "running" and not run_state("running").over
    assert run_state(None).words == "starting"


def test_a_failed_run_says_why_from_the_ledger_or_its_log():
    assert run_state("failed", "results table pna_results: disk full").words == \
        "failed: results table pna_results: disk full"
    # a mistake before the first note: the ledger never heard of it, its log's last line says why
    state = run_state(None, exit_code=2, exit_line=MISTAKE)
    assert state.words.startswith("failed: /home/me/experiments/pna.toml: model.hosts: no Ollama server answers")
    assert "notes-tui: error" not in state.words
    # the row is narrow: the path goes (the row names the experiment), the detail keeps it
    assert state.row_words.startswith("failed: model.hosts: no Ollama server answers")
    assert without_path("no server: http://x:1") == "no server: http://x:1"
    # the feed's reason for a failed run is only "error": the ledger's last error says more
    assert run_state("running", ended={"status": "failed", "reason": "error"}).words == "failed: see its log (l)"
    assert run_state("failed", "boom", {"status": "failed", "reason": "error"}).words == "failed: boom"


def test_an_interrupted_run_says_what_stopped_it_not_an_old_note_error():
    state = run_state("interrupted", "timeout: gpu-a", {"status": "interrupted", "reason": "SIGTERM"})
    assert state.words == "interrupted" and state.why == "SIGTERM"
    assert run_state("completed", "timeout: gpu-a").why is None


# ---- the rows and the title ----

def test_rows_running_first_then_ended_newest_first_and_the_title_counts_them():
    records = [record("01B", "running", 10), record("01D", "completed", 100, duration_s=20.0),
               record("01C", "failed", 3, last_error="disk full"), record("01A", "crashed", 40)]
    started = [Started("01E", "pna"), Started("01F", "pna", exit_code=143)]
    rows = listing(records, started, None)
    assert [r.run_id for r in rows] == ["01E", "01B", "01F", "01D", "01C", "01A"]
    assert [r.state for r in rows] == ["starting", "running", "interrupted", "completed", "failed: disk full",
                                       "crashed"]
    assert title_counts(rows) == "1 running, 1 starting, 4 ended"
    live = [r for r in rows if r.state in ("running", "starting")]
    ended = [r for r in rows if r.state.split(":")[0] in ENDED]
    assert len(live) + len(ended) == len(rows) and (len(live), len(ended)) == (2, 4)
    # an ended run keeps the counts it ended with
    assert progress_words(rows[4].done, rows[4].total) == "3/100 3%"
    assert progress_words(0, 0) == "-"


def test_a_run_started_here_that_the_ledger_still_shows_running_but_whose_process_ended_says_how():
    rows = listing([record("01B", "running", 10)], [Started("01B", "pna", exit_code=143)], None)
    assert rows[0].state == "interrupted" and not rows[0].live and rows[0].done == 10
    assert title_counts(rows) == "0 running, 1 ended"


def test_the_followed_run_ended_and_out_of_the_ledgers_last_runs_keeps_its_row_and_counts():
    f = followed("01A", record("01A", "completed", 100, duration_s=5.0))
    f.apply(FeedUpdate(header={"total": 100, "experiment": "pna"}, counts=Counts(total=100, done=100, valid=100),
                       ended={"status": "completed", "elapsed_s": 5.0}))
    rows = listing([record("01B", "completed", 7)], [], f)
    assert [(r.run_id, r.state, r.done, r.total) for r in rows] == [("01B", "completed", 7, 100),
                                                                    ("01A", "completed", 100, 100)]


def test_the_followed_rows_state_comes_from_its_feed_before_the_index_knows():
    f = followed("01B", record("01B", "running", 10))
    f.apply(FeedUpdate(counts=Counts(total=100, done=60), ended={"status": "interrupted", "reason": "SIGTERM"}))
    (row,) = listing([record("01B", "running", 10)], [], f)
    assert (row.state, row.done, row.live) == ("interrupted", 60, False)


# ---- the followed run: counts kept, duration and rate once it ended, the sparkline's scale ----

def test_a_finished_run_without_a_feed_shows_the_ledgers_counts_duration_and_rate():
    f = followed("01A", record("01A", "interrupted", 150, total=400, duration_s=250.0))
    assert f.shown_counts.done == 150 and f.shown_total == 400 and f.fraction == 0.375
    assert f.state.over and f.eta_s is None
    assert f.duration_s == 250.0 and f.final_rate == pytest.approx(0.6)


def test_once_the_ledger_has_it_over_its_counts_win_over_a_crashed_feed():
    f = followed("01A", record("01A", "running", 925, total=1930))
    f.apply(FeedUpdate(counts=Counts(total=1930, done=932, valid=932)))
    assert f.shown_counts.done == 932  # running: the feed is fresher than the journal's batches
    f.recorded = record("01A", "crashed", 925, total=1930, duration_s=49.0)
    assert f.shown_counts.done == 925 and f.row_words() == "crashed"  # the record, not the notes never written


def test_a_short_run_shows_its_final_rate_and_duration_from_its_end_line():
    f = followed("01A")
    f.apply(FeedUpdate(header={"total": 30}, counts=Counts(total=30, done=30, valid=30),
                       ended={"status": "completed", "elapsed_s": 0.25}))
    assert not f.rates and f.rate is None  # too short for a recent rate
    assert f.duration_s == 0.25 and f.final_rate == pytest.approx(120.0)
    assert f.row_words() == "completed"


def test_a_run_still_running_has_no_duration_nor_final_rate():
    f = followed("01A", record("01A", "running", 10))
    f.apply(FeedUpdate(counts=Counts(total=100, done=10), recent_rate=2.0, elapsed_s=5.0))
    assert f.duration_s is None and f.final_rate is None and f.eta_s == 45.0


def test_the_sparkline_scale_is_its_highest_point_and_a_poll_of_many_lines_draws_each():
    f = followed("01A")
    f.apply(FeedUpdate(recent_rate=3.0, recent_rates=[1.0, 1.0, 4.5, 3.0]))
    assert list(f.rates) == [1.0, 4.5, 3.0] and f.rate_peak == 4.5
    f.apply(FeedUpdate(recent_rate=3.0, recent_rates=[3.0]))
    assert list(f.rates) == [1.0, 4.5, 3.0]  # no change, no point


def test_a_feed_read_in_one_poll_gives_every_progress_lines_rate(tmp_path):
    run_id = "01KRATES000000000000000000"
    feed = tmp_path / "live" / f"{run_id}.jsonl"
    feed.parent.mkdir()
    lines = [{"type": "feed", "v": 1, "run": run_id, "total": 100, "t": 0}]
    done = 0
    for second, n in enumerate([2, 2, 10, 10, 10], start=1):
        done += n
        lines.append({"type": "progress", "counts": {"total": 100, "done": done}, "elapsed_s": float(second),
                      "t": second})
    lines.append({"type": "end", "status": "completed", "counts": {"total": 100, "done": done}, "elapsed_s": 5.2})
    feed.write_text("".join(json.dumps(x) + "\n" for x in lines))
    update = FeedFollower(tmp_path, run_id).poll()
    assert len(update.recent_rates) == 4 and update.recent_rates[0] == 2.0 and update.recent_rates[-1] > 2.0
    f = followed(run_id)
    f.apply(update)
    assert len(f.rates) >= 3 and f.duration_s == 5.2 and f.final_rate == pytest.approx(34 / 5.2)


def test_a_run_the_ledger_closed_is_read_to_the_end_of_its_feed_then_no_more():
    f = followed("01A", record("01A", "running", 10))
    f.polled(0, now=100.0)
    f.polled(0, now=100.0 + QUIET_S + 1)
    assert not f.feed_done  # running: its feed may grow any moment
    f.recorded = record("01A", "crashed", 10)
    f.polled(120, now=200.0)
    f.polled(0, now=200.5)
    assert not f.feed_done  # over in the ledger, but its last lines were written just now: more may come
    f.polled(0, now=200.5 + QUIET_S)
    assert f.feed_done


# ---- the last runs of the ledger, beside the running ones ----

def _forge(ledger, run_id: str, minute: int, status: str | None, done: int, pid: int, last_error=None):
    started = f"2026-11-30T08:{minute:02d}:00.000Z"
    h = make_header(experiment="pna", total=100, started_at=started, slurm={}, hostname=this_host(), pid=pid,
                    pid_start=None if pid != os.getpid() else make_header()["pid_start"])
    records = [(started, {"type": "header", "header": h}),
               (started, {"type": "batch", "units": [], "counts": counts_for(done, 100)})]
    if status is not None:
        records.append((f"2026-11-30T08:{minute:02d}:30.000Z",
                        {"type": "close", "status": status, "counts": counts_for(done, 100),
                         "last_error": last_error}))
    forge_journal(ledger, run_id, records)


def test_recent_runs_are_every_running_one_and_the_last_that_ended(tmp_path):
    ledger = tmp_path / "ledger"
    statuses = ["completed", "interrupted", "failed"]
    for i in range(13):  # 13 ended runs, one a minute
        _forge(ledger, f"01KEND{i:02d}0000000000000000", i, statuses[i % 3], 10 + i, 1,
               last_error="disk full" if statuses[i % 3] == "failed" else None)
    _forge(ledger, "01KCRASHED0000000000000000", 20, None, 5, 2 ** 22 + 7)  # this host, its process gone
    _forge(ledger, "01KALIVE000000000000000000", 0, None, 3, os.getpid())  # the oldest, and still running
    runs = recent_runs(ledger, ended=10)
    assert [r.run_id for r in runs][:1] == ["01KALIVE000000000000000000"] and runs[0].status == "running"
    ended = runs[1:]
    assert len(ended) == 10 and ended[0].run_id == "01KCRASHED0000000000000000" and ended[0].status == "crashed"
    assert [r.run_id for r in ended[1:]] == [f"01KEND{i:02d}0000000000000000" for i in range(12, 3, -1)]
    failed = next(r for r in ended if r.status == "failed")
    assert failed.last_error == "disk full" and failed.duration_s == 30.0
    assert ended[1].counts["done"] == 22 and ended[1].total == 100
    rows = listing(runs, [], None)
    assert title_counts(rows) == "1 running, 10 ended"
    assert [r.state for r in rows][:3] == ["running", "crashed", statuses[12 % 3]]
    assert [r.run_id for r in recent_runs(ledger, ended=0)] == [runs[0].run_id]


def test_a_followed_run_whose_feed_has_begun_is_running_before_the_index_lists_it():
    f = followed("01A")  # started here a moment ago: the ledger has not listed it yet
    assert f.row_words() == "starting"
    f.apply(FeedUpdate(header={"total": 100}, counts=Counts(total=100, done=3)))
    assert f.row_words() == "running" and not f.state.over
    f.exit_code = -9  # killed outright: no end line will come
    assert f.row_words() == "crashed"


# ---- every running run's row, from its feed at a glance ----

def feed_lines(path, *records: dict) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def progress(done: int, waiting: list | None = None) -> dict:
    return {"type": "progress", "counts": counts_for(done, 100), "in_flight": 2, "elapsed_s": 10.0,
            **({"waiting": waiting} if waiting else {})}


WAIT = {"on": "servers", "where": ["http://gpu-a:11434"], "error": "connection refused", "since": 1.0,
        "give_up_at": 61.0, "over": False}


def test_a_glance_is_the_feeds_last_progress_line_and_nothing_once_it_ended(tmp_path):
    path = tmp_path / "run.jsonl"
    assert glance(path) is None  # no feed yet
    feed_lines(path, {"type": "feed", "run": "R"}, progress(10))
    assert glance(path) == Glance(counts_for_glance(10), ())
    unit = {"type": "unit", "id": "x" * 200, "outcome": "valid"}
    feed_lines(path, *[unit] * 50, progress(60, [WAIT]), *[unit] * 3)
    seen = glance(path)
    assert seen.counts.done == 60 and [w.on for w in seen.waiting] == ["servers"]
    assert glance(path, tail_bytes=500) is None  # the last progress line is further back than the glance reads
    feed_lines(path, {"type": "end", "status": "completed"})
    assert glance(path) is None  # ended: the index says how


def counts_for_glance(done: int) -> Counts:
    return Counts(**counts_for(done, 100))


def test_a_running_run_nobody_follows_says_it_waits_in_its_row_with_its_feeds_counts():
    from app.engine.events import Waiting

    waiting = record("01B", done=20)
    moving = record("01A", done=5)
    glances = {"01B": Glance(counts_for_glance(42), (Waiting.from_record(WAIT),)),
               "01A": Glance(counts_for_glance(7), ())}
    rows = {r.run_id: r for r in listing([waiting, moving], [], None, glances)}
    assert (rows["01B"].state, rows["01B"].done) == ("waiting for server", 42)
    assert (rows["01A"].state, rows["01A"].done) == ("running", 7)
    ended = record("01C", status="completed", done=100)  # a glance never overrides how the ledger says it ended
    rows = {r.run_id: r for r in listing([ended], [], None, {"01C": glances["01B"]})}
    assert (rows["01C"].state, rows["01C"].done) == ("completed", 100)


def test_the_recent_rate_starts_after_the_model_loaded_not_with_the_load(tmp_path):
    """Ten seconds of loading, then 10 notes a second: the recent rate says 10, not 10 notes spread over the load."""
    ledger = tmp_path / "ledger"
    run_id = "01KLOADRATE000000000000000"
    path = ledger / "live" / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True)
    load = {"on": "model", "where": ["http://gpu-a:11434"], "error": "not in memory", "since": 0.0,
            "give_up_at": None, "over": False}
    lines = [{"type": "feed", "run": run_id, "total": 100}, {"type": "waiting", **load}]
    lines += [{"type": "progress", "counts": counts_for(0, 100), "elapsed_s": float(t), "waiting": [load]}
              for t in range(1, 11)]
    lines.append({"type": "waiting", **load, "over": True})
    lines += [{"type": "progress", "counts": counts_for(10 * (t - 10), 100), "elapsed_s": float(t)}
              for t in range(11, 14)]
    feed_lines(path, *lines)
    update = FeedFollower(ledger, run_id).poll()
    assert update.recent_rate == pytest.approx(10.0)
    assert update.waiting == []
