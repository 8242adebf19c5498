"""Build a SQLite notes database from a reviewable CSV on first use (the demo workspace ships CSV, not a database).

Each column gets a type: INTEGER when every value in it is an integer written plainly (`5`, `-3`; not `05`, `+5`,
` 5`), TEXT otherwise. So the ids keep the integers they are, and a text id such as `007` keeps its zeros. An empty
cell of an INTEGER column is NULL (no value); of a TEXT column, the empty text it is."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

_INT64 = range(-(2**63), 2**63)  # what an SQLite INTEGER holds


def plain_integer(text: str) -> int | None:
    """The integer `text` writes plainly (str() of it gives the text back, and SQLite can hold it), or None."""
    if not text or len(text) > 20:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if str(value) == text and value in _INT64 else None


def column_types(header: list[str], rows: list[list[str]]) -> list[str]:
    """INTEGER for a column whose non-empty values are all plain integers (and that has one), TEXT otherwise."""
    types = []
    for i in range(len(header)):
        values = [row[i] for row in rows if i < len(row) and row[i] != ""]
        types.append("INTEGER" if values and all(plain_integer(v) is not None for v in values) else "TEXT")
    return types


def _cell(text: str, integer: bool) -> int | str | None:
    if not integer:
        return text
    return plain_integer(text) if text else None


def build_from_csv(db_path: Path, csv_path: Path, table: str) -> int:
    """Create `table` in a new database at db_path from csv_path; returns the number of rows. Atomic: a half-built
    database never appears under db_path."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        texts = list(reader)
    types = column_types(header, texts)
    integer = [t == "INTEGER" for t in types]
    rows = [[_cell(v, i < len(integer) and integer[i]) for i, v in enumerate(row)] for row in texts]
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # clinical notes: readable by their owner only, from the first byte (SQLite would create it as the umask says)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(tmp)
    try:
        cols = ", ".join(f'"{c}" {t}' for c, t in zip(header, types))
        conn.execute(f'CREATE TABLE "{table}" ({cols})')
        conn.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(header))})', rows)
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, db_path)
    return len(rows)
