"""The report as CSV, one value per row (section, run, name, value), for spreadsheets and R."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .layout import label_text


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    out: list[tuple[str, str, str, Any]] = []
    add = out.append
    h = report.get("ledger_head") or {}
    add(("report", "", "experiment", report["experiment"]["name"]))
    add(("report", "", "description", report["experiment"]["description"]))
    add(("report", "", "generated_at", report["generated_at"]))
    add(("report", "", "ledger_head", h.get("hash", "")))
    add(("report", "", "ledger_entries", h.get("entries", "")))
    for section in ("model", "options", "prompt", "source"):
        for key, value in report[section].items():
            add((section, "", key, value if isinstance(value, (str, int, float)) or value is None else json.dumps(value)))
    for t in report["toml"]:
        add(("toml", ",".join(t["runs"]), "sha256", t["sha256"]))
        add(("toml", ",".join(t["runs"]), "text", t["text"]))
    for r in report["runs"]:
        for key, value in r.items():
            if key == "counts":
                for ck, cv in value.items():
                    add(("run_counts", r["run_id"], ck, cv))
            elif isinstance(value, dict):
                for sk, sv in value.items():
                    add(("run", r["run_id"], f"{key}.{sk}", sv))
            elif key != "run_id":
                add(("run", r["run_id"], key, value))
    for key, value in report["flow"].items():
        if key != "runs_sum":
            add(("flow", "", key, value))
    for key, value in report["throughput"].items():
        add(("throughput", "", key, value))
    for d in report["distributions"]:
        for x in d["labels"]:
            add(("labels", "", f"{d['field']}={label_text(x['label'])}", x["n"]))
        for k, n in d["without_label"].items():
            add(("labels", "", f"{d['field']} without label: {k}", n))
    for key, value in report["latency_ms"].items():
        if key != "histogram":
            add(("latency_ms", "", key, value))
    for e in report["evals"]:
        for key in ("field", "units", "with_gold", "without_gold", "accuracy", "kappa", "kappa_low", "kappa_high",
                    "macro_f1", "weighted_f1"):
            add(("eval", e["eval_id"], key, e[key]))
        for c in e["per_class"]:
            for m in ("precision", "recall", "f1", "support"):
                add(("eval", e["eval_id"], f"{label_text(c['label'])} {m}", c[m]))
    for t in report["tripod"]:
        add(("TRIPOD-LLM", "", t["item"], f"{t['answered_by']}: {t['where']}"))
    return out


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", "run", "name", "value"])
    writer.writerows(rows(report))
    return buf.getvalue()
