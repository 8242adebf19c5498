"""How fast the audit commands answer on a big ledger: 10,000 runs and 2,000,000 unit outcomes.

    python -m bench.ledger_queries [--dir DIR] [--keep] [--scale 1.0]
    python -m bench.ledger_queries --reuse DIR      # the queries again, on a ledger an earlier --dir DIR built

The ledger holds what a busy group's years look like: 9,988 small runs (~170 notes each) over 50 experiments, one
study of 100,000 notes run as a 10-task array (10 shards of 10,000), and the same 100,000 notes answered by two
models in one run each (llama3 against llama3.1, the pair to compare). Journals are written in the journal format
directly (no fsync per record: the bench times the index, not the disk).

Prints, not asserts: the first import, a rebuild, and `ledger list`, `report` and `compare` both as the function
calls the TUI will make and as the whole command (a new Python process, imports and one incremental import of the
index included). Target for list, report and compare: under 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger import Ledger
from ledger.ids import new_run_id
from ledger.journal import encode_record, line_hash

ROOT = Path(__file__).resolve().parents[1]

LABELS = ("(1) Likely", "(2) Unlikely", "(3) Unable to say")
SCHEMA = {"type": "object", "properties": {"response": {"enum": list(LABELS), "type": "string"},
                                            "smoker": {"type": "boolean"}, "explanation": {"type": "string"}}}
BATCH = 100
TOML = 'name = "x"\n' + "# an experiment file of typical length\n" * 60


class JournalWriter:
    """The bytes Journal writes, without its fsync per record."""

    def __init__(self, folder: Path, run_id: str, start: float):
        self.f = open(folder / f"{run_id}.jsonl", "wb")  # noqa: SIM115 - closed in close()
        self.run_id, self.seq, self.prev, self.t = run_id, 0, None, start

    def write(self, body: dict, dt: float = 0.0) -> None:
        self.t += dt
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.t)) + f".{int(self.t * 1000) % 1000:03d}Z"
        rec = {"type": body.pop("type"), "seq": self.seq, "prev": self.prev, "t": stamp, "run": self.run_id, **body}
        line = encode_record(rec)
        self.f.write(line + b"\n")
        self.seq, self.prev = self.seq + 1, line_hash(line)

    def close(self) -> None:
        self.f.close()


def header(experiment: str, model: str, total: int, start: float, task: int | None = None) -> dict:
    return {
        "experiment": experiment, "description": "bench", "toml_text": TOML, "toml_sha256": "ab" * 32,
        "toml_path": f"/home/u/experiments/{experiment}.toml", "prompt_hash": "cd" * 32,
        "system_prompt": "You are a medical analysis assistant.", "user_template": "Note: {note}",
        "answer_schema": SCHEMA, "max_attempts": 2, "fallback": {"response": "(4) LLM output invalid"},
        "backend": "ollama", "model": model, "model_digest": "sha256:" + "ef" * 32,
        "model_details": {"quantization_level": "Q4_0", "parameter_size": "8.0B", "family": "llama"},
        "server_version": "0.11.10", "hosts": ["http://gpu-n57:48362"], "options": {"temperature": 0.0, "seed": 0},
        "tool_version": "0.1.0", "user": "alice", "hostname": "gpu-n57", "pid": 1, "pid_start": 1,
        "slurm": {"job_id": "4242", **({"array_job_id": "4240", "array_task_id": str(task)} if task is not None else {})},
        "total": total, "source": {"kind": "mysql", "table": "notes"}, "results_table": "results",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start)),
    }


def unit(i: int, rng: random.Random, label: str) -> dict:
    outcome = "valid" if rng.random() < 0.97 else ("invalid" if rng.random() < 0.7 else "empty")
    answer = {"response": label, "smoker": i % 3 == 0} if outcome == "valid" else {}
    return {"id": f"{i:07d}", "outcome": outcome, "answer": answer, "attempts": 1 + (rng.random() < 0.03),
            "latency_ms": round(150 + rng.random() * 200, 1), "tokens_in": 900 + i % 300, "tokens_out": 24,
            "truncated": i % 211 == 0, "error": None, "host": "gpu-n57"}


def write_run(folder: Path, experiment: str, model: str, ids: range, start: float, rng: random.Random,
              labels: dict[int, str] | None = None, task: int | None = None) -> str:
    run_id = new_run_id()
    w = JournalWriter(folder, run_id, start)
    w.write({"type": "header", "header": header(experiment, model, len(ids), start, task)})
    done = valid = 0
    ids = list(ids)
    for b, first in enumerate(range(0, len(ids), BATCH)):
        chunk = [unit(i, rng, labels[i] if labels else rng.choice(LABELS)) for i in ids[first:first + BATCH]]
        done += len(chunk)
        valid += sum(u["outcome"] == "valid" for u in chunk)
        w.write({"type": "batch", "units": chunk}, dt=BATCH / 40)
        if b % 5 == 4:
            w.write({"type": "checkpoint", "counts": {"total": len(ids), "done": done, "valid": valid}})
    w.write({"type": "close", "status": "completed", "counts": {"total": len(ids), "done": done, "valid": valid},
             "last_error": None}, dt=0.1)
    w.close()
    return run_id


def build(ledger_dir: Path, scale: float) -> dict[str, object]:
    folder = ledger_dir / "journal"
    folder.mkdir(parents=True)
    rng = random.Random(7)
    start = time.time() - 3 * 365 * 86400
    big = int(100_000 * scale)
    truth = {i: rng.choice(LABELS) for i in range(big)}
    drift = {i: (v if rng.random() < 0.8 else rng.choice(LABELS)) for i, v in truth.items()}
    pair = [write_run(folder, "pna-big", "llama3:latest", range(big), start, rng, truth),
            write_run(folder, "pna-big-31", "llama3.1:8b", range(big), start + 7200, rng, drift)]
    shard = big // 10
    shards = [write_run(folder, "ards-array", "llama3:latest", range(t * shard, (t + 1) * shard), start + 9000 + t, rng,
                        task=t) for t in range(10)]
    small_runs = int(9_988 * scale)
    small_units = int(1_700_000 * scale)
    small = []
    for r in range(small_runs):
        n = small_units // small_runs + (r < small_units % small_runs)
        small.append(write_run(folder, f"exp-{r % 50:02d}", ("llama3:latest", "qwen2.5:7b")[r % 2], range(n),
                               start + 20000 + r * 9000, rng))
    return {"pair": pair, "shards": shards, "small": small}


def timed(label: str, fn, repeat: int = 1):
    best, result = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        took = time.perf_counter() - t0
        best = took if best is None else min(best, took)
    print(f"{label:<64}{best:8.3f} s")
    return result


def command(label: str, ledger_dir: Path, *args: str) -> None:
    """The whole command as a user types it: a new process, stdout to /dev/null; best of 3."""
    env = dict(os.environ, NOTES_TUI_LEDGER=str(ledger_dir))

    def run():
        res = subprocess.run([sys.executable, "-m", "app", "ledger", *args], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert res.returncode == 0, res.stderr

    timed(label, run, repeat=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=None, help="where to build the ledger (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the ledger afterwards")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full size, for a quick look")
    ap.add_argument("--reuse", type=Path, default=None, help="time the queries only, on the ledger built in DIR")
    args = ap.parse_args()
    base = args.reuse or args.dir or Path(tempfile.mkdtemp(prefix="ledger-queries-"))
    ledger_dir = base / "ledger"
    try:
        if args.reuse:
            runs = runs_of(ledger_dir)
        else:
            runs = timed("write 10,000 journals, 2,000,000 units (no fsync)", lambda: build(ledger_dir, args.scale))
            size = sum(p.stat().st_size for p in (ledger_dir / "journal").iterdir())
            n_runs = len(runs["small"]) + 12  # type: ignore[arg-type]
            print(f"{'runs / journal bytes':<64}{n_runs:>8,} / {size / 1e6:.0f} MB")
            led = Ledger(ledger_dir, auto_sync=False)
            timed("first import (sync: runs, units, timeline, chain of seals)", led.sync)
            timed("rebuild", led.rebuild)
            print(f"{'ledger.db':<64}{(ledger_dir / 'ledger.db').stat().st_size / 1e6:8.0f} MB")
        timed("no-op sync (nothing new; every read does one)", Ledger(ledger_dir).sync, repeat=3)
        run_functions(ledger_dir, runs)
        pair, shards, small = runs["pair"], runs["shards"], runs["small"]  # type: ignore[misc]
        command("command: ledger list (all 10,000 runs)", ledger_dir, "list")
        command("command: ledger list --json", ledger_dir, "list", "--json")
        command("command: ledger report SMALL (md)", ledger_dir, "report", small[-1])
        command("command: ledger report 10 SHARDS of 10,000 (md)", ledger_dir, "report", *shards)
        command("command: ledger report 10 SHARDS of 10,000 (html)", ledger_dir, "report", *shards, "--format", "html")
        command("command: ledger compare 100,000 vs 100,000", ledger_dir, "compare", *pair)
        command("command: ledger compare 3 small runs", ledger_dir, "compare", *small[:3])
        command("command: ledger show SMALL", ledger_dir, "show", small[0][:10])
        timed("command: ledger verify (reads every journal)", lambda: command_once(ledger_dir, "verify"))
    finally:
        if not args.keep and args.dir is None and args.reuse is None:
            shutil.rmtree(base, ignore_errors=True)


def runs_of(ledger_dir: Path) -> dict[str, list[str]]:
    import sqlite3

    conn = sqlite3.connect(ledger_dir / "ledger.db")
    try:
        ids = lambda where: [r[0] for r in conn.execute(f"select run_id from runs where {where} order by run_id")]  # noqa: E731
        return {"pair": ids("experiment like 'pna-big%'"), "shards": ids("experiment = 'ards-array'"),
                "small": ids("experiment like 'exp-%'")}
    finally:
        conn.close()


def command_once(ledger_dir: Path, *args: str) -> None:
    env = dict(os.environ, NOTES_TUI_LEDGER=str(ledger_dir))
    subprocess.run([sys.executable, "-m", "app", "ledger", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                   check=True)


def run_functions(ledger_dir: Path, runs: dict) -> None:
    """What the TUI's Ledger screen will call, on an index that is up to date."""
    from ledger.compare import compare_runs
    from ledger.evaluate import evaluate_runs
    from ledger.report import render
    from ledger.report.data import build_report
    from ledger.report.terminal import format_runs_table

    led = Ledger(ledger_dir)
    timed("list_runs() + table (10,000 rows)", lambda: format_runs_table(led.list_runs()), repeat=3)
    timed("report data + md, one small run", lambda: render(led.read(lambda db: build_report(db, runs["small"][-1:]),
                                                                     None), "md"), repeat=3)
    timed("report data + html, 10 shards x 10,000", lambda: render(led.read(lambda db: build_report(db, runs["shards"]),
                                                                            None), "html"), repeat=3)
    timed("compare_runs(), 100,000 vs 100,000", lambda: led.read(lambda db: compare_runs(db, runs["pair"]), None), repeat=3)
    gold = {f"{i:07d}": LABELS[i % 3] for i in range(0, 100_000, 2)}
    timed("evaluate_runs(), 10 shards against 50,000 gold labels",
          lambda: led.read(lambda db: evaluate_runs(db, runs["shards"], gold, "response", {"column": "g"}), None),
          repeat=3)


if __name__ == "__main__":
    main()
