"""Why an answer was invalid, in words a researcher can act on: one sentence per reason the engine records in a
unit's `error`, the same in the run's closing lines, `ledger show` and the Runs screen."""

from __future__ import annotations

from collections.abc import Mapping

REASONS = {
    "thinking": "the model answered only in its thinking: set think = false in [model] (a model that thinks "
                "whatever think says, such as gpt-oss, needs think = \"low\" and a larger num_predict, or another "
                "model)",
    "blank": "the model's answers were empty: check that the model follows JSON-schema output (try a few notes "
             "with notes-tui try)",
    "json": "the answers were not JSON: check the prompt asks for JSON and the server takes structured outputs",
    "schema": "the answers did not fit [answer.fields]: look at a few with notes-tui try",
    "cutoff": "the answers were cut off at num_predict: raise [model.options].num_predict",
    "too_long": "the notes did not fit the model's context (the server refused them): raise "
                "[model.options].num_ctx, then run again with --rerun-invalid",
    "transport": "the server did not answer (errors, timeouts): see the last error; run again to retry them",
}


def reason_text(kind: str | None) -> str:
    return REASONS.get(kind or "", f"the answers failed validation ({kind or 'unknown reason'})")


def commonest(counts: Mapping[str, int]) -> str | None:
    """The reason with the most invalid answers (ties: the first in REASONS' order, which puts the actionable
    ones first)."""
    order = list(REASONS)
    ranked = sorted((k for k, n in counts.items() if n > 0),
                    key=lambda k: (-counts[k], order.index(k) if k in order else len(order)))
    return ranked[0] if ranked else None
