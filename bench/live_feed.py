"""The live feed, measured: how soon a finished note shows in the feed of a real headless run, and what following a
feed costs a monitor that polls it.

    python -m bench.live_feed                      # a run at ~200 notes/s (stand-in L=20 ms, 4 slots), batch 1000
    python -m bench.live_feed --notes 4000 --poll 0.5
    python -m bench.live_feed --synthetic 200000   # follower cost and RSS over 200,000 lines (~17 min at 200/s)
    python -m bench.live_feed --subscriber 200000  # the run's side: CPU the feed adds to each note

Latency is the time from the moment the run wrote a unit line's `t` (when the note finished) to the poll that
returned it, on one host (one clock). Two figures: polled every 20 ms (what the feed itself adds: its 200 ms flush),
and as a monitor polling every --poll seconds sees it.
"""

from __future__ import annotations

import argparse
import collections
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.engine.events import UnitDone
from app.runs.follow import FeedFollower
from ledger import new_run_id
from ledger.feed import FeedWriter
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parents[1]

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
KEEP_LINES = 5000  # what a monitor keeps on screen


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def follow_run(folder: Path, url: str, notes: int, poll_s: float) -> dict:
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CHEST X-RAY {i}: clear.") for i in range(notes)])
    conn.commit()
    conn.close()
    exp = folder / "exp.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=[url], run="concurrency = 6",
                                   results='table = "r"\nbatch_size = 1000'))
    ledger = folder / "ledger"
    run_id = new_run_id()
    proc = subprocess.Popen([sys.executable, "-m", "app", "--run", str(exp), "--run-id", run_id, "--ledger",
                             str(ledger)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    follower = FeedFollower(ledger, run_id)
    kept: collections.deque = collections.deque(maxlen=KEEP_LINES)
    latencies, polls, cpu = [], 0, 0.0
    while True:
        c0 = time.thread_time()
        update = follower.poll()
        cpu += time.thread_time() - c0
        polls += 1
        now = time.time()
        latencies += [now - u["t"] for u in update.units]
        kept.extend(update.units)
        if update.ended is not None:
            break
        if proc.poll() is not None and update.ended is None and not update.units:
            raise SystemExit(f"the run ended without an end line: {proc.stderr.read()}")
        time.sleep(poll_s)
    proc.wait()
    elapsed = update.elapsed_s or 0.0
    return {"latencies": latencies, "polls": polls, "cpu": cpu, "bytes": follower.bytes_read,
            "rate": update.counts.done / elapsed if elapsed else 0.0, "done": update.counts.done}


def bench_run(args: argparse.Namespace) -> None:
    server = spawn_standin(latency=args.latency, slots=args.slots)
    try:
        for poll_s in (0.02, args.poll):
            with tempfile.TemporaryDirectory() as tmp:
                r = follow_run(Path(tmp), server.url, args.notes, poll_s)
            lat = r["latencies"]
            print(f"run of {r['done']} notes at {r['rate']:.0f} notes/s, batch_size 1000, polled every "
                  f"{poll_s * 1000:.0f} ms: note -> follower latency median {1000 * statistics.median(lat):.0f} ms, "
                  f"p95 {1000 * pct(lat, 0.95):.0f} ms, max {1000 * max(lat):.0f} ms")
            print(f"  follower: {r['polls']} polls, {1000 * r['cpu'] / r['polls']:.3f} ms CPU a poll, "
                  f"{1e6 * r['cpu'] / max(r['done'], 1):.1f} µs a note, {r['bytes'] / max(r['done'], 1):.0f} "
                  "bytes read a note")
    finally:
        server.stop()


def unit(i: int) -> dict:
    return UnitDone(id=f"{100000 + i}|ACC{i:07d}", outcome="valid", answer={"response": "(2) Unlikely"}, attempts=1,
                    latency_ms=201.3, tokens_in=812, tokens_out=31, truncated=False, error=None,
                    host="http://gpu-n57:48362").record()


def bench_synthetic(lines: int, per_poll: int) -> None:
    """A feed written as fast as it goes, `per_poll` lines between polls (100 = 200 notes/s polled every 0.5 s)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_id = new_run_id()
        writer = FeedWriter.create(Path(tmp), run_id, {"total": lines})
        follower = FeedFollower(Path(tmp), run_id)
        kept: collections.deque = collections.deque(maxlen=KEEP_LINES)
        cpu, polls, marks = 0.0, 0, []
        for i in range(lines):
            writer.add("unit", unit(i))
            if (i + 1) % per_poll == 0:
                writer.flush()
                c0 = time.thread_time()
                kept.extend(follower.poll().units)
                cpu += time.thread_time() - c0
                polls += 1
                if (i + 1) % (lines // 5) == 0:
                    marks.append((i + 1, rss_mb()))
        writer.close()
    print(f"synthetic feed of {lines} unit lines, {per_poll} lines a poll: {1000 * cpu / polls:.3f} ms CPU a poll "
          f"({1e6 * cpu / lines:.1f} µs a line; at 200 notes/s that is {100 * cpu / lines * 200:.2f}% of a core)")
    print("  RSS (last 5,000 lines kept): " + ", ".join(f"{n} lines {m:.1f} MB" for n, m in marks))


def bench_subscriber(n: int) -> None:
    """The engine's side alone: the LiveFeed subscriber's CPU per finished note, flushing every 40 notes (200 ms at
    200 notes/s), against the engine's whole ~0.4-0.8 ms a note (bench/throughput.py)."""
    from app.engine.events import Counts, RunFinished, RunStarted
    from app.engine.feed import LiveFeed

    events = [UnitDone(**unit(i)) for i in range(1000)]
    with tempfile.TemporaryDirectory() as tmp:
        feed = LiveFeed(Path(tmp))
        feed(RunStarted(run_id=new_run_id(), experiment="x", total=n, header={"total": n}))
        c0 = time.process_time()
        for i in range(n):
            feed(events[i % 1000])
            if i % 40 == 39:
                feed._flush()  # what the 200 ms timer does
        cpu = time.process_time() - c0
        feed(RunFinished(run_id="x", status="completed", counts=Counts(), elapsed_s=1.0))
        size = sum(p.stat().st_size for p in (Path(tmp) / "live").glob("*.jsonl"))
    print(f"feed subscriber: {1e6 * cpu / n:.1f} µs CPU a note ({n} notes, a flush every 40), "
          f"{size / n:.0f} bytes a note")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=int, default=3000)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--poll", type=float, default=0.5, help="the monitor's poll interval")
    p.add_argument("--synthetic", type=int, default=0, help="measure the follower on this many synthetic lines")
    p.add_argument("--subscriber", type=int, default=0, help="measure the run's feed subscriber on this many notes")
    args = p.parse_args()
    if args.subscriber:
        bench_subscriber(args.subscriber)
    elif args.synthetic:
        bench_synthetic(args.synthetic, per_poll=100)
    else:
        bench_run(args)


if __name__ == "__main__":
    main()
