"""What the Markdown and HTML study reports share, as layout.py does for the run report: the same sections with the
same rows, blocks ("p", text), ("table", header, rows), ("code", lang, text). The figures are those of the terminal
(`format_study`) with three decimals; the sections after the notes come from study_data.study_methods when the
report carries them (`methods`). A report may hold the study scored against more than one reference (gold, then
adjudicated): the figures once per reference, the methods once.

No note text: the per-note table holds note ids and labels only, the prompts are the templates."""

from __future__ import annotations

import json
from typing import Any

from .layout import Block, label_text, matrix_block, num, reference_text, study_cost_lines, when
from .study_tripod import study_items
from .terminal import _ci, _p, _pct

DIGITS = 3
SHORT = 12  # characters of a digest or hash in a table that has them in full elsewhere


def title(studies: list[dict[str, Any]]) -> str:
    return f"notes-tui study report: {studies[0]['study']}"


def kind(s: dict[str, Any]) -> str:
    return s["reference"].get("kind") or "gold"


def reference_line(s: dict[str, Any]) -> str:
    """Which reference the figures are against, and how many of its labels were adjudicated."""
    return f"Reference: {reference_text(s['reference'])}."


def intervals_text(s: dict[str, Any]) -> str:
    b = s["bootstrap"]
    return ("95% intervals: accuracy Wilson, Cohen's kappa asymptotic, macro-F1, Fleiss' kappa and Krippendorff's "
            f"alpha bootstrap over {b.get('over', 'notes')} ({b['reps']} resamples, seed {b['seed']}"
            + (f", drawn by {b['sampler']}" if b.get("sampler") else "") + ").")


def _shape(s: dict[str, Any]) -> str:
    cells = s["cells"]
    models = len(dict.fromkeys(c["model"] for c in cells))
    prompts = len(dict.fromkeys(c["prompt"] for c in cells))
    repeats = max((c["repeat"] or 1 for c in cells), default=1)
    return (f"Study {s['study']}: {len(cells)} cells ({models} model(s) × {prompts} prompt(s) × {repeats} repeat(s)), "
            f"answer field {s['field']}, labels {', '.join(label_text(x) for x in s['labels'])}.")


def intro(studies: list[dict[str, Any]]) -> list[str]:
    """The paragraphs before the first section: what the study is and what it was scored against."""
    s = studies[0]
    lines = [_shape(s)] + [reference_line(x) for x in studies] + [intervals_text(s)]
    m = s.get("methods")
    if m:
        lines.append(f"Generated {m['generated_at']} by notes-tui ledger study.")
        lines.append(head_text(m))
    return lines


def head_text(m: dict[str, Any]) -> str:
    h = m.get("ledger_head")
    if not h:
        return "Ledger head: none yet (no run of this ledger has finished)."
    return (f"Ledger head: {h['hash']} ({h['entries']} sealed entries). "
            f"Check this ledger later against it with: notes-tui ledger verify --head {h['hash']}")


def ci(value: Any, low: Any, high: Any) -> str:
    return _ci(value, low, high, DIGITS)


CELLS_SECTION = "Cells against the reference"


def figure_sections(s: dict[str, Any], notes_shown: int | None, suffix: str = "") -> list[tuple[str, list[Block]]]:
    return [
        (CELLS_SECTION + suffix, ([("p", reference_line(s))] if suffix else []) + cell_blocks(s)),
        ("Stability across repeats" + suffix, stability_blocks(s)),
        ("Paired cells" + suffix, paired_blocks(s)),
        ("Confusion matrix of the best cell" + suffix, confusion_blocks(s)),
        ("Notes where cells disagree or differ from the reference" + suffix, note_blocks(s, notes_shown)),
    ]


def sections(studies: list[dict[str, Any]], notes_shown: int | None = None) -> list[tuple[str, list[Block]]]:
    """The figures of each reference (headed by it when there are several), then how the labels were produced."""
    out = []
    for x in studies:
        out += figure_sections(x, notes_shown, f" ({kind(x)})" if len(studies) > 1 else "")
    s = studies[0]
    if s.get("methods"):
        out += [
            ("Models", model_blocks(s)),
            ("Cells as run", cells_as_run_blocks(s)),
            ("Prompts", prompt_blocks(s)),
            ("Answer schema and retries", schema_blocks(s)),
            ("Stochasticity and query strategy", strategy_blocks(s)),
            ("TRIPOD-LLM and MI-CLEAR-LLM", guideline_blocks(studies)),
        ]
    out.append(("Integrity", integrity_blocks(s)))
    return out


def cell_rows(s: dict[str, Any]) -> list[list[str]]:
    return [[c["cell"], num(c["n"]), ci(c["accuracy"], c["accuracy_low"], c["accuracy_high"]),
             ci(c["macro_f1"], c["macro_f1_low"], c["macro_f1_high"]),
             ci(c["kappa"], c["kappa_low"], c["kappa_high"]) + (" (one label)" if c["labels_answered"] == 1 else ""),
             _pct(c["valid_pct"]), "–" if c["tokens_out"] is None else f"{c['tokens_in'] + c['tokens_out']:.0f}",
             "–" if c["latency_ms"] is None else f"{c['latency_ms'] / 1000:.2f}", c["run_id"]]
            for c in s["cells"]]


def cell_blocks(s: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [
        ("table", ["cell", "n", "accuracy (95% CI)", "macro-F1 (95% CI)", "Cohen's kappa (95% CI)", "valid",
                   "tokens/note", "s/note", "run"], cell_rows(s)),
        ("p", "n: notes the cell answered that have a reference label. A cell's label for a note is its latest answer "
              "(an invalid answer counts as its fallback); notes it never answered are missing, not wrong."),
    ]
    blocks += [("p", line + ("" if line.endswith(")") else ".")) for line in study_cost_lines(s)]
    if s["best_cell"]:
        blocks.append(("p", f"Best by accuracy: {s['best_cell']}."))
    if any(c["labels_answered"] == 1 for c in s["cells"]):
        blocks.append(("p", "One label: the cell gave every note the same answer; its kappa is 0 by construction."))
    small = [c["cell"] for c in s["cells"] if c["small"]]
    if small:
        where = "every cell" if len(small) == len(s["cells"]) else ", ".join(small)
        blocks.append(("p", f"Caution: under {s['small_n']} notes with a reference label in {where}: the intervals are "
                            "wide; read the figures as a sketch."))
    return blocks


def stability_blocks(s: dict[str, Any]) -> list[Block]:
    if not s["stability"]:
        return [("p", "None: every model and prompt ran once (set [study].repeats = 2 or more).")]
    rows = [[f"{st['model']}/{st['prompt']}", str(st["repeats"]), num(st["n"]),
             ci(st["fleiss_kappa"], st["fleiss_low"], st["fleiss_high"]),
             ci(st["krippendorff_alpha"], st["alpha_low"], st["alpha_high"]), _pct(st["unanimous_pct"])]
            for st in s["stability"]]
    blocks: list[Block] = [
        ("p", "Same model and prompt, other seeds: how often the repeats agree, on the notes every repeat answered (n)."),
        ("table", ["model/prompt", "repeats", "n", "Fleiss' kappa (95% CI)", "Krippendorff's alpha (95% CI)",
                   "unanimous"], rows),
    ]
    small = [f"{st['model']}/{st['prompt']}" for st in s["stability"] if st["small"]]
    if small:
        where = "every model and prompt" if len(small) == len(s["stability"]) else ", ".join(small)
        blocks.append(("p", f"Caution: under {s['small_n']} notes in {where}."))
    return blocks


def paired_blocks(s: dict[str, Any]) -> list[Block]:
    if not s["paired"]:
        return [("p", "None: one model and one prompt.")]
    rows = [[p["a"], p["b"], num(p["n"]), num(p["only_a_correct"]), num(p["only_b_correct"]), _p(p["mcnemar_p"]),
             "–" if p["agreement"] is None else f"{100 * p['agreement']:.1f}%", ci(p["kappa"], p["kappa_low"], p["kappa_high"])]
            for p in s["paired"]]
    blocks: list[Block] = [
        ("p", "The first repeats of every model and prompt, two by two: McNemar's test (exact) of right and wrong "
              "against the reference on the notes both answered with a reference label (n), and how the two agree "
              "with each other."),
        ("table", ["A", "B", "n", "only A right", "only B right", "McNemar p", "A and B agree", "Cohen's kappa A–B (95% CI)"],
         rows),
    ]
    small = [f"{p['a']} – {p['b']}" for p in s["paired"] if p["small"]]
    if small:
        blocks.append(("p", f"Caution: under {s['small_n']} notes in {len(small)} of {len(s['paired'])} pairs."))
    return blocks


def confusion_blocks(s: dict[str, Any]) -> list[Block]:
    bc = s.get("best_confusion")
    if not bc:
        return [("p", "No cell answered a note that has a reference label.")]
    return [("p", f"{bc['cell']} (rows: the reference, columns: the cell's answer):"), matrix_block(bc["labels"], bc["matrix"])]


def shown_notes(s: dict[str, Any], notes_shown: int | None) -> list[dict[str, Any]]:
    different = [n for n in s["notes"] if n["different"]]
    return different if notes_shown is None else different[:notes_shown]


def note_blocks(s: dict[str, Any], notes_shown: int | None) -> list[Block]:
    shown = shown_notes(s, notes_shown)
    listed = sum(1 for n in s["notes"] if n["different"])
    text = f"{num(s['notes_different'])} of {num(s['notes_total'])} notes"
    if len(shown) < s["notes_different"]:
        text += f"; the first {len(shown)} listed (--limit N lists more, --json all)"
    elif listed and s.get("offset"):
        text += f"; from note {s['offset']} on"
    blocks: list[Block] = [("p", text + ". Note ids and labels only: no note text.")]
    if shown:
        names = [c["cell"] for c in s["cells"]]
        rows = [[n["unit"], "–" if n["gold"] is None else label_text(n["gold"])]
                + ["–" if n["labels"].get(c) is None else label_text(n["labels"][c]) for c in names] for n in shown]
        blocks.append(("table", ["note", "reference"] + names, rows))
    return blocks


def _short(value: Any) -> str:
    return "not recorded" if not value else str(value)[:SHORT]


def model_blocks(s: dict[str, Any]) -> list[Block]:
    rows = []
    for x in s["methods"]["models"]:
        extra = "; ".join(f"{label} {text}" for label, text in x["server"])
        rows.append([x["name"] or x["model"], x["digest"] or "not recorded", x["quantization"] or "–",
                     x["parameter_size"] or "–", x["family"] or "–",
                     " ".join(str(v) for v in (x["backend"], x["server_version"]) if v) or "–", extra or "–",
                     str(len(x["cells"]))])
    remote = list(dict.fromkeys(x["remote"] for x in s["methods"]["models"]))
    return [("table", ["model", "digest", "quantization", "parameter size", "family", "backend, server", "server said",
                       "cells"], rows),
            ("p", "Where the notes went: " + "; ".join(remote) + ".")]


def _plain(value: Any) -> str:
    """A setting as it was written (a seed of 20261206 is not 20,261,206; a temperature of 0.7 is not 0.700)."""
    return "–" if value is None else json.dumps(value)


def _options_text(options: dict[str, Any]) -> str:
    rest = {k: v for k, v in options.items() if k not in ("seed", "temperature")}
    return ", ".join(f"{k} {json.dumps(v)}" for k, v in rest.items()) or "–"


def cells_as_run_blocks(s: dict[str, Any]) -> list[Block]:
    rows = [[c["cell"], c["model_name"] or c["model"] or "–", _short(c["model_digest"]), _plain(c["seed"]),
             _plain(c["temperature"]), _options_text(c["options"]), _short(c["prompt_hash"]), num(c["runs"]),
             when(c["started_at"]), when(c["ended_at"])]
            for c in s["methods"]["cells"]]
    m = s["methods"]
    return [("table", ["cell", "model", "digest", "seed", "temperature", "other options", "prompt hash", "runs",
                       "started (UTC)", "ended (UTC)"], rows),
            ("p", f"Digests and prompt hashes shortened to {SHORT} characters here; in full under Models and Prompts. "
                  f"Queries from {when(m['first_started_at'])} to {when(m['last_ended_at'])} (UTC).")]


def prompt_blocks(s: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [("p", "The prompt hash a run records is the sha256 of its system prompt, user template, answer "
                                 "schema and options (the seed among them; `think` when set), so each seed of a variant "
                                 "has its own; it does not cover the model.")]
    for p in s["methods"]["prompts"]:
        head = f"Prompt variant {p['prompt']}, {len(p['cells'])} cell(s): {', '.join(p['cells'])}."
        if p["edited"]:
            head += " Its text changed between cells (the experiment file was edited): each text is shown."
        blocks += [
            ("p", head),
            ("p", f"System prompt (sha256 {p['system_sha256'] or '–'}):"), ("code", "text", p["system"] or ""),
            ("p", f"User template, {{note}} is where each note went (sha256 {p['user_template_sha256'] or '–'}):"),
            ("code", "text", p["user_template"] or ""),
            ("table", ["prompt hash", "seed", "cells"],
             [[h["prompt_hash"] or "not recorded", ", ".join(str(x) for x in h["seeds"]), ", ".join(h["cells"])]
              for h in p["hashes"]]),
        ]
    return blocks


def schema_blocks(s: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    schemas = s["methods"]["schemas"]
    for x in schemas:
        if len(schemas) > 1:
            blocks.append(("p", f"Cells {', '.join(x['cells'])}:"))
        blocks += [
            ("p", "Answer schema, sent as the structured-output format with every request:"),
            ("code", "json", json.dumps(x["answer_schema"], indent=2, ensure_ascii=False)),
            ("p", f"An answer that failed validation was asked again, up to {num(x['max_attempts'])} attempts in all; "
                  f"then the fallback {json.dumps(x['fallback'], ensure_ascii=False)} was written, counted invalid, "
                  "and scored as the cell's label for that note."),
        ]
    return blocks


def strategy_blocks(s: dict[str, Any]) -> list[Block]:
    m = s["methods"]
    cells = m["cells"]
    seeds: dict[Any, list[Any]] = {}
    for c in cells:
        seeds.setdefault(c["repeat"], [])
        if c["seed"] not in seeds[c["repeat"]]:
            seeds[c["repeat"]].append(c["seed"])
    by_repeat = "; ".join(f"repeat {r}: seed {', '.join(str(x) for x in v)}" for r, v in seeds.items())
    temps = list(dict.fromkeys(json.dumps(c["temperature"]) for c in cells))
    think = list(dict.fromkeys(json.dumps(c["think"]) for c in cells))
    b = s["bootstrap"]
    return [
        ("p", f"Stochasticity: {len(seeds)} repeat(s) of every model and prompt, each a cell and a run of its own; "
              f"{by_repeat}; temperature {', '.join(temps)}; think {', '.join(think)}. Each repeat is scored on its "
              "own (no vote across repeats); Stability says how far they agree."),
        ("p", f"Bootstrap intervals: {b['reps']} resamples over {b.get('over', 'notes')}, seed {b['seed']}: the same "
              "command on the same ledger gives the same intervals."),
        ("p", "Query strategy: one request per note and attempt, each a new conversation of the system prompt and the "
              "user template with the note in place of {note}; no earlier note, answer or example is in it. The answer "
              "schema goes with every request as the structured-output format. An invalid answer is asked again (see "
              "Answer schema and retries); a note longer than the model's context is not asked again (counted invalid); "
              "a request the server refused or dropped is sent again after a pause, and a note whose requests kept "
              "failing is left unanswered (errors: missing in that cell, not wrong)."),
    ]


def guideline_blocks(studies: list[dict[str, Any]]) -> list[Block]:
    rows = [[t["guideline"], t["item"], t["topic"], t["answered_by"], t["where"]] for t in study_items(studies)]
    return [("p", "Where this report answers the TRIPOD-LLM items on how the labels were produced (Gallifant et al., "
                  "Nature Medicine 2025) and MI-CLEAR-LLM items 1–4 (Park et al., Korean Journal of Radiology 2024):"),
            ("table", ["guideline", "item", "topic", "answered by", "where"], rows)]


def integrity_blocks(s: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    if s.get("methods"):
        blocks.append(("p", head_text(s["methods"])))
    blocks.append(("p", "This report holds no note text and no free-text answer: note ids and labels only."))
    return blocks
