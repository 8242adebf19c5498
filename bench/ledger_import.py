"""How long the ledger takes to import 200 journals x 1,000 units (batches of 100, a checkpoint after each).

    python -m bench.ledger_import [--journals 200] [--units 1000] [--dir DIR]

Not a test: prints timings for a first import, a no-op sync, a rebuild and a listing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ledger import Journal, Ledger


def unit(i: int) -> dict:
    return {
        "id": f"note-{i:07d}",
        "outcome": ("valid", "valid", "valid", "invalid", "empty", "error")[i % 6],
        "answer": {"smoker": i % 2 == 0, "pack_years": i % 40, "label": "current"},
        "attempts": 1 + (i % 7 == 0),
        "latency_ms": 180.0 + i % 50,
        "tokens_in": 900 + i % 300,
        "tokens_out": 24,
        "truncated": i % 97 == 0,
        "error": "timeout" if i % 6 == 5 else None,
        "host": "gpu07",
    }


def write_journals(ledger_dir: Path, journals: int, units: int, batch: int = 100) -> None:
    header = {
        "experiment": "bench",
        "model": "llama3.2:3b",
        "hostname": "node001",
        "pid": 1,
        "total": units,
        "toml_text": "x" * 2000,
        "slurm": {"job_id": "1"},
    }
    for _ in range(journals):
        journal = Journal.create(ledger_dir, header)
        for start in range(0, units, batch):
            journal.append_units([unit(i) for i in range(start, min(units, start + batch))])
            done = min(units, start + batch)
            journal.checkpoint({"total": units, "done": done, "valid": done // 2})
        journal.close("completed", {"total": units, "done": units, "valid": units // 2})


def timed(label: str, fn) -> object:
    t0 = time.perf_counter()
    result = fn()
    print(f"{label:<44}{time.perf_counter() - t0:8.3f} s")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--journals", type=int, default=200)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the ledger (default: a temp dir)")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    ledger_dir = base / "ledger"
    n_units = args.journals * args.units
    print(f"{args.journals} journals x {args.units} units = {n_units:,} units in {ledger_dir}")
    timed("write journals (fsync per record)", lambda: write_journals(ledger_dir, args.journals, args.units))
    size = sum(p.stat().st_size for p in (ledger_dir / "journal").iterdir())
    print(f"{'journal bytes':<44}{size / 1e6:8.1f} MB")
    led = Ledger(ledger_dir, auto_sync=False)
    timed("first import: sync()", led.sync)
    timed("no-op sync() (nothing changed)", led.sync)
    timed("rebuild()", led.rebuild)
    runs = timed("list_runs() without sync", led.list_runs)
    assert len(runs) == args.journals, len(runs)  # type: ignore[arg-type]
    units = timed("units(run_id) of one run", lambda: led.units(runs[0]["run_id"]))  # type: ignore[index]
    assert len(units) == args.units  # type: ignore[arg-type]
    print(f"{'ledger.db':<44}{os.path.getsize(ledger_dir / 'ledger.db') / 1e6:8.1f} MB")


if __name__ == "__main__":
    main()
