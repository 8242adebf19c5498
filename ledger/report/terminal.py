"""Terminal renderings: the `ledger list` table, and show, compare, eval and verify (their --json is the data
itself)."""

from __future__ import annotations

import json
from typing import Any

from ..clock import format_duration
from ..compare import DISAGREE_SHOWN
from ..reasons import commonest, reason_text
from ..verify import Verification
from .layout import SMALL_N, eval_reference, kappa_text, label_text, num, reference_text, study_cost_lines


def _kv(rows: list[tuple[str, Any]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)}  {v}" for k, v in rows if v not in (None, "")]


def _grid(header: list[str], rows: list[list[str]], indent: str = "  ", left: int = 1) -> list[str]:
    """Columns aligned: the first `left` to the left (names, labels), the rest to the right (figures)."""
    table = [header] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in table]


def format_show(run: dict[str, Any]) -> str:
    h = run.get("header") or {}
    c = run["counts"]
    details = h.get("model_details") or {}
    slurm = h.get("slurm") or {}
    source = h.get("source") or {}
    options = ", ".join(f"{k} {json.dumps(v)}" for k, v in (run.get("options") or {}).items())
    labels = "; ".join(f"{name}: " + ", ".join(f"{label} {n}" for label, n in counts.items())
                       for name, counts in run["labels"].items())
    seal = run["sealed"]
    lines = [f"run {run['run_id']}  {run['status']}"] + _kv([
        ("experiment", run["experiment"] + (f" — {run['description']}" if run.get("description") else "")),
        ("model", f"{run['model']}  digest {run['model_digest'] or 'not recorded'}"),
        ("", " ".join(str(x) for x in (details.get("quantization_level"), details.get("parameter_size"),
                                        details.get("family")) if x)),
        ("backend", f"{run.get('backend')}, server {run.get('server_version') or '?'}"),
        *[(label, text) for label, text in run.get("server") or [] if label != "server"],
        ("hosts", ", ".join(run.get("hosts") or [])),
        ("prompt hash", run.get("prompt_hash")),
        ("toml", f"sha256 {run.get('toml_sha256')}  {h.get('toml_path') or ''}"),
        ("options", options),
        ("source", f"{source.get('kind')} {source.get('table') or 'query'} (ids {', '.join(source.get('id_columns') or [])})"
                   f" → results {run.get('results_table')}"),
        ("who, where", f"{run.get('user')}@{run.get('hostname')} pid {run.get('pid')}"),
        ("slurm", ", ".join(f"{k} {v}" for k, v in slurm.items() if v) + (f", shard {run['shard']}" if run.get("shard") else "")),
        ("started", f"{run.get('started_at')}  ended {run.get('ended_at') or '-'}  ({format_duration(run.get('duration_s'))})"),
        ("counts", f"done {num(c.get('done'))}/{num(c.get('total'))}, valid {num(c.get('valid'))}, invalid "
                   f"{num(c.get('invalid'))}, retried {num(c.get('retried'))}, empty {num(c.get('empty'))}, truncated "
                   f"{num(c.get('truncated'))}, errors {num(c.get('errors'))}; tokens in {num(c.get('tokens_in'))}, "
                   f"out {num(c.get('tokens_out'))}"),
        ("units", ", ".join(f"{k} {n}" for k, n in run["outcomes"].items()) or "none recorded"),
        ("invalid", _invalid(run.get("invalid_reasons") or {})),
        ("labels", labels),
        ("last error", run.get("last_error")),
        ("journal", f"broken: {run['journal_error']}" if run.get("journal_error") else None),
        ("sealed", f"chain entry {seal['entry']}, {seal['records']} records, head {seal['journal_head']}" if seal
         else "not yet (running, crashed, or not imported)"),
    ])
    for e in run["evals"]:
        lines.append(f"eval {e['eval_id']}  {e['field']}: accuracy {num(e['accuracy'])}, kappa {kappa_text(e)}, "
                     f"macro F1 {num(e['macro_f1'])} on {e['with_gold']} units with gold ({e['without_gold']} without)")
    return "\n".join(lines)


def _invalid(reasons: dict[str, int]) -> str | None:
    """`thinking 292 — the model answered only in its thinking: set think = false …`: the counts and what to do."""
    if not reasons:
        return None
    counts = ", ".join(f"{k} {n}" for k, n in reasons.items())
    return f"{counts} — {reason_text(commonest(reasons))}"


def format_compare(result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = ["runs:"]
    for i, r in enumerate(runs):
        lines.append(f"  {chr(65 + i)}  {r['run_id']}  {r['experiment']}  {r['model']}  prompt {str(r['prompt_hash'])[:12]}"
                     f"  {r['valid']}/{r['units']} valid")
    if not result["fields"]:
        lines.append("no choice or bool field in common: nothing to compare")
        return "\n".join(lines)
    for pair in result["pairs"]:
        a, b = (chr(65 + [r["run_id"] for r in runs].index(x)) for x in (pair["a"], pair["b"]))
        lines.append(f"{a} vs {b}: {pair['valid_in_both']} units valid in both ({pair['in_both']} in both, "
                     f"{pair['only_a']} only in {a}, {pair['only_b']} only in {b})")
        for name, f in pair["fields"].items():
            lines.append(f"  {name}: agreement {num(f['agreement'])} on {f['n']}, Cohen's kappa {kappa_text(f)}")
            if f["n"]:
                names = [label_text(x) for x in f["labels"]]
                lines += _grid([f"{a} \\ {b}"] + names,
                               [[names[i]] + [str(v) for v in row] for i, row in enumerate(f["matrix"])], "    ")
            if f["disagree_count"]:
                shown = ", ".join(f["disagree"][:DISAGREE_SHOWN])
                more = f" … and {f['disagree_count'] - DISAGREE_SHOWN} more (--json lists all)" \
                    if f["disagree_count"] > DISAGREE_SHOWN else ""
                lines.append(f"    disagree ({f['disagree_count']}): {shown}{more}")
    if len(runs) > 2:
        letters = [chr(65 + i) for i in range(len(runs))]
        for name, matrix in result["kappa_matrix"].items():
            lines.append(f"pairwise Cohen's kappa, {name}:")
            lines += _grid([""] + letters, [[letters[i]] + [num(v, 2) for v in row] for i, row in enumerate(matrix)])
            ns = [p["fields"][name]["n"] for p in result["pairs"] if name in p["fields"]]
            if ns:
                small = f" — under {SMALL_N} in {sum(n < SMALL_N for n in ns)} pairs: wide intervals" \
                    if min(ns) < SMALL_N else ""
                lines.append(f"  n per pair: {min(ns)} to {max(ns)} units{small}")
    return "\n".join(lines)


def format_eval(e: dict[str, Any]) -> str:
    na = e["not_answered"]
    lines = [
        f"eval {e.get('eval_id', '')}: {e['experiment']} field {e['field']}, runs {', '.join(e['runs'])}",
        f"reference: {reference_text(eval_reference(e))}",
        f"units {e['units']}: {e['with_gold']} with gold, {e['without_gold']} without gold, "
        f"{na['empty'] + na['error']} not answered (empty {na['empty']}, errors {na['error']}); "
        f"{e['invalid_answers']} invalid answers scored as their fallback",
        f"accuracy {num(e['accuracy'])}   Cohen's kappa {kappa_text(e)}",
    ]
    rows = [[label_text(c["label"]), num(c["precision"]), num(c["recall"]), num(c["f1"]), str(c["support"])]
            for c in e["per_class"]]
    rows += [[f"{n} avg", num(e[n]["precision"]), num(e[n]["recall"]), num(e[n]["f1"]), str(e["with_gold"])]
             for n in ("macro", "weighted")]
    lines += _grid(["label", "precision", "recall", "F1", "support"], rows)
    if e["with_gold"]:
        names = [label_text(x) for x in e["labels"]]
        lines.append("confusion matrix (rows: gold, columns: answer):")
        lines += _grid(["gold \\ answer"] + names, [[names[i]] + [str(v) for v in row] for i, row in enumerate(e["confusion"])])
    return "\n".join(lines)


def format_verify(v: Verification) -> str:
    lines = []
    if v.ok:
        lines.append(f"ledger {v.ledger_dir}: OK")
    else:
        first = v.problems[0]
        lines.append(f"ledger {v.ledger_dir}: FAILED, {len(v.problems)} problem(s); the first:")
        lines.append(f"  {first.what} ({first.file}): {first.message}")
        for p in v.problems[1:]:
            lines.append(f"  then {p.what} ({p.file}): {p.message}")
    lines.append(f"checked: {v.sealed_runs} sealed runs, {v.sealed_evals} evals, {len(v.unsealed)} unsealed journals "
                 "(running, crashed or not yet imported)")
    if v.adjudications:
        lines.append(f"adjudications: {v.adjudications} records, {v.sealed_adjudications} sealed")
    lines.append(f"head: {v.head or 'none (nothing sealed yet)'} ({v.entries} entries)")
    if v.head_check and v.head_check.get("found"):
        lines.append(v.head_check["message"])
    return "\n".join(lines)


# `ledger list`

COLUMNS = ("id", "experiment", "model", "status", "done/total", "valid", "invalid", "empty", "truncated", "errors",
           "started", "duration")  # fmt: skip
RIGHT_ALIGNED = {"done/total", "valid", "invalid", "empty", "truncated", "errors", "duration"}


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _started(value: Any) -> str:
    # Stored as UTC ISO-8601; minutes are enough in a listing, and the Z keeps it honest about the zone.
    if not isinstance(value, str) or len(value) < 16:
        return _num(value)
    return value[:10] + " " + value[11:16] + "Z"


def _cells(run: dict[str, Any]) -> list[str]:
    counts = run.get("counts") or {}
    return [
        str(run.get("run_id") or ""),
        str(run.get("experiment") or "-"),
        str(run.get("model") or "-"),
        str(run.get("status") or "-"),
        f"{_num(counts.get('done'))}/{_num(counts.get('total'))}",
        _num(counts.get("valid")),
        _num(counts.get("invalid")),
        _num(counts.get("empty")),
        _num(counts.get("truncated")),
        _num(counts.get("errors")),
        _started(run.get("started_at")),
        format_duration(run.get("duration_s")),
    ]


def format_runs_table(runs: list[dict[str, Any]]) -> str:
    """Aligned plain-text table, header first; a one-line message when there are no runs."""
    if not runs:
        return "no runs recorded"
    rows = [list(COLUMNS)] + [_cells(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if name in RIGHT_ALIGNED else cell.ljust(width) for name, cell, width in zip(COLUMNS, row, widths)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def runs_to_json(runs: list[dict[str, Any]]) -> str:
    return json.dumps(runs, indent=2, ensure_ascii=False, default=str)


# `ledger study`
def _ci(value: Any, low: Any, high: Any, digits: int = 2) -> str:
    """0.84 [0.71–0.92]: a figure with its 95% interval, the interval's width in plain view."""
    if value is None:
        return "–"
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.0f}%"


def _p(value: Any) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def format_study(s: dict[str, Any], notes_shown: int) -> str:
    lines = [
        f"study {s['study']}: {len(s['cells'])} cells, field {s['field']}",
        f"reference: {reference_text(s['reference'])}",
        f"95% intervals: accuracy Wilson, kappa asymptotic, macro-F1/Fleiss/alpha bootstrap over notes "
        f"({s['bootstrap']['reps']} resamples, seed {s['bootstrap']['seed']}"
        + (f", {s['bootstrap']['sampler']}" if s["bootstrap"].get("sampler") else "") + ")",
        "",
        "cells against the reference:",
    ]
    rows = [[c["cell"], num(c["n"]), _ci(c["accuracy"], c["accuracy_low"], c["accuracy_high"]),
             _ci(c["macro_f1"], c["macro_f1_low"], c["macro_f1_high"]),
             _ci(c["kappa"], c["kappa_low"], c["kappa_high"]) + (" one label" if c["labels_answered"] == 1 else ""),
             _pct(c["valid_pct"]), "–" if c["tokens_out"] is None else f"{c['tokens_in'] + c['tokens_out']:.0f}",
             "–" if c["latency_ms"] is None else f"{c['latency_ms'] / 1000:.2f}", c["run_id"][:12]]
            for c in s["cells"]]
    lines += _grid(["cell", "n", "accuracy", "macro-F1", "Cohen's kappa", "valid", "tok/note", "s/note", "run"], rows)
    if s["best_cell"]:
        lines.append(f"  best by accuracy: {s['best_cell']}")
    if any(c["labels_answered"] == 1 for c in s["cells"]):
        lines.append("  one label: the cell gave every note the same answer; its kappa is 0 by construction")
    lines += [f"  {line}" for line in study_cost_lines(s)]
    small = [c["cell"] for c in s["cells"] if c["small"]]
    if small:
        lines.append(f"  caution: under {s['small_n']} notes with a reference label in {', '.join(small)}: the intervals "
                     "are wide; read the figures as a sketch")
    lines += ["", "stability across repeats (same model and prompt, other seeds):"]
    if s["stability"]:
        rows = [[f"{st['model']}/{st['prompt']}", str(st["repeats"]), num(st["n"]),
                 _ci(st["fleiss_kappa"], st["fleiss_low"], st["fleiss_high"]),
                 _ci(st["krippendorff_alpha"], st["alpha_low"], st["alpha_high"]), _pct(st["unanimous_pct"])]
                for st in s["stability"]]
        lines += _grid(["model/prompt", "repeats", "n", "Fleiss' kappa", "Krippendorff's alpha", "unanimous"], rows)
    else:
        lines.append("  none: every model and prompt ran once (set [study].repeats = 2 or more)")
    lines += ["", "paired cells (first repeats; McNemar on correct/incorrect against the reference):"]
    if s["paired"]:
        rows = [[p["a"], p["b"], num(p["n"]), f"{p['only_a_correct']}/{p['only_b_correct']}", _p(p["mcnemar_p"]),
                 "–" if p["agreement"] is None else f"{100 * p['agreement']:.0f}%",
                 _ci(p["kappa"], p["kappa_low"], p["kappa_high"])] for p in s["paired"]]
        lines += _grid(["A", "B", "n", "only A/only B right", "McNemar p", "agree", "kappa A–B"], rows, left=2)
    else:
        lines.append("  none: one model and one prompt")
    shown = [n for n in s["notes"] if n["different"]][:notes_shown]
    every = s.get("notes_all", s["notes_total"])
    more = f" (the first {len(shown)}; --json or --limit for more)" if 0 < len(shown) < s["notes_different"] else ""
    lines += ["", f"notes where cells disagree or differ from the reference: {s['notes_different']} of {every}{more}"]
    if shown:
        names = [c["cell"] for c in s["cells"]]
        rows = [[n["unit"], label_text(n["gold"]) if n["gold"] is not None else "–"]
                + [label_text(n["labels"][c]) if n["labels"][c] is not None else "–" for c in names] for n in shown]
        lines += _grid(["note", "reference"] + names, rows, left=len(names) + 2)
    return "\n".join(lines)
