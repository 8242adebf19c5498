"""`notes-tui try FILE [-n N] [--random SEED] [--id ID] [--json]`: a few notes through the real model, shown in full
(note, raw reply, answer or validation error). Writes nothing."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli.options import Shared
    from app.tryout import TryReport


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    from app.cli.options import positive

    cmd = shared.add(sub, "try", shared.json,
                     help="send a few notes to the model and show note, raw reply and validated answer (writes nothing)")
    cmd.add_argument("file", metavar="FILE")
    cmd.add_argument("-n", type=positive, metavar="N", default=None, help="how many notes (default 5)")
    cmd.add_argument("--random", type=_seed, metavar="SEED", default=None,
                     help="a random sample of the experiment's notes, the same for the same SEED")
    cmd.add_argument("--id", metavar="ID", default=None, help="the one note with this id (as the ledger shows it)")
    cmd.set_defaults(handler=try_command)


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def try_command(args: argparse.Namespace) -> int:
    from app.errors import UserError
    from app.experiment import load_experiment
    from app.tryout import DEFAULT_N, try_notes

    if args.id is not None and (args.n is not None or args.random is not None):
        raise UserError("--id tries one note; leave out -n and --random (or leave out --id)")
    exp = load_experiment(args.file)
    for warning in exp.warnings:
        print(f"notes-tui: {warning}", file=sys.stderr)
    report = try_notes(exp, n=args.n or DEFAULT_N, seed=args.random, unit_id=args.id)
    if args.json:
        import json
        from dataclasses import asdict

        print(json.dumps(asdict(report), ensure_ascii=False))
    else:
        print_report(report)
    return 0


def print_report(report: TryReport, out=None) -> None:
    from app.tryout.report import report_lines

    print("\n".join(report_lines(report)), file=out or sys.stdout)
