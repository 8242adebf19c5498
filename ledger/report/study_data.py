"""What a study report says beyond `ledger.study.study_report`'s figures: how the labels were produced, from the
run headers of the cells (the model and its digest, the seed and options, the exact prompts and their hashes, the
answer schema and retries). `study_methods(db, cells)` takes the report's `cells` and returns plain data; the
study renderers (study_markdown, study_html) lay it out next to the figures.

Everything comes from the index, which never holds note text: a header has the prompt templates (`{note}` is where
each note went), never a filled-in prompt.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from ..chain import head
from ..serverfacts import remote_text, server_rows


def sha256_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def study_methods(db: Any, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """`cells`: study_report(...)["cells"] (each with its run_id, the latest run, and runs, all of them)."""
    run_ids = [r for c in cells for r in c["runs"]]
    rows: dict[str, dict[str, Any]] = {}
    for start in range(0, len(run_ids), 500):  # under SQLite's limit of bound parameters
        chunk = run_ids[start: start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"select run_id, header, started_at, ended_at, last_seen_at from runs "
                            f"where run_id in ({marks})", chunk):
            rows[row["run_id"]] = row
    out_cells = [_cell(c, rows) for c in cells]
    ledger_head = head(db.conn)
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "ledger_head": None if ledger_head is None else {"hash": ledger_head.hash, "entries": ledger_head.entries},
        "cells": out_cells,
        "models": _models(out_cells, rows),
        "prompts": _prompts(out_cells),
        "schemas": _schemas(out_cells),
        "first_started_at": min((c["started_at"] for c in out_cells if c["started_at"]), default=None),
        "last_ended_at": max((c["ended_at"] for c in out_cells if c["ended_at"]), default=None),
    }


def _header(rows: dict[str, dict[str, Any]], run_id: str) -> dict[str, Any]:
    row = rows.get(run_id) or {}
    try:
        header = json.loads(row.get("header") or "{}")
    except ValueError:
        return {}
    return header if isinstance(header, dict) else {}


def _cell(c: dict[str, Any], rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    h = _header(rows, c["run_id"])  # the latest run's: what the cell now is
    options = h.get("options") if isinstance(h.get("options"), dict) else {}
    runs = [rows[r] for r in c["runs"] if r in rows]
    started = [r["started_at"] for r in runs if r.get("started_at")]
    ended = [r.get("ended_at") or r.get("last_seen_at") for r in runs]
    return {
        "cell": c["cell"], "model": c["model"], "prompt": c["prompt"], "repeat": c["repeat"], "seed": c["seed"],
        "run_id": c["run_id"], "runs": len(c["runs"]),
        "model_name": c["model_name"] or h.get("model"), "model_digest": c["model_digest"] or h.get("model_digest"),
        "backend": h.get("backend"), "server_version": h.get("server_version"),
        "options": options, "temperature": options.get("temperature"), "think": h.get("think"),
        "prompt_hash": c["prompt_hash"] or h.get("prompt_hash"),
        "system": h.get("system_prompt"), "user_template": h.get("user_template"),
        "answer_schema": h.get("answer_schema"), "max_attempts": h.get("max_attempts"), "fallback": h.get("fallback"),
        "started_at": min(started, default=None), "ended_at": max((e for e in ended if e), default=None),
    }  # fmt: skip


def _models(cells: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model as the study ran it (name and digest), with what its server said of it: one row per digest, so a
    model pulled again between cells shows twice."""
    out: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        key = (c["model_name"], c["model_digest"])
        if key in out:
            out[key]["cells"].append(c["cell"])
            continue
        h = _header(rows, c["run_id"])
        details = h.get("model_details") if isinstance(h.get("model_details"), dict) else {}
        out[key] = {
            "model": c["model"], "name": c["model_name"], "digest": c["model_digest"], "backend": c["backend"],
            "server_version": c["server_version"], "quantization": details.get("quantization_level"),
            "parameter_size": details.get("parameter_size"), "family": details.get("family"),
            "format": details.get("format"),
            "server": [[label, text] for label, text in server_rows(h) if label not in ("server", "remote")],
            "remote": remote_text(h), "cells": [c["cell"]],
        }  # fmt: skip
    return list(out.values())


def _prompts(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each prompt variant with its exact system prompt and user template, and the prompt hash of each of its seeds
    (the hash covers the system prompt, user template, answer schema and options, the seed among them; not the
    model). A variant whose text changed between cells (the file was edited) shows once per text."""
    out: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        key = (c["prompt"], c["system"], c["user_template"])
        entry = out.setdefault(key, {
            "prompt": c["prompt"], "system": c["system"], "user_template": c["user_template"],
            "system_sha256": sha256_text(c["system"]), "user_template_sha256": sha256_text(c["user_template"]),
            "hashes": {}, "cells": [],
        })
        entry["cells"].append(c["cell"])
        h = entry["hashes"].setdefault(c["prompt_hash"], {"prompt_hash": c["prompt_hash"], "seeds": [], "cells": []})
        if c["seed"] not in h["seeds"]:
            h["seeds"].append(c["seed"])
        h["cells"].append(c["cell"])
    return [entry | {"hashes": list(entry["hashes"].values()), "edited": sum(1 for k in out if k[0] == entry["prompt"]) > 1}
            for entry in out.values()]


def _schemas(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answer schema (sent as the structured-output format), retries and fallback: one entry unless they changed
    between cells."""
    out: dict[str, dict[str, Any]] = {}
    for c in cells:
        key = json.dumps([c["answer_schema"], c["max_attempts"], c["fallback"]], sort_keys=True, default=str)
        entry = out.setdefault(key, {"answer_schema": c["answer_schema"], "max_attempts": c["max_attempts"],
                                     "fallback": c["fallback"], "cells": []})
        entry["cells"].append(c["cell"])
    return list(out.values())
