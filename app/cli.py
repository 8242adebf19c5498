"""`notes-tui` command line: the TUI by default, `--run FILE` headless, and the script commands (check, server,
models, ledger). Every option works where a user types it, before or after the subcommand.

This module stays light: each command imports what it needs when it runs, so `notes-tui --run` and the TUI start
without loading each other's libraries.
"""

from __future__ import annotations

import argparse
import sys

from app.errors import ExitCode

SUPPRESS = argparse.SUPPRESS


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one line with the fix, like every other user error."""

    #: the shared options' defaults, filled in after parsing (see Shared); set on the top parser only
    shared_defaults: dict[str, object] = {}

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(ExitCode.USER_ERROR)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = super().parse_known_args(args, namespace)
        for key, value in self.shared_defaults.items():
            if not hasattr(parsed, key):
                setattr(parsed, key, value)
        return parsed, extra


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


def build_parser() -> argparse.ArgumentParser:
    from app import ledger_cli, models_cli, server_cli, submit_cli, try_cli

    shared = Shared()
    parser = _Parser(
        prog="notes-tui", parents=[shared.places],
        description="Run LLMs over clinical notes: experiment files, Ollama or in-process llama.cpp, a run ledger. "
                    "Without a command: the interactive TUI.",
    )
    parser.add_argument("--run", metavar="FILE", help="run an experiment file headless (for sbatch)")
    parser.add_argument("--limit", type=positive, metavar="N", help="answer at most N notes in this run")
    parser.add_argument("--rerun-invalid", action="store_true", help="answer again the notes whose answer was invalid")
    parser.add_argument("--shard", type=shard, metavar="I/N",
                        help="answer only shard I of N (MySQL only; a job array task finds its own from Slurm)")
    # hidden: who starts a detached run (the TUI) names it first, to follow it before it has written anything
    # dest apart from the ledger commands' RUN argument (run_id), which a run id given to --run must not be taken for
    parser.add_argument("--run-id", type=run_id, metavar="ID", dest="preset_run_id", help=SUPPRESS)
    parser.set_defaults(handler=None)
    parser.shared_defaults = shared.defaults
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = shared.add(sub, "check", help="validate an experiment, reach its source and servers, show the first prompt")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--rerun-invalid", action="store_true", default=SUPPRESS, help="count invalid answers as to do")
    check.set_defaults(handler=_check)
    server_cli.register(sub, shared)
    models_cli.register(sub, shared)
    ledger_cli.register(sub, shared)
    submit_cli.register(sub, shared)
    try_cli.register(sub, shared)
    return parser


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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


def _check(args: argparse.Namespace) -> int:
    from app.check import check

    return check(args.file, rerun_invalid=args.rerun_invalid)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    from app.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.run and args.command:
            raise UserError(f"--run and {args.command} cannot be combined — give one of them")
        if args.run:
            from app.headless import run_headless

            return run_headless(args.run, ledger=args.ledger, limit=args.limit, rerun_invalid=args.rerun_invalid,
                                shard=args.shard, run_id=args.preset_run_id)
        if args.shard:
            raise UserError("--shard goes with --run FILE (or is given to each task by notes-tui submit --array N)")
        if args.preset_run_id:
            raise UserError("--run-id goes with --run FILE")
        if args.handler is not None:
            return args.handler(args)
        from app.tui.launch import run_tui

        return run_tui(workspace=args.workspace, ledger=args.ledger)
    except UserError as exc:
        # one line, whatever the message quotes back (a key with a newline, a multi-line query in a MySQL error)
        print(f"notes-tui: error: {_one_line(str(exc))}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        print("notes-tui: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    except BrokenPipeError:  # `notes-tui ledger list | head`: the reader had enough; end quietly, as cat does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
