"""Agreement with gold labels on the notes of a try: the hook for the experiment's `[evaluation]` section (issue 15).

A `Gold` names the answer field to compare and a lookup that returns, for the tried units, each one's gold value
already mapped into the answer's values (`[evaluation].map`). `gold_for(exp)` builds it from the experiment's
`[evaluation]` section, with the same reading of gold labels as `ledger eval` (app/evaluation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.experiment import Experiment
from app.sources.base import Source, Unit
from app.tryout.ask import TriedNote

#: (the open source, the tried units) -> {unit id: gold value in the answer field's terms}; ids without gold left out
GoldLookup = Callable[[Source, Sequence[Unit]], Mapping[str, Any]]


@dataclass(frozen=True)
class Gold:
    field: str  # the answer field the gold labels are compared with (a choice or bool field)
    lookup: GoldLookup


def gold_for(exp: Experiment) -> Gold | None:
    """The experiment's gold labels (`[evaluation]`: gold_column or gold_query, through map), or None without them."""
    ev = exp.spec.evaluation
    if ev is None:
        return None

    def lookup(_source: Source, units: Sequence[Unit]) -> Mapping[str, Any]:
        from app.evaluation import read_gold

        labels = read_gold(exp, ev)  # every label of the source: a try is a handful of notes, read once
        return {u.uid: labels[u.uid] for u in units if u.uid in labels}

    return Gold(field=ev.field, lookup=lookup)  # type: ignore[arg-type]


def attach_gold(notes: Sequence[TriedNote], units: Sequence[Unit], source: Source, gold: Gold) -> dict[str, Any]:
    """Fill each note's `gold` and `agrees`, and return the summary a try shows."""
    labels = gold.lookup(source, units)
    for note in notes:
        if note.id in labels:
            note.gold = labels[note.id]
            if note.answer is not None:
                note.agrees = note.answer.get(gold.field) == note.gold
    return agreement(notes, gold.field)


def agreement(notes: Sequence[TriedNote], field: str) -> dict[str, Any]:
    """with_gold: notes that have a gold label; compared: of those, the ones with a valid answer; agree: the ones
    whose answer equals the gold label. rate = agree / compared (None when nothing could be compared)."""
    with_gold = [n for n in notes if n.gold is not None]
    compared = [n for n in with_gold if n.agrees is not None]
    agree = sum(1 for n in compared if n.agrees)
    return {"field": field, "with_gold": len(with_gold), "compared": len(compared), "agree": agree,
            "rate": round(agree / len(compared), 4) if compared else None,
            "disagree": [{"id": n.id, "gold": n.gold, "answer": (n.answer or {}).get(field)}
                         for n in compared if not n.agrees]}
