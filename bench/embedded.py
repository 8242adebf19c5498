"""The embedded model through notes-tui against the plain llama-cpp-python loop a researcher would write, side by side,
on the first N demo notes (same GGUF, prompt, JSON schema and options).

(a) plain loop, in this process: `Llama(model_path=GGUF, n_ctx=..., seed=..., verbose=False)` loaded once, then one
    `create_chat_completion(..., response_format={"type": "json_object", "schema": schema})` per note, one after the
    other, on the thread that loaded the model. Nothing validated, retried or written.
(b) `notes-tui --run demo.toml --limit N` (as `python -m app`, the same entry point), whole process, on a fresh copy of
    the demo workspace (its SQLite file built from the CSV, every note still to do) with a private ledger.

Printed for each: the whole time and notes/s, the model load (a: the `Llama(...)` call; b: from the process start to
the run journal's header, i.e. interpreter, imports, model load, GGUF digest and database), the notes alone (a: the
loop; b: header to close in the journal), and the model calls and tokens out, so that the work can be compared too:
b retries an invalid answer once, as a run does, so it may make more calls for the same notes. The ratios are b's
speed over a's (notes/s with and without the load, and model calls/s): 1.0 or more means notes-tui costs nothing.
(a) gets llama-cpp-python's default threads (cpu_count // 2 to generate, cpu_count for the prompt), as a script
would. On a machine shared with other work the figures move with its load (printed), so run both more than once.

    python -m bench.embedded                  # N = 12, once
    python -m bench.embedded --notes 51 --repeat 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from app.backends.llamacpp import default_gguf
from app.engine.answer import AnswerSpec
from app.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]

DEMO = ROOT / "experiments" / "demo.toml"


def first_notes(n: int) -> list[str]:
    """The notes a run takes first: the demo CSV in note_id order."""
    with open(ROOT / "experiments" / "data" / "demo_notes.csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["note_id"]))
    return [r["note_text"] for r in rows[:n]]


def plain_loop(n: int) -> dict:
    from llama_cpp import Llama

    spec = load_experiment(DEMO).spec
    o = spec.model.options
    schema = AnswerSpec(spec.answer).schema
    system, template = spec.prompt.system, spec.prompt.user
    notes = first_notes(n)
    t0 = time.perf_counter()
    llm = Llama(model_path=str(default_gguf()), n_ctx=o.num_ctx, seed=o.seed, verbose=False)
    load = time.perf_counter() - t0
    tokens_out = 0
    t1 = time.perf_counter()
    for note in notes:
        out = llm.create_chat_completion(
            messages=[{"role": "system", "content": system},
                      {"role": "user", "content": template.replace("{note}", note)}],
            response_format={"type": "json_object", "schema": schema},
            temperature=o.temperature, top_p=o.top_p if o.top_p is not None else 0.95,
            top_k=o.top_k if o.top_k is not None else 40, max_tokens=o.num_predict, seed=o.seed)
        tokens_out += (out.get("usage") or {}).get("completion_tokens") or 0
    loop = time.perf_counter() - t1
    del llm
    return {"whole": load + loop, "load": load, "notes_s": loop, "done": len(notes), "calls": len(notes),
            "tokens_out": tokens_out}


def _iso(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def notes_tui_run(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        work = Path(tmp) / "experiments"
        shutil.copytree(ROOT / "experiments", work, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
        ledger = Path(tmp) / "ledger"
        cmd = [sys.executable, "-m", "app", "--run", str(work / "demo.toml"), "--limit", str(n),
               "--ledger", str(ledger)]
        env = {**os.environ, "NOTES_TUI_LEDGER": str(ledger)}
        wall0 = time.time()
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        whole = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}")
        records = [json.loads(line) for path in sorted((ledger / "journal").glob("*.jsonl"))
                   for line in path.read_text().splitlines() if line.strip()]
        header = next(r for r in records if r["type"] == "header")
        close = next(r for r in records if r["type"] == "close")
        units = [u for r in records if r["type"] == "batch" for u in r["units"]]
        conn = sqlite3.connect(work / "data" / "demo.db")
        calls = conn.execute("SELECT COALESCE(SUM(attempts), 0) FROM demo_results").fetchone()[0]
        conn.close()
    return {"whole": whole, "load": _iso(header["t"]) - wall0, "notes_s": _iso(close["t"]) - _iso(header["t"]),
            "done": len(units), "calls": calls, "tokens_out": sum(u.get("tokens_out") or 0 for u in units)}


def line(label: str, r: dict, load: str) -> str:
    return (f"{label}: {r['done']:g} notes in {r['whole']:.2f} s = {r['done'] / r['whole']:.3f} notes/s; {load} "
            f"{r['load']:.2f} s; notes alone {r['notes_s']:.2f} s = {r['done'] / r['notes_s']:.3f} notes/s "
            f"({r['calls']:g} calls, {r['tokens_out']:g} tokens out)")


A = ("(a) plain llama-cpp-python loop", "model load")
B = ("(b) notes-tui --run, whole process", "start-up with model load")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=int, default=12)
    p.add_argument("--repeat", type=int, default=1, help="run both this many times, alternating; medians printed")
    a = p.parse_args()
    print(f"SmolLM2-135M-Instruct ({default_gguf().name}), first {a.notes} demo notes, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    plain: list[dict] = []
    tui: list[dict] = []
    for i in range(a.repeat):
        plain.append(plain_loop(a.notes))
        print(f"  [{i + 1}] " + line(A[0], plain[-1], A[1]), flush=True)
        tui.append(notes_tui_run(a.notes))
        print(f"  [{i + 1}] " + line(B[0], tui[-1], B[1]), flush=True)

    def med(rs: list[dict]) -> dict:
        return {k: statistics.median(r[k] for r in rs) for k in rs[0]}

    pa, tb = med(plain), med(tui)
    what = "median of " + str(a.repeat) if a.repeat > 1 else "one run"
    print(f"\n{what}:")
    print(line(A[0], pa, A[1]))
    print(line(B[0], tb, B[1]))
    print(f"ratio b/a, notes/s, load included: {(tb['done'] / tb['whole']) / (pa['done'] / pa['whole']):.2f}x")
    print(f"ratio b/a, notes/s, notes alone:   {(tb['done'] / tb['notes_s']) / (pa['done'] / pa['notes_s']):.2f}x")
    if tb["calls"] != pa["calls"]:  # b retried an invalid answer: more work for the same notes
        print(f"ratio b/a, model calls/s, notes alone: {(tb['calls'] / tb['notes_s']) / (pa['calls'] / pa['notes_s']):.2f}x "
              f"(b made {tb['calls']:g} calls for {tb['done']:g} notes, {tb['tokens_out']:g} tokens out; a "
              f"{pa['calls']:g}, {pa['tokens_out']:g})")


if __name__ == "__main__":
    main()
