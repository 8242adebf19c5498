"""What every `notes-tui ledger …` command shares: opening the ledger, one read with the ledger's lookup errors
as the user's one line, and writing the output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.errors import UserError


def _open(args: argparse.Namespace):
    from ledger import Ledger, resolve_ledger_dir

    return Ledger(resolve_ledger_dir(args.ledger))


def _index_is_a_file(led) -> None:
    if led.db_path.exists() and not led.db_path.is_file():
        raise UserError(f"{led.db_path} is not a file (a directory?) — it is the ledger's index: move it away, and "
                        "notes-tui ledger rebuild makes it again from the journals")


def _read(led, fn):
    """One import, then fn(db) on one connection; the ledger's lookup errors become the user's one line."""
    from ledger.index import AmbiguousRun, RunNotFound
    from ledger.runs import MixedRuns

    _index_is_a_file(led)

    try:
        result = led.read(fn, None)
    except RunNotFound as exc:
        raise UserError(f"no run id starts with {exc.prefix!r} in {led.ledger_dir} — see notes-tui ledger list") from None
    except AmbiguousRun as exc:
        more = "…" if len(exc.candidates) > 5 else ""
        raise UserError(f"run id prefix {exc.prefix!r} matches several runs ({', '.join(exc.candidates[:5])}{more}) — "
                        "give more characters") from None
    except MixedRuns as exc:
        raise UserError(f"{exc} — a report or eval covers runs of one experiment asked the same way; report them "
                        "separately, or compare them with notes-tui ledger compare") from None
    if result is None:
        raise UserError(f"no runs recorded in {led.ledger_dir} — run an experiment first (notes-tui --run FILE)")
    return result


def _resolve_all(db, prefixes: list[str]) -> list[str]:
    from ledger.index import resolve_run

    return list(dict.fromkeys(resolve_run(db, p) for p in prefixes))


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"-o {output}: cannot write it ({exc.strerror or exc}) — choose a writable path") from None
    print(f"wrote {output}", file=sys.stderr)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
