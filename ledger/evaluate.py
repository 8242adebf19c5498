"""`ledger eval`: one or more runs of an experiment against gold labels the caller read from the source.

The labels come in already mapped to answer values (the app reads them and applies `[evaluation].map`), so this
module needs nothing but the index. What is scored is what the results table holds: a valid answer's label, or for
an invalid one the fallback that was written in its place. Units never answered (empty notes, errors) are counted
apart, as are units the gold standard has no label for.
"""

from __future__ import annotations

from typing import Any

from .agreement import accuracy, averages, class_scores, cohen_kappa, confusion
from .answers import answer_fields, field_values
from .runs import load_run_set

INVALID = "(invalid answer)"  # the label of an invalid answer when the experiment wrote no fallback for the field


class FieldNotScorable(ValueError):
    def __init__(self, field: str, available: list[str]) -> None:
        super().__init__(field)
        self.field = field
        self.available = available


def evaluate_runs(db: Any, run_ids: list[str], gold: dict[str, Any], field: str, gold_info: dict[str, Any]) -> dict:
    """The eval of `field` over the runs (one experiment) against `gold` (unit id -> answer value)."""
    runs = load_run_set(db, run_ids)
    header = runs[0].get("header") or {}
    fields = {f.name: f for f in answer_fields(header.get("answer_schema")) if f.categorical}
    if field not in fields:
        raise FieldNotScorable(field, list(fields))
    spec = fields[field]
    fallback = (header.get("fallback") or {}).get(field)
    predicted: dict[str, Any] = {}
    not_answered = {"empty": 0, "error": 0}
    latest: dict[str, tuple[str, Any]] = {}
    for run in runs:  # oldest first: a later run's answer for the same unit replaces the earlier one
        for uid, (outcome, raw) in field_values(db.conn, run["run_id"], [spec]).items():
            latest[uid] = (outcome, spec.value(raw))
    for uid, (outcome, value) in latest.items():
        if outcome == "valid" and value is not None:
            predicted[uid] = value
        elif outcome == "invalid":
            predicted[uid] = fallback if fallback is not None else INVALID
        else:
            not_answered["error" if outcome == "error" else "empty"] += 1
    scored = [(gold[uid], pred, uid) for uid, pred in predicted.items() if uid in gold]
    preferred = list(spec.labels) + ([fallback] if fallback is not None else [INVALID])
    c = confusion(((g, p) for g, p, _ in scored), preferred)
    kappa = cohen_kappa(c)
    scores = class_scores(c)
    avg = averages(scores)
    return {
        "runs": [r["run_id"] for r in runs],
        "experiment": runs[0]["experiment"],
        "model": runs[0]["model"],
        "field": field,
        "gold": gold_info,
        "units": len(latest),
        "answered": len(predicted),
        "not_answered": not_answered,
        "with_gold": c.n,
        "without_gold": len(predicted) - c.n,
        "gold_labels": len(gold),
        "invalid_answers": sum(1 for uid, (outcome, _) in latest.items() if outcome == "invalid"),
        "accuracy": accuracy(c),
        "kappa": kappa.kappa, "kappa_se": kappa.se, "kappa_low": kappa.low, "kappa_high": kappa.high,
        "labels": list(c.labels),
        "confusion": [list(r) for r in c.matrix],  # rows: gold, columns: the run's answer
        "per_class": [{"label": s.label, "precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                      for s in scores],
        "macro": avg["macro"], "weighted": avg["weighted"],
        "macro_f1": avg["macro"]["f1"], "weighted_f1": avg["weighted"]["f1"],
        "wrong": sorted(uid for g, p, uid in scored if g != p),
    }  # fmt: skip
