"""Small facts about the index itself (a key-value table), e.g. why the chain stopped growing."""

from __future__ import annotations

import sqlite3


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("select value from ledger_meta where key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    if value is None:
        conn.execute("delete from ledger_meta where key = ?", (key,))
    else:
        conn.execute("insert or replace into ledger_meta (key, value) values (?, ?)", (key, value))
