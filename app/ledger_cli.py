"""`notes-tui ledger …`: thin wrappers over the ledger package, which knows nothing of the app."""

from __future__ import annotations

import argparse

from ledger import Ledger, resolve_ledger_dir
from ledger.format import format_runs_table, runs_to_json


def ledger_command(command: str, ledger: str | None, args: argparse.Namespace) -> int:
    led = Ledger(resolve_ledger_dir(ledger))
    if command == "rebuild":
        led.rebuild()
        print(f"rebuilt {led.ledger_dir / 'ledger.db'} from {led.ledger_dir / 'journal'}")
        return 0
    runs = led.list_runs(experiment=args.experiment, status=args.status)
    print(runs_to_json(runs) if args.json else format_runs_table(runs))
    return 0
