"""The options every command shares and the argparse types of the command line."""

from __future__ import annotations

import argparse

SUPPRESS = argparse.SUPPRESS


class Shared:
    """Options accepted on every level of the command tree.

    They are declared with default=SUPPRESS everywhere, so a subparser that does not see the option leaves alone what
    an earlier level parsed (`notes-tui --ledger D ledger list`, `notes-tui ledger --ledger D list` and `notes-tui
    ledger list --ledger D` mean the same), and get their defaults after parsing. Not through set_defaults: the
    action objects are shared between the parsers (parents=), and set_defaults on one parser rewrites their default
    for every parser, which made each subparser reset what the level above had parsed."""

    def __init__(self) -> None:
        self.places = argparse.ArgumentParser(add_help=False)
        self.places.add_argument("--ledger", metavar="DIR", default=SUPPRESS,
                                 help="ledger directory (default $NOTES_TUI_LEDGER, else $XDG_DATA_HOME/notes-tui)")
        self.places.add_argument("--workspace", metavar="DIR", default=SUPPRESS,
                                 help="the workspace whose experiments/ are listed (default: the current directory)")
        self.json = argparse.ArgumentParser(add_help=False)
        self.json.add_argument("--json", action="store_true", default=SUPPRESS, help="print one JSON document")
        self.host = argparse.ArgumentParser(add_help=False)
        self.host.add_argument("--host", metavar="URL", default=SUPPRESS,
                               help="the Ollama server (default $OLLAMA_HOST, else the only known server)")
        self.defaults = {"ledger": None, "workspace": None, "json": False, "host": None}

    def add(self, sub: argparse._SubParsersAction, name: str, *extra: argparse.ArgumentParser,
            **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[self.places, *extra], **kwargs)


def _whole(text: str, least: int, said: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(said)
    return value


def positive(text: str) -> int:
    return _whole(text, 1, "must be at least 1")


def non_negative(text: str) -> int:
    return _whole(text, 0, "must be 0 or more")


def shard(text: str) -> tuple[int, int]:
    from app.cluster.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_id(text: str) -> str:
    from ledger.ids import is_run_id

    if not is_run_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (26 capitals and digits, as notes-tui makes them)")
    return text


def idle(text: str) -> str:
    """A server job's idle limit as typed (`45m`, `2h`, `0` for never); checked here, converted where it is used."""
    from app.settings.user import IDLE_FIX, idle_seconds

    try:
        idle_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration — {IDLE_FIX}") from None
    return text
