"""`notes-tui ledger …`: thin wrappers over the ledger package, which knows nothing of the app."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli import Shared

Handler = Callable[[argparse.Namespace], int]


def _busy_is_one_line(handler: Handler) -> Handler:
    """An index held by another process is the world's doing, not a bug: one line, exit 2, like a user's mistake."""

    def run(args: argparse.Namespace) -> int:
        from app.errors import UserError
        from ledger.index import LedgerBusy

        try:
            return handler(args)
        except LedgerBusy as exc:
            raise UserError(str(exc)) from None

    return run


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    led = shared.add(sub, "ledger", shared.json, help="query the run ledger")
    lsub = led.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True, parser_class=type(led))
    lst = shared.add(lsub, "list", shared.json, help="runs, newest first")
    lst.add_argument("--experiment", help="only runs of this experiment")
    lst.add_argument("--status", help="only runs with this status")
    lst.set_defaults(handler=_busy_is_one_line(list_runs))
    shared.add(lsub, "rebuild", help="recreate ledger.db from the journals alone").set_defaults(
        handler=_busy_is_one_line(rebuild))


def _open(args: argparse.Namespace):
    from ledger import Ledger, resolve_ledger_dir

    return Ledger(resolve_ledger_dir(args.ledger))


def list_runs(args: argparse.Namespace) -> int:
    from ledger.format import format_runs_table, runs_to_json

    runs = _open(args).list_runs(experiment=args.experiment, status=args.status)
    print(runs_to_json(runs) if args.json else format_runs_table(runs))
    return 0


def rebuild(args: argparse.Namespace) -> int:
    led = _open(args)
    led.rebuild()
    print(f"rebuilt {led.ledger_dir / 'ledger.db'} from {led.ledger_dir / 'journal'}")
    return 0
