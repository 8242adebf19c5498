"""Where a study report answers the TRIPOD-LLM items on how the labels were produced (Gallifant et al., Nature
Medicine 2025) and MI-CLEAR-LLM items 1–4 (Park et al., Korean Journal of Radiology 2024), and which parts stay the
researcher's to state. Item numbers are the guidelines'; the wording of tripod.py, for a study's cells."""

from __future__ import annotations

from typing import Any

from .tripod import PARTLY, REPORT, RESEARCHER

TRIPOD = "TRIPOD-LLM"
MI_CLEAR = "MI-CLEAR-LLM"


def _values(values: list[Any]) -> str:
    seen = list(dict.fromkeys("–" if v is None else str(v) for v in values))
    return ", ".join(seen) if seen else "not recorded"


def study_items(studies: list[dict[str, Any]]) -> list[dict[str, str]]:
    """`studies`: the study scored against each reference the report holds (gold, adjudicated)."""
    s = studies[0]
    m = s.get("methods") or {}
    cells = m.get("cells") or s["cells"]
    seeds = {}
    for c in cells:
        seeds.setdefault(c.get("repeat"), c.get("seed"))
    repeats = max((c.get("repeat") or 1 for c in cells), default=1)
    temps = _values([c.get("temperature") for c in m.get("cells") or []]) if m else "see the cells' runs"
    attempts = _values([x.get("max_attempts") for x in m.get("schemas") or []]) if m else "?"
    b = s["bootstrap"]
    remote = _values([x.get("remote") for x in m.get("models") or []]) if m else "see ledger show RUN"
    items = [
        (TRIPOD, "6a", "LLM name and version", REPORT,
         "Models: name and digest of every model (the exact weights), quantization, parameter size, backend and server "
         "version; Cells as run: the model and digest of each cell."),
        (TRIPOD, "6c", "Prompt and inference settings (seed, temperature, maximum tokens)", REPORT,
         f"Prompts: system prompt and user template of every variant, verbatim, their sha256 and the prompt hash of "
         f"each seed; Cells as run: seed, temperature ({temps}) and the other options of each cell."),
        (TRIPOD, "6d", "Raw and post-processed output", PARTLY,
         "Every answer was validated against the answer schema; the labels per note are under Notes. Raw replies are "
         "not kept (they may quote the note): keep and describe them yourself if your study needs them."),
        (TRIPOD, "19e", "How invalid outputs were handled", REPORT,
         f"Answer schema and retries: up to {attempts} attempts, then the fallback, scored as the cell's label; "
         "Cells: valid share."),
        (TRIPOD, "7c", "Date of inference", REPORT if m else RESEARCHER,
         "Cells as run: start and end (UTC) of each cell's runs." if m else "Not in this rendering."),
        (TRIPOD, "7e", "Reference standard, comparison with other LLMs", PARTLY,
         "Reference: " + "; ".join(f"{x['reference'].get('kind') or 'gold'} ({x['reference'].get('labels')} labels, "
                                   f"{x['reference'].get('adjudicated')} adjudicated)" for x in studies)
         + ", where the labels came from; Paired cells: McNemar's test and Cohen's kappa between models and "
         "prompts. How the reference labels were made (guidelines, annotators, their agreement) is yours to state."),
        (TRIPOD, "17", "Performance against the reference standard", REPORT,
         "Cells: accuracy (Wilson 95% CI), macro-F1 (bootstrap 95% CI), Cohen's kappa (95% CI) per cell; the "
         "confusion matrix of the best cell."),
        (TRIPOD, "16d", "Counts per analysis", REPORT,
         "Cells: notes with a reference label (n), answered, valid; Stability and Paired cells: the notes each "
         "figure rests on."),
        (MI_CLEAR, "1", "Identification and specifications of the LLM (name, version, date of the queries)", PARTLY,
         "Models: name, digest, quantization, size, backend and server version; Cells as run: dates (UTC). Whether "
         f"notes left the cluster: {remote}. No web access or retrieval is added by notes-tui. The maker and the "
         "training-data cutoff are yours to state."),
        (MI_CLEAR, "2", "Stochasticity: repeats and how they were synthesised", REPORT,
         f"{repeats} repeat(s) of every model and prompt, seeds by repeat {_values(list(seeds.values()))}, temperature "
         f"{temps}; each repeat is scored as a cell of its own (no vote across repeats); their agreement under "
         f"Stability (Fleiss' kappa, Krippendorff's alpha, unanimous share). Bootstrap intervals: {b['reps']} "
         f"resamples over {b.get('over', 'notes')}, seed {b['seed']}."),
        (MI_CLEAR, "3", "Prompt wording and syntax (the exact prompts)", REPORT,
         "Prompts: the system prompt and user template of each variant verbatim, with the sha256 of each and the "
         "prompt hash every run recorded."),
        (MI_CLEAR, "4", "Prompt structure (query strategy)", REPORT,
         "Stochasticity and query strategy: one request per note and attempt, a new conversation each time (no earlier "
         "note or answer in it), the answer schema sent as the structured-output format, retries and fallback."),
    ]
    return [{"guideline": g, "item": i, "topic": t, "answered_by": who, "where": where}
            for g, i, t, who, where in items]
