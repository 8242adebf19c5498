"""The live feed beside the journal: a follower in this process sees each note of a headless run in another process
long before its batch is committed, reading only new bytes; the journal still claims no row the table lacks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from app.engine.events import Counts, Progress, RunFinished, RunStarted, UnitDone
from app.engine.feed import LiveFeed
from app.runs.follow import FeedFollower
from ledger import new_run_id
from ledger.feed import FeedWriter, feed_path, prune_feeds
from tests.helpers.notes import SOURCE, make_db, results
from tests.helpers.runhelp import journal_records, spawn_run
from tests.helpers.support import experiment_toml
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama


def unit_event(i: int, outcome: str = "valid", attempts: int = 1) -> UnitDone:
    return UnitDone(id=str(i), outcome=outcome, answer={"response": "(1) Likely"} if outcome == "valid" else {},
                    attempts=attempts, latency_ms=12.5, tokens_in=40, tokens_out=9, truncated=False,
                    error=None if outcome == "valid" else "schema", host="http://h:1")


def test_each_note_shows_in_the_feed_while_the_journal_has_no_unit_yet(tmp_path, private_ledger):
    make_db(tmp_path / "notes.db", n=200)
    run_id = new_run_id()
    with StandinOllama(latency=0.05, slots=2) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], run="concurrency = 2",
                                       results='table = "pna_results"\nbatch_size = 1000'))
        proc = spawn_run(exp, "--run-id", run_id)
        follower = FeedFollower(private_ledger, run_id)
        seen: list[dict] = []
        polls_with_units = 0

        def follow() -> int:
            nonlocal polls_with_units
            update = follower.poll()
            seen.extend(update.units)
            polls_with_units += bool(update.units)
            return len(seen)

        wait_for(lambda: follow() >= 6 and polls_with_units >= 2)  # note by note, not all at the end
        server.configure(hang_rate=1.0)  # from now on no answer comes: the run sits with its batch uncommitted
        wait_for(lambda: server.stats()["hung"] == 2)
        answered = server.stats()["served"]
        wait_for(lambda: follow() == answered)  # every answered note reaches the feed without a batch commit
        # mid-run: the feed names every finished note; the journal has its header and no unit; the table no row
        journal = journal_records(private_ledger)
        assert [r["type"] for r in journal if r["type"] != "checkpoint"] == ["header"]
        assert results(tmp_path / "notes.db") == []
        assert proc.poll() is None
        assert len({u["id"] for u in seen}) == len(seen) >= 6
        assert all(u["outcome"] == "valid" and set(u["answer"]) == {"response"} for u in seen)  # no free text
        assert {"attempts", "latency_ms", "tokens_in", "tokens_out", "truncated", "error", "host", "t"} <= set(seen[0])
        update = follower.poll()
        assert update.header["provisional"] is True and update.header["journal"] == f"journal/{run_id}.jsonl"
        assert update.counts.done == len(seen) and update.counts.total == 200
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # the hung notes are not waited for
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    update = follower.poll()
    seen += update.units
    assert update.ended["status"] == "interrupted" and update.ended["reason"] == "SIGTERM"
    assert update.counts.done == len(seen)
    # the promise: the journal records exactly the committed units, and each has its row
    journal_ids = [u["id"] for r in journal_records(private_ledger) if r["type"] == "batch" for u in r["units"]]
    rows = {str(r["note_id"]) for r in results(tmp_path / "notes.db")}
    assert sorted(journal_ids) == sorted(u["id"] for u in seen)
    assert set(journal_ids) == rows
    assert follower.bytes_read == os.path.getsize(feed_path(private_ledger, run_id))  # each byte read once
    assert oct(os.stat(feed_path(private_ledger, run_id)).st_mode & 0o777) == "0o600"


def test_the_follower_reads_only_new_bytes_and_waits_for_a_cut_last_line(tmp_path):
    run_id = new_run_id()
    path = feed_path(tmp_path, run_id)
    follower = FeedFollower(tmp_path, run_id)
    assert follower.poll().units == [] and follower.bytes_read == 0  # no feed yet: the run is starting
    writer = FeedWriter.create(tmp_path, run_id, {"total": 10, "experiment": "x"})
    for i in range(3):
        writer.add("unit", unit_event(i).record())
    writer.flush()
    update = follower.poll()
    assert [u["id"] for u in update.units] == ["0", "1", "2"]
    assert update.bytes_read == follower.bytes_read == path.stat().st_size
    assert update.counts.done == 3 and update.counts.valid == 3 and update.counts.total == 10
    assert follower.poll().bytes_read == 0  # nothing new: nothing read
    line = json.dumps({"type": "unit", **unit_event(3, "invalid", attempts=2).record()}).encode() + b"\n"
    with open(path, "ab") as f:
        f.write(line[:25])  # a write under way: half a line
    size_before = path.stat().st_size
    update = follower.poll()
    assert update.units == [] and update.bytes_read == 25
    with open(path, "ab") as f:
        f.write(line[25:])
    update = follower.poll()
    assert [u["id"] for u in update.units] == ["3"] and update.bytes_read == len(line) - 25
    assert update.counts.invalid == 1 and update.counts.retried == 1 and update.counts.done == 4
    assert follower.bytes_read == size_before + len(line) - 25 == path.stat().st_size
    writer.add("progress", {"counts": Counts(total=10, done=7, valid=6, invalid=1).as_dict(), "in_flight": 2,
                            "elapsed_s": 2.0, "rate": 3.5})
    writer.add("unit", unit_event(7).record())
    writer.add("progress", {"counts": Counts(total=10, done=9, valid=8, invalid=1).as_dict(), "in_flight": 1,
                            "elapsed_s": 3.0, "rate": 3.0})
    writer.flush()
    update = follower.poll()
    assert update.counts.done == 9 and update.in_flight == 1 and update.recent_rate == pytest.approx(2.0)
    assert follower.bytes_read == path.stat().st_size
    # a slow run finishes 0 or 1 note a second: the recent rate spans the last 10 s of progress lines, not one second
    for second, done in ((4, 9), (5, 10), (6, 10), (7, 10), (8, 10), (9, 10), (10, 10), (11, 10), (12, 10), (13, 10),
                         (14, 10)):
        writer.add("progress", {"counts": Counts(total=10, done=done, valid=done - 1, invalid=1).as_dict(),
                                "in_flight": 1, "elapsed_s": float(second), "rate": done / second})
        writer.flush()
        update = follower.poll()
        assert update.recent_rate is not None and update.recent_rate > 0  # never 0 while the window holds a note
    assert update.recent_rate == pytest.approx(1 / 10)  # 10 s: 13 → 14 s no note, 4 → 14 s one note


def test_attaching_to_a_long_feed_reads_its_tail_not_its_history(tmp_path):
    run_id = new_run_id()
    writer = FeedWriter.create(tmp_path, run_id, {"total": 100_000})
    for i in range(20_000):
        writer.add("unit", unit_event(i).record())
    writer.add("progress", {"counts": Counts(total=100_000, done=20_000, valid=20_000).as_dict(), "in_flight": 4,
                            "elapsed_s": 100.0, "rate": 200.0})
    writer.add("unit", unit_event(20_000).record())
    writer.close()
    size = feed_path(tmp_path, run_id).stat().st_size
    follower = FeedFollower(tmp_path, run_id, backlog_bytes=64 * 1024)
    update = follower.poll()
    assert follower.bytes_read < 64 * 1024 + 4096 < size // 50  # the window, the header and one small read
    assert update.header["total"] == 100_000
    assert update.units[-1]["id"] == "20000" and 100 < len(update.units) < 1000
    assert all(u["type"] == "unit" for u in update.units)  # started on a line boundary
    assert update.counts.done == 20_001  # the progress line's counts, and the one unit after it


def test_the_feed_subscriber_writes_every_event_and_closes_with_the_run(tmp_path):
    feed = LiveFeed(tmp_path)
    header = {"experiment": "x", "total": 2, "model": "m", "hostname": "h", "pid": 1, "toml_text": "secret?"}
    feed(RunStarted(run_id="01J00000000000000000000000", experiment="x", total=2, header=header))
    feed(unit_event(1))
    feed(Progress(counts=Counts(total=2, done=1, valid=1), elapsed_s=1.0, in_flight=1))
    feed(unit_event(2))
    feed(RunFinished(run_id="01J00000000000000000000000", status="completed", counts=Counts(total=2, done=2),
                     elapsed_s=2.0))
    lines = [json.loads(x) for x in feed_path(tmp_path, "01J00000000000000000000000").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["feed", "unit", "progress", "unit", "end"]
    assert "toml_text" not in lines[0]  # the header's big and private parts stay in the journal
    assert lines[2]["rate"] == 1.0 and lines[-1]["status"] == "completed"


def test_a_feed_that_cannot_be_written_does_not_stop_the_run(tmp_path, capsys):
    (tmp_path / "live").write_text("not a folder")
    feed = LiveFeed(tmp_path)
    feed(RunStarted(run_id="01J00000000000000000000000", experiment="x", total=1, header={}))
    feed(unit_event(1))
    assert "the live feed cannot be written" in capsys.readouterr().err


def test_old_feeds_are_pruned(tmp_path):
    old, new = new_run_id(), new_run_id()
    for rid in (old, new):
        FeedWriter.create(tmp_path, rid, {}).close()
    os.utime(feed_path(tmp_path, old), (time.time() - 8 * 86400,) * 2)
    assert prune_feeds(tmp_path) == 1
    assert not feed_path(tmp_path, old).exists() and feed_path(tmp_path, new).exists()


def test_no_feed_line_carries_note_text_or_free_text(tmp_path, private_ledger, capsys):
    from tests.helpers.runhelp import cli

    make_db(tmp_path / "notes.db", n=12)
    with StandinOllama(latency=0.0, slots=4) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url]))
        code, _, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    (feed,) = (private_ledger / "live").glob("*.jsonl")
    text = feed.read_text()
    conn = sqlite3.connect(tmp_path / "notes.db")
    notes = [r[0] for r in conn.execute("SELECT note_text FROM notes")]
    explanations = [r[0] for r in conn.execute("SELECT explanation FROM pna_results")]
    conn.close()
    assert len(text.splitlines()) >= 14  # header, 12 units, end
    assert not any(n in text for n in notes) and not any(e in text for e in explanations)
