"""Agreement with gold labels on the notes of a try: the hook for the experiment's `[evaluation]` section (issue 15).

A `Gold` names the answer field to compare and a lookup that returns, for the tried units, each one's gold value
already mapped into the answer's values (`[evaluation].map`). `gold_for(exp)` builds it from the experiment; until
`[evaluation]` exists in app/config.py it returns None and a try shows no agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.config import Experiment
from app.sources.base import Source, Unit
from app.tryout.ask import TriedNote

#: (the open source, the tried units) -> {unit id: gold value in the answer field's terms}; ids without gold left out
GoldLookup = Callable[[Source, Sequence[Unit]], Mapping[str, Any]]


@dataclass(frozen=True)
class Gold:
    field: str  # the answer field the gold labels are compared with (a choice or bool field)
    lookup: GoldLookup


def gold_for(exp: Experiment) -> Gold | None:
    """The experiment's gold labels, or None when it names none.

    Issue 15 wires `[evaluation]` in here: `gold_column` is one more column of the notes query, read for the tried
    keys; `gold_query` is run as given and joined on the id columns; either value goes through `map` before it is
    compared with `field` (the first choice field unless the section says)."""
    return None


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
