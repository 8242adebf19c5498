"""`ledger study`: the cells of a study (runs tagged with its name) scored against gold labels the caller read from
the source, their stability across repeats, paired tests between cells, and the per-note table.

A cell's label for a note is what its results row holds: a valid answer's label, or for an invalid one the fallback
written in its place (as `ledger eval` scores). A cell run more than once (interrupted, then resumed) counts its
latest answer for each note. Notes a cell never answered are missing in that cell, not wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from typing import Any

from .agreement import accuracy, averages, class_scores, cohen_kappa, confusion
from .answers import AnswerField, answer_fields
from .evaluate import FieldNotScorable, latest_labels
from .reader import Reader
from .stability import bootstrap, fleiss_kappa, krippendorff_alpha, mcnemar, unit_counts, wilson

SMALL_N = 30  # under this many notes every figure comes with a warning
BOOTSTRAP_REPS = 1000
BOOTSTRAP_SEED = 20261206


class StudyNotFound(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known


def study_names(db: Reader) -> list[str]:
    return [r["study"] for r in db.query("select study, max(started_at) as last from runs where study is not null "
                                         "group by study order by last desc")]


def load_cells(db: Reader, name: str) -> list[dict[str, Any]]:
    """The study's cells in their planned order, each with its runs (oldest first)."""
    rows = list(db.query("select run_id, cell, model, model_digest, prompt_hash, status, started_at, header, done, "
                         "valid, invalid, tokens_in, tokens_out from runs where study = ? order by started_at, run_id",
                         [name]))
    if not rows:
        raise StudyNotFound(name, study_names(db))
    cells: dict[str, dict[str, Any]] = {}
    for row in rows:
        header = json.loads(row["header"]) if row["header"] else {}
        info = header.get("study") or {}
        cell = cells.setdefault(row["cell"], {
            "cell": row["cell"], "model": info.get("model"), "prompt": info.get("prompt"), "repeat": info.get("repeat"),
            "seed": info.get("seed"), "index": info.get("index") or 0, "runs": [],
        })
        cell["runs"].append(dict(row) | {"header": None})
        cell["header"] = header  # the latest run's: its answer schema and fallback are what the cell now writes
        cell["run_id"] = row["run_id"]
        cell["model_name"] = row["model"]
        cell["model_digest"] = row["model_digest"]
        cell["prompt_hash"] = row["prompt_hash"]
    return sorted(cells.values(), key=lambda c: (c["index"], c["cell"]))


def scorable_field(cells: list[dict[str, Any]], field: str | None) -> AnswerField:
    header = cells[0]["header"]
    fields = {f.name: f for f in answer_fields(header.get("answer_schema")) if f.categorical}
    if field is None:
        if not fields:
            raise FieldNotScorable("(none)", [])
        field = next(iter(fields))
    if field not in fields:
        raise FieldNotScorable(field, list(fields))
    return fields[field]


def cell_labels(db: Reader, cell: dict[str, Any], spec: AnswerField) -> tuple[dict[str, Any], Counter]:
    """unit id -> label of the cell's latest answer, and how many of its answers were valid / invalid / empty / errors."""
    fallback = (cell["header"].get("fallback") or {}).get(spec.name)
    return latest_labels(db, [r["run_id"] for r in cell["runs"]], spec, fallback)


def study_report(db: Reader, name: str, gold: dict[str, Any], gold_info: dict[str, Any], field: str | None = None,
                 reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED, offset: int = 0, limit: int | None = None,
                 different_only: bool = False) -> dict[str, Any]:
    cells = load_cells(db, name)
    spec = scorable_field(cells, field)
    preferred = list(spec.labels)
    labels: dict[str, dict[str, Any]] = {}
    rows = []
    for cell in cells:
        cell_map, outcomes = cell_labels(db, cell, spec)
        labels[cell["cell"]] = cell_map
        rows.append(_cell_row(db, cell, cell_map, outcomes, gold, preferred, reps, seed))
    best = max((r for r in rows if r["accuracy"] is not None), key=lambda r: (r["accuracy"], r["n"]), default=None)
    units = sorted(set(gold) | {u for m in labels.values() for u in m}, key=_unit_order)
    notes = _note_rows(units, gold, labels, [c["cell"] for c in cells], different_only)
    return {
        "study": name,
        "field": spec.name,
        "labels": preferred,
        "reference": {"kind": "gold", **gold_info, "labels": len(gold), "adjudicated": 0},
        "bootstrap": {"reps": reps, "seed": seed, "over": "notes"},
        "small_n": SMALL_N,
        "cells": rows,
        "best_cell": best["cell"] if best else None,
        "best_confusion": _confusion(best["cell"], labels, gold, preferred) if best else None,
        "stability": _stability(cells, labels, reps, seed),
        "paired": _paired(cells, labels, gold),
        "notes_total": len(notes),
        "notes_different": sum(1 for n in notes if n["different"]),
        "notes": notes[offset: None if limit is None else offset + limit],
        "offset": offset,
    }


def _unit_order(uid: str) -> tuple:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)


def _cell_row(db: Reader, cell: dict[str, Any], cell_map: dict[str, Any], outcomes: Counter, gold: dict[str, Any],
              preferred: list[Any], reps: int, seed: int) -> dict[str, Any]:
    pairs = [(gold[u], label) for u, label in cell_map.items() if u in gold]
    c = confusion(pairs, preferred)
    kappa = cohen_kappa(c)
    acc = accuracy(c)
    acc_low, acc_high = wilson(c.agree, c.n)
    f1 = averages(class_scores(c))["macro"]["f1"] if c.n else None
    f1_low, f1_high = bootstrap(lambda sample: _macro_f1(sample, preferred), pairs, reps, seed)
    run_ids = [r["run_id"] for r in cell["runs"]]
    marks = ",".join("?" * len(run_ids))
    usage = next(iter(db.query(
        f"select avg(latency_ms) as latency_ms, avg(tokens_in) as tokens_in, avg(tokens_out) as tokens_out "
        f"from units where run_id in ({marks}) and outcome in ('valid', 'invalid')", run_ids)))
    answered = outcomes["valid"] + outcomes["invalid"]
    return {
        "cell": cell["cell"], "model": cell["model"], "prompt": cell["prompt"], "repeat": cell["repeat"],
        "seed": cell["seed"], "run_id": cell["run_id"], "runs": run_ids, "model_name": cell["model_name"],
        "model_digest": cell["model_digest"], "prompt_hash": cell["prompt_hash"],
        "status": cell["runs"][-1]["status"],
        "n": c.n, "answered": answered, "labels_answered": len(set(map(_key, cell_map.values()))),
        "valid": outcomes["valid"], "invalid": outcomes["invalid"],
        "empty": outcomes["empty"], "errors": outcomes["error"],
        "valid_pct": 100.0 * outcomes["valid"] / answered if answered else None,
        "accuracy": acc, "accuracy_low": acc_low, "accuracy_high": acc_high,
        "macro_f1": f1, "macro_f1_low": f1_low, "macro_f1_high": f1_high,
        "kappa": kappa.kappa, "kappa_low": kappa.low, "kappa_high": kappa.high,
        "latency_ms": usage["latency_ms"], "tokens_in": usage["tokens_in"], "tokens_out": usage["tokens_out"],
        "small": c.n < SMALL_N,
    }  # fmt: skip


def _macro_f1(pairs: list[tuple[Any, Any]], preferred: list[Any]) -> float | None:
    c = confusion(pairs, preferred)
    return averages(class_scores(c))["macro"]["f1"] if c.n else None


def _confusion(cell: str, labels: dict[str, dict[str, Any]], gold: dict[str, Any], preferred: list[Any]) -> dict:
    c = confusion(((gold[u], lab) for u, lab in labels[cell].items() if u in gold), preferred)
    return {"cell": cell, "labels": list(c.labels), "matrix": [list(r) for r in c.matrix]}  # rows: gold


def _stability(cells: list[dict[str, Any]], labels: dict[str, dict[str, Any]], reps: int, seed: int) -> list[dict]:
    """Per model and prompt with two repeats or more: how often the repeats agree, over the notes they answered."""
    groups: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        groups.setdefault((cell["model"], cell["prompt"]), []).append(cell["cell"])
    out = []
    for (model, prompt), names in groups.items():
        if len(names) < 2:
            continue
        units = sorted({u for n in names for u in labels[n]}, key=_unit_order)
        ratings = [[labels[n].get(u) for n in names] for u in units]
        counts = unit_counts(ratings)
        complete = [c for c in counts if sum(c.values()) == len(names)]
        fk = fleiss_kappa(complete)
        ka = krippendorff_alpha(counts)
        fk_low, fk_high = bootstrap(fleiss_kappa, complete, reps, seed)
        ka_low, ka_high = bootstrap(krippendorff_alpha, counts, reps, seed)
        unanimous = sum(1 for c in complete if len(c) == 1)
        out.append({
            "model": model, "prompt": prompt, "cells": names, "repeats": len(names),
            "n": len(complete), "n_pairable": sum(1 for c in counts if sum(c.values()) >= 2),
            "fleiss_kappa": fk, "fleiss_low": fk_low, "fleiss_high": fk_high,
            "krippendorff_alpha": ka, "alpha_low": ka_low, "alpha_high": ka_high,
            "unanimous": unanimous, "unanimous_pct": 100.0 * unanimous / len(complete) if complete else None,
            "small": len(complete) < SMALL_N,
        })  # fmt: skip
    return out


def _paired(cells: list[dict[str, Any]], labels: dict[str, dict[str, Any]], gold: dict[str, Any]) -> list[dict]:
    """Every pair of the first repeat's cells (the models and prompts side by side), on the notes both answered
    and gold labels: McNemar's test of correct/incorrect, and Cohen's kappa between the two."""
    firsts = [c["cell"] for c in cells if c["repeat"] == 1]
    out = []
    for a, b in combinations(firsts, 2):
        common = [u for u in labels[a] if u in labels[b]]
        with_gold = [u for u in common if u in gold]
        only_a = sum(1 for u in with_gold if labels[a][u] == gold[u] and labels[b][u] != gold[u])
        only_b = sum(1 for u in with_gold if labels[b][u] == gold[u] and labels[a][u] != gold[u])
        k = cohen_kappa(confusion((labels[a][u], labels[b][u]) for u in common))
        out.append({
            "a": a, "b": b, "n": len(with_gold), "n_common": len(common), "only_a_correct": only_a,
            "only_b_correct": only_b, "mcnemar_p": mcnemar(only_a, only_b),
            "agreement": sum(1 for u in common if labels[a][u] == labels[b][u]) / len(common) if common else None,
            "kappa": k.kappa, "kappa_low": k.low, "kappa_high": k.high, "small": len(with_gold) < SMALL_N,
        })  # fmt: skip
    return out


def _note_rows(units: list[str], gold: dict[str, Any], labels: dict[str, dict[str, Any]], names: list[str],
               different_only: bool) -> list[dict[str, Any]]:
    out = []
    for u in units:
        row = {n: labels[n].get(u) for n in names}
        given = [v for v in row.values() if v is not None]
        g = gold.get(u)
        different = len(set(map(_key, given))) > 1 or (g is not None and any(v != g for v in given))
        if different_only and not different:
            continue
        out.append({"unit": u, "gold": g, "labels": row, "different": different})
    return out


def _key(value: Any) -> str:
    return json.dumps(value)
