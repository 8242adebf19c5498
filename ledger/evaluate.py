"""`ledger eval`: one or more runs of an experiment against gold labels the caller read from the source.

The labels come in already mapped to answer values (the app reads them and applies `[evaluation].map`), so this
module needs nothing but the index. What is scored is what the results table holds: a valid answer's label, or for
an invalid one the fallback that was written in its place. Units never answered (empty notes, errors) are counted
apart, as are units the gold standard has no label for.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .agreement import accuracy, averages, class_scores, cohen_kappa, confusion
from .answers import AnswerField, answer_fields, field_values
from .runs import load_run_set

INVALID = "(invalid answer)"  # the label of an invalid answer when the experiment wrote no fallback for the field


class FieldNotScorable(ValueError):
    def __init__(self, field: str, available: list[str]) -> None:
        super().__init__(field)
        self.field = field
        self.available = available


def latest_labels(db: Any, run_ids: list[str], spec: AnswerField, fallback: Any) -> tuple[dict[str, Any], Counter]:
    """unit id -> the label scored for it (a valid answer's, or for an invalid one the fallback written in its
    place), from the latest of the runs (oldest first) that answered it; and how many units ended valid, invalid,
    empty (a valid answer without the field counts here too) or in an error."""
    latest: dict[str, tuple[str, Any]] = {}
    for run_id in run_ids:  # a later run's answer for the same unit replaces the earlier one
        for uid, (outcome, raw) in field_values(db.conn, run_id, [spec]).items():
            latest[uid] = (outcome, spec.value(raw))
    labels: dict[str, Any] = {}
    outcomes: Counter = Counter({"valid": 0, "invalid": 0, "empty": 0, "error": 0})
    for uid, (outcome, value) in latest.items():
        if outcome == "valid" and value is not None:
            labels[uid] = value
            outcomes["valid"] += 1
        elif outcome == "invalid":
            labels[uid] = fallback if fallback is not None else INVALID
            outcomes["invalid"] += 1
        else:
            outcomes["error" if outcome == "error" else "empty"] += 1
    return labels, outcomes


def evaluate_runs(db: Any, run_ids: list[str], gold: dict[str, Any], field: str, gold_info: dict[str, Any]) -> dict:
    """The eval of `field` over the runs (one experiment) against `gold` (unit id -> answer value)."""
    runs = load_run_set(db, run_ids)
    header = runs[0].get("header") or {}
    fields = {f.name: f for f in answer_fields(header.get("answer_schema")) if f.categorical}
    if field not in fields:
        raise FieldNotScorable(field, list(fields))
    spec = fields[field]
    fallback = (header.get("fallback") or {}).get(field)
    predicted, outcomes = latest_labels(db, [r["run_id"] for r in runs], spec, fallback)
    not_answered = {"empty": outcomes["empty"], "error": outcomes["error"]}
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
        "units": sum(outcomes.values()),
        "answered": len(predicted),
        "not_answered": not_answered,
        "with_gold": c.n,
        "without_gold": len(predicted) - c.n,
        "gold_labels": len(gold),
        "invalid_answers": outcomes["invalid"],
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
