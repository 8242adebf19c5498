"""Schema of ledger.db as named migrations (the simonw/llm pattern): append new ones, never edit old ones.

Every migration must be safe to re-run (if_not_exists), because sqlite-utils may commit DDL on its own and a crash
between a migration and its bookkeeping row must not wedge the next open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlite-utils costs ~0.1 s to import: a run's closing import must not pay it when nothing is due
    from sqlite_utils import Database

Migration = Callable[["Database"], None]
MIGRATIONS: list[Migration] = []
MIGRATIONS_TABLE = "_ledger_migrations"

COUNT_KEYS = ("total", "done", "valid", "invalid", "retried", "empty", "truncated", "errors", "tokens_in", "tokens_out")


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def up_to_date(conn: sqlite3.Connection) -> bool:
    """Every migration applied already (checked with plain sqlite3, so nothing more is imported)."""
    try:
        applied = {row[0] for row in conn.execute(f"select name from {MIGRATIONS_TABLE}")}
    except sqlite3.OperationalError:  # no migrations table yet
        return False
    return all(fn.__name__ in applied for fn in MIGRATIONS)


def migrate(db: Database) -> None:
    db[MIGRATIONS_TABLE].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
    applied = {row["name"] for row in db.query(f"select name from {MIGRATIONS_TABLE}")}
    for fn in MIGRATIONS:
        if fn.__name__ in applied:
            continue
        fn(db)
        db.execute(
            f"insert or replace into {MIGRATIONS_TABLE} (name, applied_at) values (?, ?)",
            [fn.__name__, datetime.now(UTC).isoformat()],
        )


@migration
def m001_initial(db: Database) -> None:
    db["runs"].create(
        {
            "run_id": str,
            "experiment": str,
            "description": str,
            "model": str,
            "model_digest": str,
            "backend": str,
            "prompt_hash": str,
            "toml_sha256": str,
            "toml_text": str,
            "server_version": str,
            "hosts": str,  # json
            "options": str,  # json
            "tool_version": str,
            "user": str,
            "hostname": str,
            "pid": int,
            "pid_start": int,  # needed to tell a live run from a reused pid
            "slurm_job_id": str,
            "slurm_array_job_id": str,
            "slurm_array_task_id": str,
            "results_table": str,
            "started_at": str,
            "ended_at": str,
            "recorded_status": str,
            **{key: int for key in COUNT_KEYS},
            "extra_counts": str,  # json: count keys the app added later
            "last_error": str,
            "last_seen_at": str,
            "header": str,  # json: the whole header minus toml_text
        },
        pk="run_id",
        if_not_exists=True,
    )
    db["runs"].create_index(["started_at"], if_not_exists=True)
    db["units"].create(
        {
            "run_id": str,
            "unit_id": str,
            "outcome": str,
            "answer": str,  # json
            "attempts": int,
            "latency_ms": float,
            "tokens_in": int,
            "tokens_out": int,
            "truncated": int,
            "error": str,
            "host": str,
        },
        pk=("run_id", "unit_id"),
        if_not_exists=True,
    )
    # No separate run_id index: the primary key's index starts with run_id and serves those lookups, and a
    # second index would slow every one of the millions of unit inserts.
    db["units"].create_index(["outcome"], if_not_exists=True)
    db["journals"].create(
        {"file": str, "run_id": str, "offset": int, "seq": int, "last_hash": str, "error": str},
        pk="file",
        if_not_exists=True,
    )
