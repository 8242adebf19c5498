"""How fast `ledger study` answers on a big study: 12 cells (2 models x 2 prompts x 3 repeats) over 100,000 notes.

    python3 -m bench.study_scale [--notes 100000] [--cells 12] [--reps 1000] [--sampler auto|python|numpy]
                                 [--dir DIR] [--keep]
    python3 -m bench.study_scale --reuse DIR [--notes N]   # the timings again on the ledger --dir DIR built (same N)

The ledger is a real one: every cell is a journal in the journal format (written directly, without the fsync per
record Journal makes: the bench times the study, not the disk) imported by Ledger.sync, the path every ledger takes;
the import of 1.2 M units takes about 15 s, timed and printed (with, timed again on its own, the part that stores
what `ledger study` reads of each closed run: every answer's JSON read once, at import, not on every study), but the
figure the issue asks for is `ledger study` once imported. Gold labels cover 95% of the notes; each model/prompt
answers with an accuracy of its own and each repeat (another seed) keeps its model/prompt's answer for 90% of the
notes; 3% of the answers are invalid (the fallback label) and 1% empty. --cells C takes the first C cells of 4
models x 2 prompts (3 past 12 cells) x 3 repeats.

Prints, not asserts: study_report (every figure and the first page of 50 notes; with and without the bootstrap; with
every note as a row, what `ledger study` in the terminal asks for today), study_notes (a page of the per-note table,
all notes and only those that differ, at the start and deep in the table), best wall and CPU time of --repeat calls,
the peak of Python's allocations (tracemalloc) during one more, and the process's peak resident size.
Target: study_report under 1 s at 12 x 100,000.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sqlite3
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.ledger_queries import LABELS, JournalWriter, header
from ledger import Ledger
from ledger.ids import new_run_id

FALLBACK = "(4) LLM output invalid"
BATCH = 500
MODELS = ("llama3.1:8b", "qwen2.5:7b-instruct", "gemma2:9b", "mistral:7b")
PROMPTS = ("short", "terse", "cot")


def plan(cells: int) -> list[tuple[str, str, int]]:
    """(model, prompt, repeat) of each cell: 3 repeats of each model/prompt while there are cells to fill."""
    out = []
    for m in MODELS:
        for p in PROMPTS[:2] if cells <= 12 else PROMPTS:
            for r in (1, 2, 3):
                out.append((m, p, r))
    return out[:cells]


def build(ledger_dir: Path, notes: int, cells: int, name: str = "scale") -> dict[str, str]:
    """The study's journals; returns unit id -> gold label."""
    folder = ledger_dir / "journal"
    folder.mkdir(parents=True)
    rng = random.Random(23)
    truth = [rng.choice(LABELS) for _ in range(notes)]
    gold = {str(i): truth[i] for i in range(notes) if rng.random() < 0.95}
    start = time.time() - 86400
    base: dict[tuple[str, str], list[str]] = {}
    for index, (model, prompt, repeat) in enumerate(plan(cells), start=1):
        accuracy = 0.6 + 0.3 * rng.random()
        answers = base.setdefault((model, prompt), [t if rng.random() < accuracy else rng.choice(LABELS) for t in truth])
        run_id = new_run_id()
        cell = f"{model}/{prompt}/r{repeat}"
        h = header(f"{name}/{cell}", model, notes, start + index * 3600)
        h["study"] = {"name": name, "cell": cell, "model": model, "prompt": prompt, "repeat": repeat, "seed": repeat,
                      "index": index, "cells": cells}
        w = JournalWriter(folder, run_id, start + index * 3600)
        w.write({"type": "header", "header": h})
        valid = 0
        for first in range(0, notes, BATCH):
            chunk = []
            for i in range(first, min(notes, first + BATCH)):
                x = rng.random()
                outcome = "valid" if x < 0.96 else "invalid" if x < 0.99 else "empty"
                label = answers[i] if rng.random() < 0.9 else rng.choice(LABELS)
                answer = {"response": label, "smoker": i % 3 == 0,
                          "explanation": "The note describes findings consistent with the answer given."}
                chunk.append({"id": str(i), "outcome": outcome, "answer": answer if outcome == "valid" else None,
                              "attempts": 1, "latency_ms": round(150 + rng.random() * 200, 1), "tokens_in": 900 + i % 300,
                              "tokens_out": 40, "truncated": False, "error": None, "host": "gpu-n57"})
                valid += outcome == "valid"
            w.write({"type": "batch", "units": chunk}, dt=BATCH / 40)
        counts = {"total": notes, "done": notes, "valid": valid}
        w.write({"type": "close", "status": "completed", "counts": counts, "last_error": None}, dt=0.1)
        w.close()
    return gold


def gold_of(notes: int) -> dict[str, str]:
    """The gold labels build() made (the same seed, the same draws), for --reuse."""
    rng = random.Random(23)
    truth = [rng.choice(LABELS) for _ in range(notes)]
    return {str(i): truth[i] for i in range(notes) if rng.random() < 0.95}


def restore(led: Ledger) -> float:
    """The time the import takes to store what `ledger study` reads of each closed run (ledger.study.store_scan:
    every answer's JSON read once), timed on its own: the rows deleted, then the import that puts them back."""
    conn = sqlite3.connect(led.db_path)
    conn.execute("delete from study_scans")
    conn.execute("delete from study_labels")
    conn.commit()
    conn.close()
    t0 = time.perf_counter()
    led.sync(wait_s=60)
    return time.perf_counter() - t0


def timed(label: str, fn, repeat: int) -> tuple[Any, str]:
    """Best wall and CPU time of `repeat` calls (CPU: this process's, SQLite's included: on a shared machine the
    steadier figure) and the process's peak resident size so far (a high-water mark: the line that raises it is
    the one that needed it)."""
    best = cpu = None
    result = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        took, used = time.perf_counter() - t0, time.process_time() - c0
        best = took if best is None else min(best, took)
        cpu = used if cpu is None else min(cpu, used)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return result, f"{label:<62}{best:7.3f} s {cpu:7.3f} s cpu {rss:6.0f} MB rss"


def python_peak(fn) -> float:
    """The peak of Python's allocations during one call, in MB (SQLite's own memory is not in it; tracemalloc
    slows what it watches and keeps books of its own, so it runs after every timing)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=100_000)
    ap.add_argument("--cells", type=int, default=12)
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap resamples (the command's default)")
    ap.add_argument("--sampler", choices=("auto", "python", "numpy"), default="auto",
                    help="what draws the resamples: numpy when importable (auto), or plain Python")
    ap.add_argument("--repeat", type=int, default=3, help="time each call this many times, print the best")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the ledger (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the ledger afterwards")
    ap.add_argument("--reuse", type=Path, default=None, help="time the study only, on the ledger built in DIR")
    args = ap.parse_args()
    base = args.reuse or args.dir or Path(tempfile.mkdtemp(prefix="study-scale-"))
    ledger_dir = base / "ledger"
    try:
        if args.reuse:
            gold = gold_of(args.notes)
        else:
            t0 = time.perf_counter()
            gold = build(ledger_dir, args.notes, args.cells)
            print(f"{f'write {args.cells} journals x {args.notes:,} notes (no fsync)':<66}"
                  f"{time.perf_counter() - t0:8.3f} s")
            led = Ledger(ledger_dir, auto_sync=False)
            t0 = time.perf_counter()
            led.sync(wait_s=60)
            print(f"{'first import (Ledger.sync)':<66}{time.perf_counter() - t0:8.3f} s")
            print(f"{'  of which the study rows stored (again: what a ledger migrated to m005 pays once)':<66}"
                  f"{restore(led):8.3f} s")
            print(f"{'ledger.db':<66}{(ledger_dir / 'ledger.db').stat().st_size / 1e6:8.0f} MB")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(f"{'peak resident size before the study calls' + ('' if args.reuse else ' (the build)'):<62}"
              f"{rss:7.0f} MB")
        time_study(ledger_dir, gold, args)
    finally:
        if not args.keep and args.dir is None and args.reuse is None:
            shutil.rmtree(base, ignore_errors=True)


def time_study(ledger_dir: Path, gold: dict[str, str], args: argparse.Namespace) -> None:
    from ledger import stability, study

    stability.USE_NUMPY = {"auto": None, "python": False, "numpy": True}[args.sampler]
    led = Ledger(ledger_dir, auto_sync=False)
    size = f"{args.cells} x {args.notes:,}"

    def report(**kw):
        kw.setdefault("reps", args.reps)
        return led.read(lambda db: study.study_report(db, "scale", gold, {"column": "gold"}, "response", **kw), None)

    def notes(offset: int, different: bool):
        return led.read(lambda db: study.study_notes(db, "scale", gold, "response", offset=offset, limit=50,
                                                     different_only=different), None)

    deep = max(0, args.notes - 100)
    calls = [
        (f"study_report {size}, {args.reps} resamples, page of 50", lambda: report(limit=50), args.repeat),
        (f"study_report {size}, no bootstrap, page of 50", lambda: report(limit=50, reps=0), args.repeat),
        (f"study_report {size}, every note a row (limit None)", lambda: report(), 1),
        ("study_notes, first page of 50", lambda: notes(0, False), args.repeat),
        (f"study_notes, page of 50 at {deep:,}", lambda: notes(deep, False), args.repeat),
        ("study_notes, first page of 50 that differ", lambda: notes(0, True), args.repeat),
        (f"study_notes, page of 50 that differ at {deep // 2:,}", lambda: notes(deep // 2, True), args.repeat),
    ]
    print(f"{'bootstrap sampler':<62}{stability.sampler()}")
    report(limit=1, reps=2)  # imports (numpy's among them) are not what is timed; the OS has the file cached after
    lines = []
    for label, fn, repeat in calls:
        result, line = timed(label, fn, repeat)
        lines.append(line)
        if not lines[:-1]:
            lines.append(f"{'  notes / differ / cells / stability groups / pairs':<62}{result['notes_total']:,} / "
                         f"{result['notes_different']:,} / {len(result['cells'])} / {len(result['stability'])} / "
                         f"{len(result['paired'])}")
    print("\n".join(lines))
    print("peak of Python's allocations (tracemalloc), each call once more:")
    for label, fn, _ in calls:
        print(f"  {label:<60}{python_peak(fn):7.1f} MB")


if __name__ == "__main__":
    main()
