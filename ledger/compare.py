"""`ledger compare`: how far two or more runs agree, per categorical answer field, on the units both answered.

"Answered" means a valid answer in both runs: an invalid answer has no label in the ledger (its fallback is the
same for every unit, and counting it as agreement would flatter two runs that both failed).
"""

from __future__ import annotations

import sqlite3
from itertools import combinations
from typing import Any

from .agreement import cohen_kappa, confusion
from .answers import AnswerField, answer_fields, field_values
from .runs import load_run

DISAGREE_SHOWN = 20  # ids a terminal listing shows per field; JSON has them all


def _fields_in_common(runs: list[dict[str, Any]]) -> list[AnswerField]:
    per_run = [{f.name: f for f in answer_fields((run.get("header") or {}).get("answer_schema")) if f.categorical}
               for run in runs]
    first = per_run[0]
    return [f for name, f in first.items() if all(name in other and other[name].kind == f.kind for other in per_run[1:])]


def compare_runs(db: Any, run_ids: list[str]) -> dict[str, Any]:
    """The comparison of the runs `run_ids` (at least two, resolved ids) as plain data; see format_compare."""
    runs = [load_run(db, rid) for rid in run_ids]
    missing = [rid for rid, run in zip(run_ids, runs) if run is None]
    if missing:
        raise LookupError(missing[0])
    fields = _fields_in_common(runs)  # type: ignore[arg-type]
    conn: sqlite3.Connection = db.conn
    values = [field_values(conn, rid, fields) for rid in run_ids]
    pairs = []
    matrix: dict[str, list[list[float | None]]] = {f.name: [[None] * len(runs) for _ in runs] for f in fields}
    for i, j in combinations(range(len(runs)), 2):
        pair = _pair(fields, values[i], values[j])
        pair.update(a=run_ids[i], b=run_ids[j])
        pairs.append(pair)
        for f in fields:
            k = pair["fields"][f.name]["kappa"]
            matrix[f.name][i][j] = matrix[f.name][j][i] = k
    for f in fields:
        for i in range(len(runs)):
            matrix[f.name][i][i] = 1.0
    return {
        "runs": [_brief(run, vals) for run, vals in zip(runs, values)],  # type: ignore[arg-type]
        "fields": [f.name for f in fields],
        "pairs": pairs,
        "kappa_matrix": matrix,
    }


def _brief(run: dict[str, Any], values: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    return {
        "run_id": run["run_id"], "experiment": run["experiment"], "model": run["model"],
        "model_digest": run["model_digest"], "prompt_hash": run["prompt_hash"], "status": run["status"],
        "units": len(values), "valid": sum(1 for outcome, _ in values.values() if outcome == "valid"),
    }  # fmt: skip


def _pair(fields: list[AnswerField], a: dict[str, tuple[str, list[Any]]], b: dict[str, tuple[str, list[Any]]]) -> dict:
    both = sorted(a.keys() & b.keys())
    valid = [uid for uid in both if a[uid][0] == "valid" and b[uid][0] == "valid"]
    out: dict[str, Any] = {
        "units_a": len(a), "units_b": len(b), "in_both": len(both), "valid_in_both": len(valid),
        "only_a": len(a.keys() - b.keys()), "only_b": len(b.keys() - a.keys()), "fields": {},
    }  # fmt: skip
    for k, f in enumerate(fields):
        labelled = [(uid, a[uid][1][k], b[uid][1][k]) for uid in valid]
        labelled = [(uid, x, y) for uid, x, y in labelled if x is not None and y is not None]
        c = confusion(((x, y) for _, x, y in labelled), f.labels)
        kappa = cohen_kappa(c)
        disagree = [uid for uid, x, y in labelled if x != y]
        out["fields"][f.name] = {
            "n": c.n,
            "agreement": c.agree / c.n if c.n else None,
            "kappa": kappa.kappa, "kappa_se": kappa.se, "kappa_low": kappa.low, "kappa_high": kappa.high,
            "labels": list(c.labels), "matrix": [list(r) for r in c.matrix],
            "disagree_count": len(disagree), "disagree": disagree,
        }  # fmt: skip
    return out
