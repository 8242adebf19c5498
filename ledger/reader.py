"""What a reader of the index gets: the connection, and sqlite-utils' `query` (rows as dicts) without importing
sqlite-utils, which imports pandas when that is installed (0.3 s added to every command)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any


class Reader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))
