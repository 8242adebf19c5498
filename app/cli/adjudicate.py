"""`notes-tui ledger adjudicate` and `ledger adjudications`: set a note's reference label, and read the trail.

The label a person sets goes into the ledger's append-only adjudications file (ledger.adjudication), never into the
source database; `ledger eval` and `ledger study` use it with `--reference adjudicated`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.cli.ledger_access import _json, _open, _read
from app.errors import UserError
from ledger.report.layout import label_text


def register(lsub: argparse._SubParsersAction, shared: Any) -> None:
    adj = shared.add(lsub, "adjudicate", shared.json, help="set the reference label of a note in a study (or experiment)")
    adj.add_argument("scope", metavar="STUDY", help="the study's name (or an experiment's, for runs outside a study)")
    adj.add_argument("unit", metavar="NOTE", help="the note's id as the ledger shows it (ids joined with | when several)")
    adj.add_argument("label", metavar="LABEL", help="the reference label: an answer value, or the start of one ('(1)')")
    adj.add_argument("--field", help="the answer field (default: the first choice or bool field)")
    adj.add_argument("--comment", metavar="TEXT", help="why (kept with the decision; no note text, please)")
    adj.add_argument("--file", metavar="FILE", help="the experiment file, to read the gold label it replaces "
                                                    "(default: the one the runs were made from)")
    adj.set_defaults(handler=adjudicate)

    lst = shared.add(lsub, "adjudications", shared.json, help="the adjudications of a study, oldest first")
    lst.add_argument("scope", metavar="STUDY", help="the study's name (or an experiment's)")
    lst.add_argument("--field", help="only this answer field")
    lst.set_defaults(handler=adjudications)


def _scope(db: Any, scope: str, field: str | None, ledger_dir: Any):
    """(runs of the scope, the field scored) or UserError naming what exists."""
    from ledger.adjudication import known_scopes, scope_runs
    from ledger.answers import answer_fields

    runs = scope_runs(db, scope)
    if not runs:
        known = ", ".join(known_scopes(db)[:8]) or "none"
        raise UserError(f"no study or experiment named {scope!r} in {ledger_dir} — known: {known}")
    fields = {f.name: f for f in answer_fields(runs[-1]["header"].get("answer_schema")) if f.categorical}
    name = field or next(iter(fields), None)
    if name not in fields:
        raise UserError(f"{scope}: field {name!r} is not a choice or bool field (it has: {', '.join(fields) or 'none'})"
                        " — pass --field NAME")
    return runs, fields[name]


def adjudicate(args: argparse.Namespace) -> int:
    from ledger.adjudication import append, decide, match_label, reference_labels, some_units, unit_answered
    from ledger.runs import load_run

    led = _open(args)
    if args.comment is not None and len(args.comment) > 2000:
        raise UserError(f"--comment is {len(args.comment)} characters — keep it under 2000")

    def look(db):
        runs, spec = _scope(db, args.scope, args.field, led.ledger_dir)
        ids = [r["run_id"] for r in runs]
        if not unit_answered(db, ids, args.unit):
            shown = ", ".join(some_units(db, ids)) or "none"
            raise UserError(f"no note {args.unit!r} among the notes {args.scope} answered (ids like: {shown}) — give "
                            "the id as `ledger study` lists it")
        try:
            label = match_label(spec.labels, args.label)
        except LookupError:
            allowed = ", ".join(label_text(v) for v in spec.labels)
            raise UserError(f"{args.label!r} is not one label of field {spec.name} (labels: {allowed}) — give one "
                            "of them, or the start of one") from None
        earlier = reference_labels(db, args.scope, spec.name)
        return load_run(db, ids[-1]), spec, label, earlier

    run, spec, label, earlier = _read(led, look)
    gold = {} if args.unit in earlier else _gold_of(run, args, spec.name)
    decision = decide(args.scope, spec.name, args.unit, label, gold, earlier, args.comment)
    if decision is None:
        kind = "adjudicated" if args.unit in earlier else "gold"
        print(f"note {args.unit}: {label_text(label)} is already its reference ({kind}) — nothing recorded")
        return 0
    replaces, kind = decision.replaces, decision.replaces_kind
    record = append(led.ledger_dir, decision)
    led.sync(wait_s=2.0)
    if args.json:
        print(_json(record))
    else:
        was = f"was {label_text(replaces)} ({kind})" if kind else "no reference before"
        print(f"note {args.unit}: reference {label_text(label)} for {spec.name} ({was}) — adjudication {record['seq']} by "
              f"{record['who']}, in {led.ledger_dir / 'adjudications.jsonl'}")
    return 0


def _gold_of(run: dict[str, Any], args: argparse.Namespace, field: str) -> dict[str, Any]:
    """{note: its gold label} when the experiment has gold for it; the decision records what it replaced."""
    from app.evaluation import evaluation_for, experiment_of_run, read_gold

    exp, note = experiment_of_run(run, args.file)
    if note:
        print(f"notes-tui: {note}", file=sys.stderr)
    if exp.spec.evaluation is None:
        return {}
    gold = read_gold(exp, evaluation_for(exp, field=field))
    return {args.unit: gold[args.unit]} if args.unit in gold else {}


def adjudications(args: argparse.Namespace) -> int:
    from ledger.adjudication import decisions

    led = _open(args)

    def look(db):
        _scope(db, args.scope, args.field, led.ledger_dir)
        return decisions(db, args.scope, args.field)

    rows = _read(led, look)
    if args.json:
        print(_json(rows))
        return 0
    if not rows:
        print(f"{args.scope}: no adjudications yet (notes-tui ledger adjudicate {args.scope} NOTE LABEL)")
        return 0
    for r in rows:
        was = f"{label_text(r['replaces'])} ({r['replaces_kind']})" if r["replaces_kind"] else "none"
        comment = f"  # {r['comment']}" if r["comment"] else ""
        print(f"{r['seq']:>4}  {r['t']}  {r['who']}  {r['field']}  note {r['unit']}: {label_text(r['label'])} (was {was}){comment}")
    latest = {(r["field"], r["unit"]) for r in rows}
    print(f"{len(rows)} decisions, {len(latest)} notes with an adjudicated label")
    return 0
