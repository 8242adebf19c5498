"""Gold labels: reading them from the experiment's source as its `[evaluation]` section says, and scoring answers
against them — for `ledger eval` (whole runs, stored in the ledger) and for `try` (a handful of notes).

The ledger package computes the statistics; this module is the part that needs the app: the experiment file, the
source database and the answer fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.errors import UserError
from app.experiment import Experiment
from app.experiment.rules import EVALUATION_KEYS, check_evaluation
from app.experiment.schema import EvaluationSection
from app.sources import Source, open_source
from app.sources.base import unit_uid

OVERRIDE_KEYS = {"gold_column": "--gold-column", "gold_query": "--gold-query", "map": "--map", "field": "--field"}
SHOWN_VALUES = 5


def parse_map_items(items: Sequence[str]) -> dict[str, str]:
    """`--map GOLD=ANSWER`, repeatable; split at the first =, so answers may contain = themselves."""
    out = {}
    for item in items:
        gold, sep, answer = item.partition("=")
        if not sep:
            raise UserError(f"--map {item!r}: expected GOLD=ANSWER — e.g. --map 'yes=(1) Likely'")
        out[gold.strip()] = answer.strip()
    return out


def evaluation_for(exp: Experiment, *, gold_column: str | None = None, gold_query: str | None = None,
                   map_items: Sequence[str] = (), field: str | None = None) -> EvaluationSection:
    """The experiment's [evaluation], with what the command line overrides; UserError when there is none."""
    base = exp.spec.evaluation
    overrides: dict[str, Any] = {}
    if gold_column is not None or gold_query is not None:
        overrides.update(gold_column=gold_column, gold_query=gold_query)
    if map_items:
        overrides["map"] = parse_map_items(map_items)
    if field is not None:
        overrides["field"] = field
    if base is None and not overrides.get("gold_column") and not overrides.get("gold_query"):
        raise UserError(f"{exp.path}: the experiment has no [evaluation] section — add one (gold_column = \"…\" or "
                        "gold_query = \"SELECT …\", and map) or pass --gold-column COLUMN / --gold-query SQL")
    if not overrides:
        return base  # type: ignore[return-value]
    merged = (base or EvaluationSection()).model_copy(update=overrides)
    keys = {k: OVERRIDE_KEYS[k] if k in overrides else EVALUATION_KEYS[k] for k in EVALUATION_KEYS}
    if "map" in overrides:
        # the command line gives text: true/false for a bool field
        name = check_evaluation(exp.path, exp.spec, merged.model_copy(update={"map": {}}), keys).field
        if exp.spec.answer.fields[name].type == "bool":  # type: ignore[index]
            merged = merged.model_copy(update={"map": {k: _bool_text(v) for k, v in merged.map.items()}})
    return check_evaluation(exp.path, exp.spec, merged, keys)


def _bool_text(value: Any) -> Any:
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text, value)


def gold_text(value: Any) -> str | None:
    """A gold value as the text map keys are written in; None for no label (NULL, empty)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _answer_values(exp: Experiment, ev: EvaluationSection) -> dict[str, Any]:
    """Gold text that stands for itself: the field's choices, or true/false (and 1/0) for a bool field."""
    fld = exp.spec.answer.fields[ev.field]  # type: ignore[index]
    if fld.type == "bool":
        return {"true": True, "false": False, "1": True, "0": False}
    return {c: c for c in fld.choices or []}


def _gold_sql(source: Source, exp: Experiment, ev: EvaluationSection) -> str:
    keys = source.key_columns
    if ev.gold_column is not None:
        have = source.column_names(f"SELECT * FROM {source.from_sql()} LIMIT 0")
        if ev.gold_column.lower() not in {c.lower() for c in have}:
            raise UserError(f"{exp.path}: evaluation.gold_column: the source has no column {ev.gold_column!r} (it has "
                            f"{', '.join(have)}) — name a column of {exp.spec.source.table or 'the query'}, or use "
                            "gold_query")
        cols = ", ".join(source.q(c) for c in keys + [ev.gold_column])
        sql = f"SELECT {cols} FROM {source.from_sql()}"
        return sql + (f" WHERE ({exp.spec.source.where})" if exp.spec.source.where else "")
    query = ev.gold_query.strip().rstrip(";")  # type: ignore[union-attr]
    have = source.column_names(f"SELECT * FROM ({query}) gold_q LIMIT 0")
    lower = {c.lower(): c for c in have}
    missing = [k for k in keys if k.lower() not in lower]
    labels = [c for c in have if c.lower() not in {k.lower() for k in keys}]
    if missing or len(labels) != 1:
        problem = (f"it returns no column {missing[0]!r}" if missing else
                   f"it returns {len(labels)} columns besides the id columns ({', '.join(labels) or 'none'})")
        raise UserError(f"{exp.path}: evaluation.gold_query: {problem} — return the id columns "
                        f"({', '.join(keys)}) and one label column")
    cols = ", ".join(source.q(lower[k.lower()]) for k in keys) + ", " + source.q(labels[0])
    return f"SELECT {cols} FROM ({query}) gold_q"


def read_gold(exp: Experiment, ev: EvaluationSection) -> dict[str, Any]:
    """unit id -> the answer value its gold label stands for (units without a label are left out). A gold value that
    is neither in `map` nor an answer value is the user's to fix: one UserError naming it."""
    source = open_source(exp)
    try:
        rows = source.fetch_all(_gold_sql(source, exp, ev))
    finally:
        source.close()
    direct = _answer_values(exp, ev)
    n = len(source.key_columns)
    gold: dict[str, Any] = {}
    unknown: dict[str, int] = {}
    for row in rows:
        text = gold_text(row[n])
        if text is None or any(k is None for k in row[:n]):
            continue
        if text in ev.map:
            value = ev.map[text]
        elif text in direct or text.lower() in direct:
            value = direct.get(text, direct.get(text.lower()))
        else:
            unknown[text] = unknown.get(text, 0) + 1
            continue
        gold.setdefault(unit_uid(tuple(row[:n])), value)  # a duplicated id: its first note, as the run answered it
    if unknown:
        worst = sorted(unknown.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{v!r} ({c} units)" for v, c in worst[:SHOWN_VALUES])
        allowed = ", ".join(str(v) for v in dict.fromkeys(direct.values()))
        raise UserError(f"{exp.path}: evaluation.map: gold values {shown} are neither answer values of {ev.field} nor "
                        f"in map — add them to [evaluation].map (e.g. map = {{\"{worst[0][0]}\" = \"…\"}}), "
                        f"answer values: {allowed}")
    return gold


def gold_info(ev: EvaluationSection) -> dict[str, Any]:
    """What the eval record says about where its gold labels came from."""
    return {"column": ev.gold_column, "query": ev.gold_query, "map": dict(ev.map), "field": ev.field}


def experiment_of_run(run: dict[str, Any], file: str | None) -> tuple[Experiment, str | None]:
    """The experiment a run was made from: `file` when given; else the file at the recorded path if it is still
    there; else the recorded TOML, read as if it lay at that path. Returns it with a note for the user when the file
    differs from what the run recorded."""
    from app.experiment import load_experiment

    if file is not None:
        return load_experiment(file), None
    made_by = run.get("study") or run["experiment"]  # a study's cell was made from the study's file
    recorded = Path((run.get("header") or {}).get("toml_path") or f"{made_by}.toml")
    if recorded.is_file():
        exp = load_experiment(recorded)
        if exp.name != made_by:
            raise UserError(f"{recorded} is now experiment {exp.name!r}, not {made_by!r} of run "
                            f"{run['run_id']} — pass the experiment file with --file FILE")
        changed = hashlib.sha256(exp.toml_text.encode("utf-8")).hexdigest() != run.get("toml_sha256")
        return exp, (f"using {recorded} as it is now (changed since run {run['run_id']})" if changed else None)
    return load_experiment(recorded, text=run.get("toml_text") or ""), f"{recorded} is gone: using the TOML the run recorded"
