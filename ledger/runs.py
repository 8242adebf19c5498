"""A run as the index holds it: its row with the JSON columns decoded, and the summary every listing shows."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from .journal import SUFFIX
from .migrations import COUNT_KEYS
from .reader import Reader
from .status import display_status, duration_s

JSON_COLUMNS = ("hosts", "options", "header", "extra_counts")


def row_counts(row: dict[str, Any]) -> dict[str, Any]:
    counts = {key: row.get(key) for key in COUNT_KEYS}
    if row.get("extra_counts"):
        extra = row["extra_counts"]
        counts.update(json.loads(extra) if isinstance(extra, str) else extra)
    return counts


def run_summary(row: dict[str, Any]) -> dict[str, Any]:
    status = display_status(row)
    return {
        "run_id": row["run_id"],
        "experiment": row["experiment"],
        "model": row["model"],
        "model_digest": row["model_digest"],
        "prompt_hash": row.get("prompt_hash"),
        "study": row.get("study"),
        "status": status,
        "counts": row_counts(row),
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "duration_s": duration_s(row, status),
        "last_error": row["last_error"],
        "hostname": row["hostname"],
        "pid": row["pid"],
    }


def load_run(db: Reader, run_id: str) -> dict[str, Any] | None:
    """Everything recorded about one run (JSON columns decoded), plus status, counts and duration_s."""
    rows = list(db.query("select * from runs where run_id = ?", [run_id]))
    if not rows:
        return None
    run = dict(rows[0])
    for key in JSON_COLUMNS:
        if run.get(key) is not None:
            run[key] = json.loads(run[key])
    run.update(run_summary(rows[0]))
    err = list(db.query("select error from journals where file = ?", [run_id + SUFFIX]))
    run["journal_error"] = err[0]["error"] if err else None
    return run


def safe_host(url: Any) -> str:
    """A server address without any user:password@ part."""
    text = str(url)
    parts = urlsplit(text)
    if parts.hostname and "@" in parts.netloc:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{netloc}"
    return text


class MixedRuns(ValueError):
    """Runs that cannot make one report or eval: other experiments, or another question or model."""

    def __init__(self, a: str, b: str, what: str, va: Any, vb: Any) -> None:
        super().__init__(f"runs {a} and {b} differ in {what} ({va} vs {vb})")
        self.a, self.b, self.what, self.va, self.vb = a, b, what, va, vb


def load_run_set(db: Reader, run_ids: list[str]) -> list[dict[str, Any]]:
    """The runs of one experiment asked the same way by the same model (shards of an array job, an interrupted run
    and its resumption), oldest first; MixedRuns names the first pair that differ."""
    runs = []
    for rid in dict.fromkeys(run_ids):
        run = load_run(db, rid)
        if run is None:
            raise LookupError(rid)
        runs.append(run)
    runs.sort(key=lambda r: (r["started_at"] or "", r["run_id"]))
    first = runs[0]
    for run in runs[1:]:
        for what in ("experiment", "prompt_hash", "model", "model_digest"):
            if run[what] != first[what]:
                raise MixedRuns(first["run_id"], run["run_id"], what.replace("_", " "), first[what], run[what])
    return runs
