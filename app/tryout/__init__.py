"""`try`: send a handful of notes to the experiment's model and show what came back — prompt development in seconds.

    from app.tryout import try_notes
    report = try_notes(exp, n=5, seed=None, unit_id=None)   # blocking (runs its own event loop): call it in a
                                                            # thread worker; UserError for a mistake (unknown id)
    report.notes -> list[TriedNote]    id, note text, raw reply, answer or error + error_detail, attempts, tokens,
                                       latency_ms, truncated, host, gold, agrees
    report.agreement                   {field, with_gold, compared, agree, rate, disagree} when there are gold labels

Nothing is written: no results table (not even created), no ledger. This and `check` are the only places that
show note text, because the user asked to see it.
"""

from __future__ import annotations

import asyncio

from app.cluster.auto import resolve_hosts
from app.experiment import Experiment
from app.sources import open_source
from app.tryout.ask import TriedNote, TryReport, ask_all, report_for
from app.tryout.gold import Gold, attach_gold, gold_for
from app.tryout.pick import pick

__all__ = ["Gold", "TriedNote", "TryReport", "try_notes"]

DEFAULT_N = 5


def try_notes(exp: Experiment, n: int = DEFAULT_N, seed: int | None = None, unit_id: str | None = None,
              gold: Gold | None = None) -> TryReport:
    """`gold`: agreement is computed against it; by default the experiment's own gold labels, if it names any."""
    exp = resolve_hosts(exp)
    gold = gold or gold_for(exp)
    source = open_source(exp)
    try:
        picked = pick(source, n, seed=seed, unit_id=unit_id)
        info, notes = asyncio.run(ask_all(exp, picked.units))
        report = report_for(exp, info, picked.how, notes)
        if gold is not None:
            report.agreement = attach_gold(report.notes, picked.units, source, gold)
        return report
    finally:
        source.close()
