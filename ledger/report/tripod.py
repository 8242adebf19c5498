"""Where a report answers the TRIPOD-LLM items that concern how labels were produced (Gallifant et al., Nature
Medicine 2025), and which parts stay the researcher's to state. Item numbers are the guideline's."""

from __future__ import annotations

from typing import Any

REPORT = "this report"
PARTLY = "this report, in part"
RESEARCHER = "the researcher"


def tripod_items(report: dict[str, Any]) -> list[dict[str, str]]:
    model = report["model"]
    options = report["options"]
    has_eval = bool(report["evals"])
    gpu = any(r.get("gpu_hours") is not None for r in report["runs"])
    name = f"{model.get('name')} (digest {str(model.get('digest') or 'not recorded')[:19]})"
    items = [
        ("6a", "LLM name and version", REPORT,
         f"Model: {name}, quantization, parameter size, backend and server version."),
        ("6c", "Prompt and inference settings (seed, temperature, maximum tokens)", REPORT,
         f"Prompt: system prompt, user template, answer schema, prompt hash. Options: seed {options.get('seed')}, "
         f"temperature {options.get('temperature')}, maximum tokens (num_predict) {options.get('num_predict')}, "
         f"context (num_ctx) {options.get('num_ctx')}."),
        ("6d", "Raw and post-processed output", PARTLY,
         "Post-processed output: every answer was validated against the answer schema; labels per field under "
         "Answers. Raw replies are not kept (they may quote the note): keep and describe them yourself if your "
         "study needs them."),
        ("19e", "How invalid outputs were handled", REPORT,
         f"Prompt: up to {report['prompt'].get('max_attempts')} attempts, then the fallback "
         f"{report['prompt'].get('fallback')} written with valid = 0. Flow: invalid and retried counts."),
        ("7c", "Date of inference", REPORT, "Runs: start and end of every run (UTC)."),
        ("7e", "Reference standard, comparison with other LLMs", PARTLY if has_eval else RESEARCHER,
         ("Evaluation against gold: where the gold labels came from and how they map to answers. "
          if has_eval else "No eval is recorded for these runs: notes-tui ledger eval RUN scores them against gold "
          "labels, notes-tui ledger compare RUN_A RUN_B against another model or prompt. ")
         + "How the gold labels were made (annotation guidelines, annotators, their agreement) is yours to state."),
        ("17", "Performance against the reference standard", REPORT if has_eval else RESEARCHER,
         "Evaluation: accuracy, Cohen's kappa with 95% CI, per-class precision, recall and F1, confusion matrix."
         if has_eval else "Not recorded here (see 7e)."),
        ("16a", "Flow of documents, with and without a label", REPORT,
         "Flow: units to do, answered, valid, invalid (fallback written), empty (not sent), errors (not written); "
         "Answers: units without a label per field."),
        ("16d", "Counts per analysis", REPORT,
         "Flow and Answers: counts per outcome and per label" + ("; Evaluation: units with and without gold." if has_eval
                                                                 else ".")),
        ("12", "Compute", REPORT if gpu else PARTLY,
         "Runs: host, Slurm job and shard, duration, notes/s, tokens in and out"
         + ("; GPU-hours." if gpu else "; GPU-hours are not recorded for these runs (state the GPUs yourself).")),
    ]
    return [{"item": i, "topic": t, "answered_by": who, "where": where} for i, t, who, where in items]
