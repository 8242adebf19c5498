"""Throughput of the run engine end to end: MariaDB in, stand-in Ollama servers (separate processes), results and
ledger written. Prints notes/s, efficiency = measured / (H*P/L), engine CPU ms per note, RSS, and the same notes
done the SOP's way (one at a time, row-by-row insert) and the hand-written bar (official client, thread pool of 8).

    python -m bench.throughput                          # L=200 ms, P=4, H=2, 2,000 notes
    python -m bench.throughput --queue 2 --notes 1000   # a 503 storm: every note must still be answered
    python -m bench.throughput --stream 200000          # RSS while streaming 200,000 notes (L=0, many slots)
    python -m bench.throughput --llamacpp 20            # the embedded model on the demo notes
    python -m bench.throughput --no-feed                # without the live feed (what the feed costs)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymysql

from app.backends import make_backend
from app.engine.bus import EventBus
from app.engine.events import Progress, RunStarted
from app.engine.feed import LiveFeed
from app.engine.recorder import JournalRecorder
from app.engine.runner import Runner, RunOptions
from app.experiment import load_experiment
from app.sources import open_source
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parents[1]

DB = "nt_bench"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def demo_texts() -> list[str]:
    with open(ROOT / "experiments" / "data" / "demo_notes.csv", newline="", encoding="utf-8") as f:
        return [row["note_text"] for row in csv.DictReader(f)]


def prepare_db(n: int) -> None:
    conn = pymysql.connect(autocommit=True, **MYSQL)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
        cur.execute(f"CREATE TABLE {DB}.notes (patientvisitid INT, accession VARCHAR(255), note_text BLOB, "
                    "PRIMARY KEY (patientvisitid, accession))")
        texts = [t.encode() for t in demo_texts()]
        batch = []
        for i in range(n):
            batch.append((i, f"ACC{i:07d}", texts[i % len(texts)]))
            if len(batch) == 5000:
                cur.executemany(f"INSERT INTO {DB}.notes VALUES (%s, %s, %s)", batch)
                batch = []
        if batch:
            cur.executemany(f"INSERT INTO {DB}.notes VALUES (%s, %s, %s)", batch)
    conn.close()


def write_experiment(folder: Path, hosts: list[str], concurrency: int | None, batch: int) -> Path:
    env = folder / ".env"
    env.write_text(f"DB_USER=root\nDB_PASS=\nDB_HOST=127.0.0.1\nDB_NAME={DB}\n")
    env.chmod(0o600)
    exp = folder / "bench.toml"
    source = ('kind = "mysql"\nenv_file = ".env"\ntable = "notes"\n'
              'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')
    exp.write_text(experiment_toml(source=source, hosts=hosts, name="bench",
                                   results=f'table = "results"\nbatch_size = {batch}',
                                   run=f"concurrency = {concurrency}" if concurrency else ""))
    return exp


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_engine(exp_path: Path, ledger_dir: Path, samples: list | None = None,
               feed: bool = True, marks: dict | None = None) -> tuple[float, float, int, dict]:
    """`marks`, when given, gets "started": the perf_counter when the run header was written (notes start then)."""
    exp = load_experiment(exp_path)
    source = open_source(exp)
    bus = EventBus()
    bus.subscribe(JournalRecorder(ledger_dir))
    if feed:  # as in a headless run
        bus.subscribe(LiveFeed(ledger_dir))
    if samples is not None:
        bus.subscribe(lambda e: samples.append((e.counts.done, rss_mb(), time.process_time()))
                      if isinstance(e, Progress) else None)
    if marks is not None:
        bus.subscribe(lambda e: marks.setdefault("started", time.perf_counter()) if isinstance(e, RunStarted) else None)
    runner = Runner(exp, source, make_backend(exp), bus, RunOptions())
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = asyncio.run(runner.run())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    source.close()
    return wall, cpu, result.counts.done, result.counts.as_dict()


def sop_way(hosts: list[str], n: int) -> float:
    """The SOP script's loop: one note at a time, one client, a row-by-row INSERT per result."""
    from typing import Literal

    import ollama
    from pydantic import BaseModel

    class LLMResponse(BaseModel):
        response: Literal["(1) Likely", "(2) Unlikely", "(3) Unable to say"]
        explanation: str

    client = ollama.Client(host=hosts[0], timeout=60)
    conn = pymysql.connect(database=DB, **MYSQL)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS sop_results (patientvisitid INT, accession VARCHAR(255), "
                    "llm_response VARCHAR(50), llm_explanation TEXT, query_meta VARCHAR(255))")
        cur.execute("SELECT patientvisitid, accession, note_text FROM notes LIMIT %s", (n,))
        notes = cur.fetchall()
    t0 = time.perf_counter()
    for pid, acc, text in notes:
        r = client.chat(model="llama3", messages=[{"role": "user", "content": text.decode()}],
                        format=LLMResponse.model_json_schema())
        res = LLMResponse.model_validate_json(r.message.content)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO sop_results VALUES (%s, %s, %s, %s, %s)",
                        (pid, acc, res.response, res.explanation, "bench"))
        conn.commit()
    conn.close()
    return n / (time.perf_counter() - t0)


def thread_pool_bar(hosts: list[str], n: int, workers: int = 8) -> float:
    """What a researcher writes by hand today: the official client in a thread pool of 8, writing nothing."""
    import ollama

    clients = [ollama.Client(host=h, timeout=60) for h in hosts]
    schema = {"type": "object", "properties": {"response": {"type": "string", "enum": ["a", "b"]}}}
    local = threading.local()

    def one(i: int) -> None:
        local.i = i
        clients[i % len(clients)].chat(model="llama3", messages=[{"role": "user", "content": f"note {i}"}],
                                       format=schema)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers * len(hosts)) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0)


def storm_bar(hosts: list[str], n: int, workers: int = 8) -> str:
    """The hand-written thread pool against the same short queue: how far it gets before the first 503 ends it."""
    import ollama

    clients = [ollama.Client(host=h, timeout=60) for h in hosts]
    done = 0

    def one(i: int) -> None:
        nonlocal done
        clients[i % len(clients)].chat(model="llama3", messages=[{"role": "user", "content": f"note {i}"}])
        done += 1

    try:
        with ThreadPoolExecutor(workers * len(hosts)) as pool:
            list(pool.map(one, range(n)))
    except ollama.ResponseError as exc:
        return (f"hand-written thread pool of {workers} per host, same queue: stopped by HTTP {exc.status_code} "
                f"after {done} of {n} answers (a script that writes at the end keeps none of them)")
    return f"hand-written thread pool of {workers} per host, same queue: all {n} answered (no 503 this time)"


def bench_ollama(args: argparse.Namespace) -> None:
    n = args.stream or args.notes
    latency = 0.0 if args.stream else args.latency
    slots = 64 if args.stream else args.slots
    print(f"preparing {n} notes in MariaDB ...", flush=True)
    prepare_db(n)
    servers = [spawn_standin(latency=latency, slots=slots, queue=args.queue) for _ in range(args.hosts)]
    try:
        hosts = [s.url for s in servers]
        with tempfile.TemporaryDirectory() as tmp:
            exp = write_experiment(Path(tmp), hosts, args.concurrency or (16 if args.stream else None), args.batch)
            samples: list = []
            wall, cpu, done, counts = run_engine(exp, Path(tmp) / "ledger", samples, feed=not args.no_feed)
        rate = done / wall
        busy = sum(s.stats()["busy_503"] for s in servers)
        print(f"\nengine{'' if args.no_feed else ' with the live feed'}, L={latency * 1000:.0f} ms P={slots} "
              f"H={args.hosts} queue={args.queue}: {done} notes in "
              f"{wall:.1f} s = {rate:.2f} notes/s")
        if latency > 0:
            capacity = args.hosts * slots / latency
            print(f"  efficiency {rate / capacity:.3f} (capacity {capacity:.1f} notes/s)")
        print(f"  engine CPU {1000 * cpu / max(done, 1):.3f} ms/note (whole process: DB, client, validation, "
              f"journal); valid {counts['valid']}, invalid {counts['invalid']}, errors {counts['errors']}, "
              f"503 answers {busy}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS {peak:.1f} MB")
        if len(samples) >= 4:
            (d0, _, c0), (d1, _, c1) = samples[len(samples) // 10], samples[-1]
            if d1 > d0:
                print(f"  steady-state engine CPU {1000 * (c1 - c0) / (d1 - d0):.3f} ms/note (notes {d0}..{d1}: "
                      "start-up, imports and TLS set-up left out)")
            marks = [samples[int(len(samples) * f) - 1] for f in (0.1, 0.25, 0.5, 0.75, 1.0) if int(len(samples) * f)]
            print("  RSS while streaming: " + ", ".join(f"{d} notes {m:.1f} MB" for d, m, _ in marks))
        if not args.stream and args.queue < 512:
            print(storm_bar(hosts, args.bar))
        if not args.stream and args.sop:
            for s in servers:
                s.configure(slots=args.slots, queue=512)
            sop = sop_way(hosts, args.sop)
            bar = thread_pool_bar(hosts, args.bar)
            print(f"SOP way (one at a time, row-by-row insert), {args.sop} notes: {sop:.2f} notes/s -> engine is "
                  f"{rate / sop:.1f}x faster")
            if latency > 0:
                print(f"hand-written bar (official client, thread pool of 8 per host, writes nothing): {bar:.2f} "
                      f"notes/s, efficiency {bar / capacity:.3f}")
    finally:
        for s in servers:
            s.stop()


def bench_llamacpp(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = (ROOT / "experiments" / "demo.toml").read_text()
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "demo_notes.csv").write_bytes((ROOT / "experiments" / "data" / "demo_notes.csv").read_bytes())
        exp = Path(tmp) / "demo.toml"
        exp.write_text(src)
        e = load_experiment(exp)
        source = open_source(e)
        bus = EventBus()
        bus.subscribe(JournalRecorder(Path(tmp) / "ledger"))
        runner = Runner(e, source, make_backend(e), bus, RunOptions(limit=n))
        t0 = time.perf_counter()
        result = asyncio.run(runner.run())
        wall = time.perf_counter() - t0
        source.close()
    c = result.counts
    print(f"llamacpp (SmolLM2-135M-Instruct Q4_1, {os.cpu_count()} cores): {c.done} demo notes in {wall:.1f} s "
          f"(model load included) = {c.done / wall:.3f} notes/s, {wall / max(c.done, 1):.2f} s/note; "
          f"valid {c.valid}, invalid {c.invalid}, retried {c.retried}, tokens in {c.tokens_in}, out {c.tokens_out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--queue", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--sop", type=int, default=40, help="notes for the SOP-way baseline (0 to skip)")
    p.add_argument("--bar", type=int, default=400, help="requests for the thread-pool bar")
    p.add_argument("--stream", type=int, default=0, help="stream this many notes at L=0 to watch RSS")
    p.add_argument("--llamacpp", type=int, default=0, help="run the embedded model on this many demo notes")
    p.add_argument("--no-feed", action="store_true", help="leave the live feed out (a headless run writes it)")
    args = p.parse_args()
    if args.llamacpp:
        bench_llamacpp(args.llamacpp)
    else:
        bench_ollama(args)


if __name__ == "__main__":
    main()
