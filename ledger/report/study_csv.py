"""The study report as CSV: one row per cell with the figures of the cell table, for spreadsheets and R.

The columns are fixed (COLUMNS) whatever the study: figures in full precision, an empty field where a figure is
undefined, true/false for flags. The reference each row was scored against (gold or adjudicated, and how many of
its labels were adjudicated) is on every row."""

from __future__ import annotations

import csv
import io
from typing import Any

CELL_KEYS = ("cell", "model", "prompt", "repeat", "seed", "run_id", "model_name", "model_digest", "prompt_hash", "status",
             "n", "answered", "labels_answered", "valid", "invalid", "empty", "errors", "valid_pct",
             "accuracy", "accuracy_low", "accuracy_high", "macro_f1", "macro_f1_low", "macro_f1_high",
             "kappa", "kappa_low", "kappa_high", "latency_ms", "tokens_in", "tokens_out", "small")  # fmt: skip
COLUMNS = ("study", "field", *CELL_KEYS, "best", "runs", "reference", "reference_labels", "reference_adjudicated",
           "gpu_hours", "invalid_reasons")  # invalid_reasons: "schema 2; thinking 1", commonest first


def _value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value


def study_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    ref = s["reference"]
    return [{"study": s["study"], "field": s["field"], **{k: c.get(k) for k in CELL_KEYS}, "best": c["cell"] == s["best_cell"],
             "runs": " ".join(c["runs"]), "reference": ref.get("kind") or "gold", "reference_labels": ref.get("labels"),
             "reference_adjudicated": ref.get("adjudicated"), "gpu_hours": c.get("gpu_hours"),
             "invalid_reasons": "; ".join(f"{k} {n}" for k, n in (c.get("invalid_reasons") or {}).items())}
            for c in s["cells"]]


def study_to_csv(studies: list[dict[str, Any]]) -> str:
    """A row per cell and reference: against gold and adjudicated, each cell has two rows (column `reference`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([_value(row[k]) for k in COLUMNS] for s in studies for row in study_rows(s))
    return buf.getvalue()
