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


@migration
def m002_audit(db: Database) -> None:
    """What the audit commands need: status in SQL, the model's quantization and size, the timeline of each run,
    the chain that seals finished runs, eval results, and views for the common questions."""
    runs = db["runs"]
    for column in ("status", "quantization", "parameter_size", "shard"):
        if column not in runs.columns_dict:
            runs.add_column(column, str)
    # Rows imported before this migration: what their header and recorded status already say. Running rows get
    # their live status at the end of the next import (see Ledger._after_import).
    db.execute("update runs set status = recorded_status where status is null")
    db.execute(
        "update runs set quantization = json_extract(header, '$.model_details.quantization_level'),"
        " parameter_size = json_extract(header, '$.model_details.parameter_size') where quantization is null"
    )
    db.execute(
        "update runs set shard = json_extract(header, '$.shard.index') || '/' || json_extract(header, '$.shard.count')"
        " where shard is null and json_extract(header, '$.shard.count') is not null"
    )
    runs.create_index(["recorded_status"], if_not_exists=True)
    runs.create_index(["experiment", "started_at"], if_not_exists=True)
    # One row per batch (units committed) and per checkpoint or close (done so far): throughput over time.
    db["timeline"].create(
        {"run_id": str, "seq": int, "t": str, "units": int, "done": int}, pk=("run_id", "seq"), if_not_exists=True
    )
    db["chain"].create(
        {"seq": int, "kind": str, "id": str, "records": int, "head": str, "t": str, "line_hash": str, "end_offset": int},
        pk="seq",
        if_not_exists=True,
    )
    db["chain"].create_index(["kind", "id"], unique=True, if_not_exists=True)
    db["evals"].create(
        {
            "eval_id": str,
            "runs": str,  # json list of run ids
            "experiment": str,
            "field": str,
            "created_at": str,
            "gold": str,  # json: where the gold labels came from
            "units": int,
            "with_gold": int,
            "without_gold": int,
            "accuracy": float,
            "kappa": float,
            "kappa_low": float,
            "kappa_high": float,
            "macro_f1": float,
            "weighted_f1": float,
            "result": str,  # json: the whole eval
            "line_hash": str,  # sha256 of its journal line, what the chain seals
        },
        pk="eval_id",
        if_not_exists=True,
    )
    db["ledger_meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    for name, sql in VIEWS.items():
        db.create_view(name, sql, replace=True)


@migration
def m003_study(db: Database) -> None:
    """Runs that are cells of a study: the study's name and the cell (MODEL/PROMPT/rN), for `ledger study`."""
    runs = db["runs"]
    for column in ("study", "cell"):
        if column not in runs.columns_dict:
            runs.add_column(column, str)
    db.execute(
        "update runs set study = json_extract(header, '$.study.name'), cell = json_extract(header, '$.study.cell')"
        " where study is null and json_extract(header, '$.study.name') is not null"
    )
    runs.create_index(["study", "started_at"], if_not_exists=True)


@migration
def m004_adjudications(db: Database) -> None:
    """The adjudications journal in SQL (see ledger.adjudication): one row per decision, in the file's order."""
    db["adjudications"].create(
        {"seq": int, "t": str, "who": str, "scope": str, "field": str, "unit": str, "label": str, "replaces": str,
         "replaces_kind": str, "comment": str, "line_hash": str, "end_offset": int},
        pk="seq",
        if_not_exists=True,
    )
    db["adjudications"].create_index(["scope", "field", "unit"], if_not_exists=True)


@migration
def m005_study_scans(db: Database) -> None:
    """What `ledger study` reads of a closed run that is a cell of a study, worked out once when it is imported
    (ledger.study.store_scan) instead of on every `ledger study`: `study_scans`, one row a run (its unit ids joined,
    the sums of its latency and tokens, and `seq`, the journal line it was worked out at: a row whose seq is not its
    journal's is not read), and `study_labels`, one row a run and categorical answer field (a character a unit). The
    importer fills both for the runs that lack them (so an index migrated here gets them on its next sync)."""
    db["study_scans"].create(
        {"run_id": str, "seq": int, "units": int, "ids": str,
         **{f"{c}_{s}": (float if s == "total" else int) for c in ("latency_ms", "tokens_in", "tokens_out")
            for s in ("total", "count")}},
        pk="run_id",
        if_not_exists=True,
    )
    db["study_labels"].create(
        {"run_id": str, "field": str, "labels": str, "chars": str}, pk=("run_id", "field"), if_not_exists=True
    )


VIEWS = {
    # One row per run with the figures people ask for first.
    "run_overview": """
        select run_id, experiment, status, model, model_digest, quantization, parameter_size, backend, prompt_hash,
               total, done, valid, invalid, retried, empty, truncated, errors, tokens_in, tokens_out,
               round(100.0 * valid / nullif(done, 0), 1) as valid_pct,
               user, hostname, slurm_job_id, slurm_array_job_id, slurm_array_task_id, shard,
               started_at, ended_at,
               round((julianday(coalesce(ended_at, last_seen_at)) - julianday(started_at)) * 86400, 3) as duration_s
        from runs""",
    "runs_per_experiment": """
        select experiment, count(*) as runs,
               sum(status = 'completed') as completed, sum(status = 'interrupted') as interrupted,
               sum(status = 'failed') as failed, sum(status = 'crashed') as crashed, sum(status = 'running') as running,
               sum(done) as done, sum(valid) as valid, sum(invalid) as invalid,
               count(distinct model) as models, count(distinct prompt_hash) as prompts,
               min(started_at) as first_started, max(started_at) as last_started
        from runs group by experiment""",
    # Labels of the valid answers (choice and bool fields; numbers are not labels). Invalid answers carry no label
    # in the ledger: count them with outcome_counts.
    "label_counts": """
        select u.run_id, r.experiment, j.key as field,
               case j.type when 'true' then 'true' when 'false' then 'false' else j.value end as label,
               count(*) as n
        from units u join runs r on r.run_id = u.run_id, json_each(u.answer) j
        where u.answer is not null and j.type in ('text', 'true', 'false')
        group by u.run_id, j.key, label""",
    "outcome_counts": """
        select run_id, outcome, count(*) as n, sum(truncated) as truncated, sum(attempts > 1) as retried
        from units group by run_id, outcome""",
    "eval_results": """
        select e.eval_id, e.experiment, e.runs, e.field, e.created_at, e.units, e.with_gold, e.without_gold,
               e.accuracy, e.kappa, e.kappa_low, e.kappa_high, e.macro_f1, e.weighted_f1,
               (select group_concat(distinct r.model) from runs r, json_each(e.runs) j where r.run_id = j.value) as models
        from evals e""",
}
