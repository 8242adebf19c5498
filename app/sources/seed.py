"""Build a SQLite notes database from a reviewable CSV on first use (the demo workspace ships CSV, not a database)."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path


def _value(text: str) -> int | str:
    return int(text) if text.isdigit() and len(text) < 18 else text


def build_from_csv(db_path: Path, csv_path: Path, table: str) -> int:
    """Create `table` in a new database at db_path from csv_path; returns the number of rows. Atomic: a half-built
    database never appears under db_path."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [[_value(v) for v in row] for row in reader]
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # clinical notes: readable by their owner only, from the first byte (SQLite would create it as the umask says)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(tmp)
    try:
        cols = ", ".join(f'"{c}"' for c in header)
        conn.execute(f'CREATE TABLE "{table}" ({cols})')
        conn.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(header))})', rows)
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, db_path)
    return len(rows)
