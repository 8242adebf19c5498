"""What the Markdown and HTML reports share: the same sections with the same rows, so the two never tell a reviewer
different things. Each section is a list of blocks: ("p", text), ("table", header, rows), ("code", lang, text)."""

from __future__ import annotations

import json
from typing import Any

from ..clock import format_duration

Block = tuple
FLOW_ROWS = (("to do (first run)", "to_do_first_run"), ("in the ledger", "units"), ("answered", "answered"),
             ("valid", "valid"), ("invalid (fallback written)", "invalid"), ("retried", "retried"),
             ("empty (not sent)", "empty"), ("truncated", "truncated"), ("errors (not written)", "error"))
TURN_AT_MOST = 3  # runs in a report whose per-run tables are shown a column per run


def label_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(part: int | None, whole: int | None) -> str:
    return "–" if not whole or part is None else f"{100 * part / whole:.1f}%"


def when(value: Any) -> str:
    return "–" if not value else str(value).replace("T", " ")


def head_line(report: dict[str, Any]) -> str:
    h = report.get("ledger_head")
    if not h:
        return "Ledger head: none yet (no run of this ledger has finished)."
    return (f"Ledger head: {h['hash']} ({h['entries']} sealed entries). "
            f"Check this ledger later against it with: notes-tui ledger verify --head {h['hash']}")


def by_run(header: list[str], rows: list[list[Any]]) -> Block:
    """A table with a row per run, turned so that each run is a column when there are only a few: eleven columns
    do not fit a terminal's 80 or a printed page, a column per run does."""
    if len(rows) > TURN_AT_MOST:
        return ("table", header, rows)
    return ("table", [header[0], *(r[0] for r in rows)], [[h, *(r[i] for r in rows)] for i, h in enumerate(header) if i])


def sections(report: dict[str, Any]) -> list[tuple[str, list[Block]]]:
    return [
        ("Runs", _runs(report)),
        ("Flow of units", _flow(report)),
        ("Answers", _answers(report)),
        ("Evaluation against gold labels", _evals(report)),
        ("Latency and throughput", _latency(report)),
        ("Model", _model(report)),
        ("Inference options", _options(report)),
        ("Prompt", _prompt(report)),
        ("Data source", _source(report)),
        ("Experiment file", _toml(report)),
        ("TRIPOD-LLM", _tripod(report)),
        ("Integrity", _integrity(report)),
    ]


def _runs(report: dict[str, Any]) -> list[Block]:
    rows = []
    for r in report["runs"]:
        slurm = r["slurm"]
        job = slurm.get("job_id") or "–"
        if slurm.get("array_job_id"):
            job += f" (array {slurm['array_job_id']}_{slurm.get('array_task_id', '?')})"
        rows.append([r["run_id"], r["status"], f"{r['user'] or '?'}@{r['hostname'] or '?'}", job, r["shard"] or "–",
                     when(r["started_at"]), when(r["ended_at"]), format_duration(r["duration_s"]),
                     num(r["notes_per_s"], 2), num(r["gpu_hours"]), r["tool_version"] or "–"])
    blocks: list[Block] = [by_run(["run", "status", "user@host", "Slurm job", "shard", "started (UTC)", "ended (UTC)",
                                   "duration", "notes/s", "GPU-hours", "notes-tui"], rows)]
    if len(report["runs"]) > 1:
        blocks.insert(0, ("p", f"{len(report['runs'])} runs of this experiment, reported together (oldest first)."))
    for r in report["runs"]:
        if r["last_error"]:
            blocks.append(("p", f"Run {r['run_id']} last error: {r['last_error']}"))
        if r["journal_error"]:
            blocks.append(("p", f"Run {r['run_id']}: its journal is broken ({r['journal_error']}); "
                                "the figures stop there. Run notes-tui ledger verify."))
    if not any(r["gpu_hours"] is not None for r in report["runs"]):
        blocks.append(("p", "GPU-hours: not recorded (the runs did not record the GPUs of their server jobs)."))
    return blocks


def _flow(report: dict[str, Any]) -> list[Block]:
    f = report["flow"]
    blocks: list[Block] = [("table", ["flow", "units"], [[label, num(f[key])] for label, key in FLOW_ROWS])]
    blocks.append(("p", "Each unit counted once, by its latest outcome. What each run did:"))
    rows = []
    for r in report["runs"]:
        c = r["counts"]
        rows.append([r["run_id"]] + [num(c.get(k)) for k in ("total", "done", "valid", "invalid", "retried", "empty",
                                                              "truncated", "errors", "tokens_in", "tokens_out")])
    blocks.append(by_run(["run", "to do", "done", "valid", "invalid", "retried", "empty", "truncated", "errors",
                          "tokens in", "tokens out"], rows))
    return blocks


def _answers(report: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    if not report["distributions"]:
        return [("p", "The answer has no choice or bool field.")]
    for d in report["distributions"]:
        total = sum(x["n"] for x in d["labels"])
        rows = [[label_text(x["label"]), num(x["n"]), pct(x["n"], total)] for x in d["labels"]]
        blocks.append(("p", f"Field {d['field']} ({d['kind']}), {total:,} valid answers:"))
        blocks.append(("table", ["label", "units", "share"], rows))
        w = d["without_label"]
        blocks.append(("p", f"Without a label: {w['invalid']:,} invalid (fallback written), {w['empty']:,} empty "
                            f"(not sent), {w['error']:,} errors (not written)."))
    return blocks


def _evals(report: dict[str, Any]) -> list[Block]:
    if not report["evals"]:
        return [("p", "No eval is recorded for these runs (notes-tui ledger eval RUN).")]
    blocks: list[Block] = []
    for e in report["evals"]:
        blocks += eval_blocks(e)
    return blocks


def gold_source_text(gold: dict[str, Any]) -> str:
    if gold.get("column"):
        where = f"column {gold['column']} of the source"
    else:
        where = f"query {gold.get('query')}"
    mapping = gold.get("map") or {}
    return where + (f", mapped {json.dumps(mapping, ensure_ascii=False)}" if mapping else ", compared as they are")


def reference_text(ref: dict[str, Any]) -> str:
    """Which labels a score was against: gold, or gold with the adjudicated labels in place."""
    source = f"gold labels from {gold_source_text(ref)}" if ref.get("column") or ref.get("query") else "gold labels"
    if ref.get("kind") == "adjudicated":
        return (f"adjudicated: {source}, with {ref['adjudicated']} adjudicated labels in place "
                f"({ref.get('changed_from_gold', 0)} differ from gold, {ref.get('added_to_gold', 0)} where gold had none); "
                f"{ref['labels']} labels in all")
    unused = ref.get("adjudications_not_used") or 0
    return f"{source} ({ref['labels']} labels" + (f"; {unused} adjudicated labels not used)" if unused else ", none adjudicated)")


def eval_reference(e: dict[str, Any]) -> dict[str, Any]:
    """An eval's reference; evals made before adjudication existed were against gold alone."""
    return e.get("reference") or {**e["gold"], "kind": "gold", "labels": e.get("gold_labels", e["with_gold"])}


def eval_blocks(e: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [
        ("p", f"Eval {e.get('eval_id', '')} of field {e['field']} ({when(e.get('created_at'))}), runs "
              f"{', '.join(e['runs'])}; reference: {reference_text(eval_reference(e))}."),
        ("table", ["units", "with gold", "without gold", "not answered", "invalid answers", "accuracy",
                   "Cohen's kappa (95% CI)", "macro F1", "weighted F1"],
         [[num(e["units"]), num(e["with_gold"]), num(e["without_gold"]),
           num(e["not_answered"]["empty"] + e["not_answered"]["error"]), num(e["invalid_answers"]),
           num(e["accuracy"]), kappa_text(e), num(e["macro_f1"]), num(e["weighted_f1"])]]),
    ]
    rows = [[label_text(c["label"]), num(c["precision"]), num(c["recall"]), num(c["f1"]), num(c["support"])]
            for c in e["per_class"]]
    for name in ("macro", "weighted"):
        avg = e[name]
        rows.append([f"{name} average", num(avg["precision"]), num(avg["recall"]), num(avg["f1"]), num(e["with_gold"])])
    blocks.append(("table", ["label", "precision", "recall", "F1", "support"], rows))
    blocks.append(("p", "Confusion matrix (rows: gold, columns: the run's answer):"))
    blocks.append(matrix_block(e["labels"], e["confusion"]))
    return blocks


SMALL_N = 30  # under this many units a kappa's interval is wide: every kappa shown says so (as ledger study does)


def kappa_text(d: dict[str, Any]) -> str:
    """A kappa with its 95% interval and the n it rests on; a caution under SMALL_N."""
    n = d.get("n", d.get("with_gold")) or 0
    if d.get("kappa") is None:
        return "undefined (no units to compare)" if not n else f"undefined (one label only), n {n}"
    small = f" — under {SMALL_N}: a wide interval, a sketch" if n < SMALL_N else ""
    return f"{d['kappa']:.3f} ({d['kappa_low']:.3f} to {d['kappa_high']:.3f}), n {n}{small}"


def matrix_block(labels: list[Any], matrix: list[list[int]]) -> Block:
    names = [label_text(x) for x in labels]
    return ("table", [""] + names, [[names[i]] + [num(v) for v in row] for i, row in enumerate(matrix)])


def _latency(report: dict[str, Any]) -> list[Block]:
    lat = report["latency_ms"]
    t = report["throughput"]
    blocks: list[Block] = []
    if lat["n"]:
        blocks.append(("table", ["requests", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "mean ms"],
                       [[num(lat["n"]), num(lat["p50"], 1), num(lat["p90"], 1), num(lat["p95"], 1), num(lat["p99"], 1),
                         num(lat["max"], 1), num(lat["mean"], 1)]]))
    else:
        blocks.append(("p", "No unit was sent to the model."))
    blocks.append(("p", f"Throughput: {t['done']:,} units in {format_duration(t['run_seconds'])} of run time, "
                        f"{num(t['notes_per_s'], 2)} notes/s (over the wall-clock span "
                        f"{format_duration(t['wall_seconds'])}: {num(t['notes_per_s_wall'], 2)} notes/s)."))
    return blocks


def _model(report: dict[str, Any]) -> list[Block]:
    m = report["model"]
    rows = [["name", m["name"]], ["digest", m["digest"] or "not recorded"], ["quantization", m["quantization"] or "–"],
            ["parameter size", m["parameter_size"] or "–"], ["family", m["family"] or "–"],
            ["format", m["format"] or "–"], ["backend", m["backend"]], ["server version", m["server_version"] or "–"],
            ["hosts", ", ".join(m["hosts"]) or "–"], *m.get("server", [])]
    return [("table", ["item", "value"], [[k, str(v)] for k, v in rows])]


def _options(report: dict[str, Any]) -> list[Block]:
    o = report["options"]
    notes = {"seed": "", "temperature": "", "num_predict": "maximum tokens of an answer", "num_ctx": "context window"}
    rows = [[k, json.dumps(v), notes.get(k, "")] for k, v in o.items()]
    return [("table", ["option", "value", "meaning"], rows)]


def _prompt(report: dict[str, Any]) -> list[Block]:
    p = report["prompt"]
    return [
        ("p", f"Prompt hash (sha256 of system prompt, user template, answer schema and options): {p['prompt_hash']}"),
        ("p", "System prompt:"), ("code", "text", p["system"] or ""),
        ("p", "User template ({note} is where each note went):"), ("code", "text", p["user_template"] or ""),
        ("p", "Answer schema (sent as the structured-output format):"),
        ("code", "json", json.dumps(p["answer_schema"], indent=2, ensure_ascii=False)),
        ("p", f"Invalid answers: up to {p['max_attempts']} attempts, then the fallback "
              f"{json.dumps(p['fallback'], ensure_ascii=False)} is written with valid = 0."),
    ]


def _source(report: dict[str, Any]) -> list[Block]:
    s = report["source"]
    rows = [[k, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v] for k, v in s.items() if v is not None]
    return [("p", "Where the notes came from (credentials are never recorded):"), ("table", ["item", "value"], rows)]


def _toml(report: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    for t in report["toml"]:
        blocks.append(("p", f"sha256 {t['sha256']}, from {t['path'] or '?'}, used by {', '.join(t['runs'])}. "
                            "Write it back with: notes-tui ledger rerun RUN -o FILE"))
        blocks.append(("code", "toml", t["text"] or ""))
    return blocks


def _tripod(report: dict[str, Any]) -> list[Block]:
    rows = [[t["item"], t["topic"], t["answered_by"], t["where"]] for t in report["tripod"]]
    return [("p", "Where this report answers the TRIPOD-LLM items on how the labels were produced "
                  "(Gallifant et al., Nature Medicine 2025):"), ("table", ["item", "topic", "answered by", "where"], rows)]


def _integrity(report: dict[str, Any]) -> list[Block]:
    rows = []
    for r in report["runs"]:
        seal = r["sealed"]
        rows.append([r["run_id"], "not sealed yet (still running, or crashed)" if seal is None
                     else f"chain entry {seal['entry']}, journal head {seal['journal_head']}"])
    return [("p", head_line(report)), ("table", ["run", "seal"], rows),
            ("p", "This report holds no note text and no free-text answer: the ledger never records them.")]


def study_cost_lines(s: dict[str, Any]) -> list[str]:
    """Under a study's cell table: why each cell's invalid answers failed, and the GPU-hours where runs recorded
    their server jobs' GPUs."""
    from ..reasons import commonest, reason_text

    lines = []
    for c in s["cells"]:
        reasons = c.get("invalid_reasons") or {}
        if reasons:
            counts = ", ".join(f"{k} {n}" for k, n in reasons.items())
            lines.append(f"invalid in {c['cell']}: {counts} — {reason_text(commonest(reasons))}")
    hours = [(c["cell"], c.get("gpu_hours")) for c in s["cells"] if c.get("gpu_hours") is not None]
    if hours:
        lines.append("GPU-hours: " + ", ".join(f"{cell} {h:.2f}" for cell, h in hours)
                     + f"; {sum(h for _, h in hours):.2f} in all")
    else:
        lines.append("GPU-hours: not recorded (no run of the study recorded the GPUs of its server jobs)")
    return lines
