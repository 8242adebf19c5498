"""The adaptive in-flight limit (app/engine/limit.py) against stand-in servers, side by side with the fixed limit the
engine had before it (6 in flight per host), in one run: notes from MariaDB, results and ledger written, stand-ins
in processes of their own. Each line prints the share of the servers' capacity and the server-side queue.

    python -m bench.inflight              # every scenario
    python -m bench.inflight vllm ollama1 # some: vllm, ollama1, two, storm, slowdown, holdout, cold

- vllm:     one vLLM-shaped server, 64 slots at 200 ms (capacity 320 notes/s), 4,000 notes, openai-compatible
- ollama1:  one Ollama with one slot (OLLAMA_NUM_PARALLEL unset) at 200 ms, 300 notes
- two:      two Ollama servers of 4 slots at 200 ms and 800 ms (25 notes/s together), 2,000 notes
- storm:    4 slots and a queue of 1 (503 beyond it), 1,000 notes: every note must still be answered
- slowdown: 64 slots at 200 ms, answers twice as slow from the 5th second on (another user's run), 6,000 notes
- holdout:  two hosts of 4 slots at 200 ms (the engine's own throughput holdout, 0.96 of slot time or better)
- cold:     one Ollama with 4 slots at 200 ms whose model loads for 8 s on the first request, 1,000 notes: the
            load must not be taken for the server's pace (the server queue says whether it was). Its /api/ps
            lists the model, so the run does not load it first (as when Ollama dropped it after the run's check)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import app.engine.hosts as hosts_module
from bench.servers import write_mysql_experiment
from bench.throughput import prepare_db, run_engine
from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parents[1]

FIXED = 6  # what every host got before the limit adapted (config.DEFAULT_CONCURRENCY)


class FixedLimit:
    """The engine's old limit: FIXED in flight, one less per 503 (never below 1)."""

    def __init__(self, initial: int = FIXED, cap: int = FIXED):
        self.in_flight, self.epoch = min(FIXED, cap), 0

    def sample(self, *_) -> bool:
        return False

    def busy(self, n_at_send: int) -> None:
        self.in_flight = max(1, self.in_flight - 1)


def with_limit(kind: str):
    hosts_module.AdaptiveLimit = FixedLimit if kind == "fixed" else ADAPTIVE


ADAPTIVE = hosts_module.AdaptiveLimit


def scenario(name: str, specs: list[dict], n: int, backend: str, concurrency: int | None = None,
             slow_down_at: float | None = None, fixed_notes: int | None = None) -> None:
    """`fixed_notes`: fewer notes for the fixed limit where it would take minutes (its rate is what is compared)."""
    capacity = sum(s["slots"] / s["latency"] for s in specs)
    whole = n
    for kind in ("fixed", "adaptive"):
        n = fixed_notes if kind == "fixed" and fixed_notes else whole
        prepare_db(n)
        servers = [spawn_standin(**s, **({"flavor": "vllm"} if backend == "openai-compatible" else {}))
                   for s in specs]
        try:
            timer = None
            if slow_down_at is not None:
                def slow_down(started=servers) -> None:
                    for s, spec in zip(started, specs):
                        s.configure(latency=2 * spec["latency"])

                timer = threading.Timer(slow_down_at, slow_down)
                timer.start()
            with_limit(kind)
            marks: dict = {}
            with tempfile.TemporaryDirectory() as tmp:
                exp = write_mysql_experiment(Path(tmp), [s.url for s in servers], backend, concurrency)
                t0 = time.perf_counter()
                wall, cpu, done, counts = run_engine(exp, Path(tmp) / "ledger", marks=marks)
                notes_s = wall - (marks.get("started", t0) - t0)  # from the first note on: the database's start apart
            if timer is not None:
                timer.cancel()
            stats = [s.stats() for s in servers]
        finally:
            for s in servers:
                s.stop()
        if slow_down_at is not None:  # the capacity halves at slow_down_at: compare with the ideal run
            early = slow_down_at * capacity
            ideal = n / capacity if n <= early else slow_down_at + (n - early) / (capacity / 2)
            share, what = ideal / wall, "of the ideal run"
        else:
            share, what = done / wall / capacity, f"of capacity ({done / notes_s / capacity:.3f} from the first note)"
        queues = ", ".join(f"max {st['max_queued']}" for st in stats)
        busy = sum(st.get("busy_503", 0) + st.get("busy_429", 0) for st in stats)
        print(f"{name:9} {kind:8} {done}/{n} notes ({counts['valid']} valid) in {wall:6.1f} s = {done / wall:6.1f} "
              f"notes/s, {share:.3f} {what}; server queue {queues}; busy answers {busy}; engine CPU "
              f"{1000 * cpu / max(done, 1):.3f} ms/note", flush=True)
    with_limit("adaptive")


SCENARIOS = {
    "vllm": lambda: scenario("vllm", [dict(slots=64, latency=0.2, context_length=8192)], 4000, "openai-compatible",
                             fixed_notes=1000),
    "ollama1": lambda: scenario("ollama1", [dict(slots=1, latency=0.2)], 300, "ollama"),
    "two": lambda: scenario("two", [dict(slots=4, latency=0.2), dict(slots=4, latency=0.8)], 2000, "ollama"),
    "storm": lambda: scenario("storm", [dict(slots=4, latency=0.2, queue=1)], 1000, "ollama", concurrency=10),
    "slowdown": lambda: scenario("slowdown", [dict(slots=64, latency=0.2, context_length=8192)], 6000,
                                 "openai-compatible", slow_down_at=5.0, fixed_notes=600),
    "holdout": lambda: scenario("holdout", [dict(slots=4, latency=0.2), dict(slots=4, latency=0.2)], 2000, "ollama"),
    "cold": lambda: scenario("cold", [dict(slots=4, latency=0.2, load_seconds=8.0)], 1000, "ollama"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    args = p.parse_args()
    unknown = [w for w in args.which if w not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {unknown[0]!r}: use {', '.join(SCENARIOS)}")
    t0 = time.monotonic()
    for name in args.which or list(SCENARIOS):
        SCENARIOS[name]()
    print(f"({time.monotonic() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
