"""What a headless run spends of its own: a one-note run against a server answering in 1 ms, whole process, start to
exit (median of N). The interpreter's own start is printed beside it.

    python -m bench.startup [--runs 15]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parent.parent

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    with spawn_standin(latency=0.001) as server:
        db = tmp / "notes.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
        conn.execute("INSERT INTO notes VALUES (1, 'Chest X-ray: no consolidation.')")
        conn.commit()
        exp = tmp / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url]))
        run = [sys.executable, "-m", "app", "--run", str(exp), "--ledger", str(tmp / "led")]
        timed(run, ROOT)  # the first run ever creates ledger.db
        runs = []
        for _ in range(a.runs):
            conn.execute("DROP TABLE IF EXISTS pna_results")
            conn.commit()
            runs.append(timed(run, ROOT))
        conn.close()
        bare = [timed([sys.executable, "-c", "pass"], ROOT) for _ in range(a.runs)]
    print(f"one-note headless run, whole process: median {statistics.median(runs):.3f} s "
          f"(min {min(runs):.3f}, max {max(runs):.3f}, {a.runs} runs); the interpreter alone: median "
          f"{statistics.median(bare):.3f} s; so the run's own: {statistics.median(runs) - statistics.median(bare):.3f} s")


if __name__ == "__main__":
    main()
