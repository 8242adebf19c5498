"""`notes-tui ledger …`: thin wrappers over the ledger package, which knows nothing of the app.

Each command imports the index once (one lease, one scan of the journals) and then reads it on one connection. A
mistake (an unknown or ambiguous run id, a bad date or format, runs that cannot be reported together) is a
UserError: one line with the fix, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.cli.adjudicate import register as register_adjudication
from app.cli.ledger_access import _emit, _index_is_a_file, _json, _open, _read, _resolve_all
from app.cli.options import non_negative, positive
from app.errors import ExitCode, UserError

FORMATS = ("md", "html", "csv", "json")  # ledger.report.FORMATS; repeated so the parser need not import the ledger

Handler = Callable[[argparse.Namespace], int]
REFERENCES = ("gold", "adjudicated", "both")
REFERENCE_HELP = ("score against gold (default), adjudicated (gold with the adjudicated labels in place: notes-tui "
                  "ledger adjudicate) or both, one after the other")


def _busy_is_one_line(handler: Handler) -> Handler:
    """An index held by another process is the world's doing, not a bug: one line, exit 2, like a user's mistake."""

    def run(args: argparse.Namespace) -> int:
        from ledger.index import LedgerBusy

        try:
            return handler(args)
        except LedgerBusy as exc:
            raise UserError(str(exc)) from None

    return run


def register(sub: argparse._SubParsersAction, shared: Any) -> None:
    """`shared` is app.cli.options.Shared."""
    led = shared.add(sub, "ledger", shared.json, help="query the run ledger")
    lsub = led.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True, parser_class=type(led))

    lst = shared.add(lsub, "list", shared.json, help="runs, newest first")
    lst.add_argument("--experiment", help="only runs whose experiment's name contains this (any case)")
    lst.add_argument("--status", help="only runs with this status")
    lst.add_argument("--model", help="only runs whose model's name contains this (any case)")
    lst.add_argument("--exact", action="store_true",
                     help="--experiment and --model match the whole name (a model without a tag: every tag of it)")
    lst.add_argument("--since", metavar="DATE", help="only runs started since DATE (2024-05-01, an ISO time, or 7d, 12h)")
    lst.set_defaults(handler=list_runs)

    show = shared.add(lsub, "show", shared.json, help="everything the ledger holds about one run")
    show.add_argument("run_id", metavar="RUN", help="a run id, or a unique prefix of one")
    show.set_defaults(handler=show_run)

    rep = shared.add(lsub, "report", shared.json, help="audit report of one run, or several runs of one experiment")
    rep.add_argument("runs", metavar="RUN", nargs="+", help="run ids or unique prefixes")
    rep.add_argument("--format", choices=FORMATS, default=None, help="md (default), html, csv or json")
    rep.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: standard output)")
    rep.set_defaults(handler=report)

    cmp_ = shared.add(lsub, "compare", shared.json, help="agreement between runs (Cohen's kappa, confusion matrix)")
    cmp_.add_argument("runs", metavar="RUN", nargs="+", help="two or more run ids or unique prefixes")
    cmp_.set_defaults(handler=compare)

    ev = shared.add(lsub, "eval", shared.json, help="score runs against the gold labels of [evaluation]")
    ev.add_argument("runs", metavar="RUN", nargs="+", help="a run id (or several runs of one experiment)")
    ev.add_argument("--file", metavar="FILE", help="the experiment file (default: the one the run was made from)")
    gold = ev.add_mutually_exclusive_group()
    gold.add_argument("--gold-column", metavar="COLUMN", help="gold labels from this column of the source")
    gold.add_argument("--gold-query", metavar="SQL", help="gold labels from this SELECT (id columns and one label)")
    ev.add_argument("--map", metavar="GOLD=ANSWER", action="append", default=[],
                    help="map a gold value to an answer value (repeatable; replaces [evaluation].map)")
    ev.add_argument("--field", help="the answer field to score (default: the only choice or bool field)")
    ev.add_argument("--reference", choices=REFERENCES, default="gold", help=REFERENCE_HELP)
    ev.set_defaults(handler=evaluate)

    st = shared.add(lsub, "study", shared.json, help="a study's cells against gold, their stability, the notes they differ on")
    st.add_argument("name", metavar="STUDY", help="the study's name (the experiment file's name)")
    st.add_argument("--file", metavar="FILE", help="the experiment file (default: the one the study was run from)")
    st.add_argument("--field", help="the answer field to score (default: the first choice or bool field)")
    st.add_argument("--reference", choices=REFERENCES, default="gold", help=REFERENCE_HELP)
    st.add_argument("--different", action="store_true", help="--json: only notes where cells disagree or differ from gold")
    st.add_argument("--offset", type=non_negative, default=0, metavar="N", help="--json: notes from the Nth on")
    st.add_argument("--limit", type=positive, default=None, metavar="N",
                    help="notes listed (default: all with --json and in an md or html report, 20 disagreements in the "
                         "terminal)")
    st.add_argument("--bootstrap", type=non_negative, default=1000, metavar="N",
                    help="resamples for the bootstrap intervals (default 1000; 0: none)")
    st.add_argument("--format", choices=FORMATS, default=None,
                    help="a report instead of the terminal summary: md; html (one self-contained file, with the models, "
                         "the exact prompts and their hashes, and the TRIPOD-LLM / MI-CLEAR-LLM map); csv (a row per "
                         "cell and reference, the cell table's figures under fixed column names); json (as --json)")
    st.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (default: standard output)")
    st.set_defaults(handler=study)

    ver = shared.add(lsub, "verify", shared.json, help="check the journals and the chain of sealed runs for tampering")
    ver.add_argument("--head", metavar="HASH", help="also check the ledger against a head hash kept elsewhere")
    ver.set_defaults(handler=verify)

    rerun = shared.add(lsub, "rerun", help="write a run's experiment file back, to repeat the run exactly")
    rerun.add_argument("run_id", metavar="RUN", help="a run id, or a unique prefix of one")
    rerun.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (default: standard output)")
    rerun.set_defaults(handler=rerun_toml)

    shared.add(lsub, "rebuild", help="recreate ledger.db from the journals alone").set_defaults(handler=rebuild)
    register_adjudication(lsub, shared)
    for parser in lsub.choices.values():  # every ledger command: an index held by another process is one line
        parser.set_defaults(handler=_busy_is_one_line(parser.get_default("handler")))


def list_runs(args: argparse.Namespace) -> int:
    from ledger.clock import parse_since
    from ledger.report.terminal import format_runs_table, runs_to_json

    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError:
            raise UserError(f"--since {args.since!r} is not a date — write 2024-05-01, 2024-05-01T10:30 or 7d") from None
    led = _open(args)
    _index_is_a_file(led)
    runs = led.list_runs(experiment=args.experiment, status=args.status, model=args.model, since=since,
                         partial=not args.exact)
    if not runs and any(v is not None for v in (args.experiment, args.model, args.status, since)):
        from ledger.names import nothing_matched

        why = nothing_matched(led, experiment=args.experiment, model=args.model, status=args.status, since=since,
                              partial=not args.exact)
        print(runs_to_json(runs) if args.json else why)
        if args.json:  # the JSON stays a list for scripts; the reason goes to the person
            print(why, file=sys.stderr)
        return 0
    print(runs_to_json(runs) if args.json else format_runs_table(runs))
    return 0


def show_run(args: argparse.Namespace) -> int:
    from ledger.index import resolve_run
    from ledger.report.terminal import format_show
    from ledger.show import run_details

    run = _read(_open(args), lambda db: run_details(db, resolve_run(db, args.run_id)))
    print(_json(run) if args.json else format_show(run))
    return 0


def report(args: argparse.Namespace) -> int:
    from ledger.report import render
    from ledger.report.data import build_report

    fmt = args.format or ("json" if args.json else "md")
    data = _read(_open(args), lambda db: build_report(db, _resolve_all(db, args.runs)))
    _emit(render(data, fmt), args.output)
    return 0


def compare(args: argparse.Namespace) -> int:
    from ledger.compare import compare_runs
    from ledger.report.terminal import format_compare

    def query(db):
        ids = _resolve_all(db, args.runs)
        if len(ids) < 2:
            raise UserError("compare needs two different runs — give RUN_A RUN_B (and more if you like)")
        return compare_runs(db, ids)

    result = _read(_open(args), query)
    print(_json(result) if args.json else format_compare(result))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from app.evaluation import evaluation_for, experiment_of_run, gold_info, read_gold
    from ledger.adjudication import reference
    from ledger.evals import write_eval
    from ledger.evaluate import FieldNotScorable, evaluate_runs
    from ledger.report.terminal import format_eval
    from ledger.runs import load_run

    led = _open(args)

    def runs(db):
        ids = _resolve_all(db, args.runs)
        return ids, load_run(db, ids[0])

    ids, first = _read(led, runs)
    exp, note = experiment_of_run(first, args.file)
    if note:
        print(f"notes-tui: {note}", file=sys.stderr)
    ev = evaluation_for(exp, gold_column=args.gold_column, gold_query=args.gold_query, map_items=args.map,
                        field=args.field)
    gold = read_gold(exp, ev)
    scope = first.get("study") or first["experiment"]
    results = {}
    for kind in _kinds(args.reference):
        def scored(db, kind=kind):
            labels, ref = reference(db, scope, ev.field, gold, kind, gold_info(ev))
            result = evaluate_runs(db, ids, labels, ev.field, gold_info(ev))
            result["reference"] = ref
            return result

        try:
            result = _read(led, scored)
        except FieldNotScorable as exc:
            raise UserError(f"field {exc.field!r} is not a choice or bool field of run {ids[0]} (it has: "
                            f"{', '.join(exc.available) or 'none'}) — pass --field NAME") from None
        try:
            result["eval_id"] = write_eval(led.ledger_dir, result)
        except OSError as exc:
            raise UserError(f"cannot store the eval in {led.ledger_dir} ({exc.strerror or exc}) — the ledger must be "
                            "writable: pass --ledger DIR or fix its permissions") from None
        results[kind] = result
    led.sync(wait_s=2.0)
    if args.json:
        print(_json(results if len(results) > 1 else results[args.reference]))
    else:
        print("\n\n".join(format_eval(r) for r in results.values()))
    return 0


def _kinds(reference: str) -> list[str]:
    return ["gold", "adjudicated"] if reference == "both" else [reference]


def study(args: argparse.Namespace) -> int:
    from app.evaluation import evaluation_for, experiment_of_run, gold_info, read_gold
    from ledger.adjudication import reference
    from ledger.evaluate import FieldNotScorable
    from ledger.report import render_study
    from ledger.report.study_data import study_methods
    from ledger.report.terminal import format_study
    from ledger.runs import load_run
    from ledger.study import StudyNotFound, load_cells, study_report

    if args.json and args.format not in (None, "json"):
        raise UserError(f"--json and --format {args.format} cannot be combined — give one of them "
                        "(--format json is --json)")
    args.json = args.json or args.format == "json"
    led = _open(args)

    def latest_run(db):
        try:
            cells = load_cells(db, args.name)
        except StudyNotFound as exc:
            known = ", ".join(exc.known[:8]) or "none yet (run an experiment file with a [study] section)"
            raise UserError(f"no study named {args.name!r} in {led.ledger_dir} — studies there: {known}") from None
        return load_run(db, max((c["runs"][-1] for c in cells), key=lambda r: r["started_at"] or "")["run_id"])

    run = _read(led, latest_run)
    exp, note = experiment_of_run(run, args.file)
    if note:
        print(f"notes-tui: {note}", file=sys.stderr)
    ev = evaluation_for(exp, field=args.field)
    gold = read_gold(exp, ev)
    terminal = not (args.json or args.format)
    # the terminal lists the first --limit (20) notes that differ: only those become rows (at 100,000 notes every row
    # costs 0.35 s and 60 MB more); --json pages with --offset/--limit; md/html/csv list every one that differs
    limit = args.limit if args.json else (args.limit or 20) if terminal else None
    different_only = args.different or terminal
    results = {}
    for kind in _kinds(args.reference):
        def report(db, kind=kind):
            labels, ref = reference(db, args.name, ev.field, gold, kind, gold_info(ev))
            result = study_report(db, args.name, labels, gold_info(ev), ev.field, reps=args.bootstrap,
                                  offset=args.offset if args.json else 0, limit=limit, different_only=different_only)
            result["reference"] = ref
            if args.format in ("md", "html"):  # a report also says how the labels were produced (the run headers)
                result["methods"] = study_methods(db, result["cells"])
            return result

        try:
            results[kind] = _read(led, report)
        except FieldNotScorable as exc:
            raise UserError(f"field {exc.field!r} is not a choice or bool field of study {args.name} (it has: "
                            f"{', '.join(exc.available) or 'none'}) — pass --field NAME") from None
    if args.json:
        _emit(_json(results if len(results) > 1 else results[args.reference]), args.output)
    elif args.format:  # md, html, csv: one report, the figures against each reference and the methods once
        _emit(render_study(list(results.values()), args.format, args.limit), args.output)
    else:
        _emit("\n\n".join(format_study(r, args.limit or 20) for r in results.values()), args.output)
    return 0


def verify(args: argparse.Namespace) -> int:
    from ledger.report.terminal import format_verify
    from ledger.verify import MIN_HEAD_CHARS, verify_ledger

    head = args.head
    if head is not None and (len(head.strip()) < MIN_HEAD_CHARS or any(c not in "0123456789abcdef"
                                                                        for c in head.strip().lower())):
        raise UserError(f"--head {head!r} is not a head hash — give the 64 hex digits a report printed "
                        f"(at least {MIN_HEAD_CHARS})")
    led = _open(args)
    if not led.ledger_dir.is_dir():
        raise UserError(f"no ledger at {led.ledger_dir} — pass --ledger DIR or set NOTES_TUI_LEDGER")
    _index_is_a_file(led)
    try:
        led.sync(wait_s=5.0)  # seal what finished, so the head printed is today's
    except OSError as exc:  # a copy on a read-only mount: verify reads the files, it needs no index
        print(f"notes-tui: the ledger at {led.ledger_dir} cannot be written ({exc.strerror or exc}): verifying its "
              "files as they are, without sealing what finished since", file=sys.stderr)
    indexed = led.read(lambda db: db.conn.execute("select seq, line_hash from chain order by seq").fetchall(), [])
    result = verify_ledger(led.ledger_dir, head=head, indexed=indexed)
    print(_json(result.as_dict()) if args.json else format_verify(result))
    return ExitCode.OK if result.ok else ExitCode.FAILED


def rerun_toml(args: argparse.Namespace) -> int:
    import hashlib

    from ledger.index import resolve_run
    from ledger.runs import load_run

    run = _read(_open(args), lambda db: load_run(db, resolve_run(db, args.run_id)))
    text = run.get("toml_text") or ""
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != run.get("toml_sha256"):
        raise UserError(f"run {run['run_id']}: its recorded TOML does not match its sha256 — the ledger was altered; "
                        "run notes-tui ledger verify")
    if args.output is not None and Path(args.output).exists():
        raise UserError(f"-o {args.output}: the file exists — choose a new name, or remove it first")
    _emit(text, args.output)
    where = (run.get("header") or {}).get("toml_path")
    print(f"notes-tui: run {run['run_id']} was made from {where or '?'} (sha256 {run['toml_sha256'][:12]}); relative "
          f"paths in it are relative to the file's folder. Its experiment {run['experiment']!r} already has answers "
          "in its results table, so a run of this file answers only what is left: to repeat it from scratch, change "
          "`name` or [results].table.", file=sys.stderr)
    return 0


def rebuild(args: argparse.Namespace) -> int:
    led = _open(args)
    led.rebuild()
    print(f"rebuilt {led.ledger_dir / 'ledger.db'} from {led.ledger_dir / 'journal'}")
    return 0
