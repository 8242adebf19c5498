"""`ledger compare`: how far two or more runs agree, per categorical answer field, on the units both answered.

"Answered" means a valid answer in both runs: an invalid answer has no label in the ledger (its fallback is the
same for every unit, and counting it as agreement would flatter two runs that both failed).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from itertools import combinations
from typing import Any

from .agreement import cohen_kappa, confusion_from_counts
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


def _brief(run: dict[str, Any], values: dict[str, tuple]) -> dict[str, Any]:
    return {
        "run_id": run["run_id"], "experiment": run["experiment"], "model": run["model"],
        "model_digest": run["model_digest"], "prompt_hash": run["prompt_hash"], "status": run["status"],
        "units": len(values), "valid": sum(1 for v in values.values() if v[0] == "valid"),
    }  # fmt: skip


def _pair(fields: list[AnswerField], a: dict[str, tuple], b: dict[str, tuple]) -> dict:
    both = a.keys() & b.keys()
    # set operations, not a Python loop per unit: runs of 100,000 notes are compared in well under a second
    valid = sorted({u for u, v in a.items() if v[0] == "valid"} & {u for u, v in b.items() if v[0] == "valid"})
    out: dict[str, Any] = {
        "units_a": len(a), "units_b": len(b), "in_both": len(both), "valid_in_both": len(valid),
        "only_a": len(a) - len(both), "only_b": len(b) - len(both), "fields": {},
    }  # fmt: skip
    rows = [(uid, a[uid], b[uid]) for uid in valid]
    for k, f in enumerate(fields, start=1):
        labelled = [(uid, x[k], y[k]) for uid, x, y in rows if x[k] is not None and y[k] is not None]
        counts = Counter((x, y) for _, x, y in labelled)
        if f.kind == "bool":  # SQLite hands bools back as 1 and 0
            counts = Counter({(bool(x), bool(y)): n for (x, y), n in counts.items()})
        c = confusion_from_counts(counts, f.labels)
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
