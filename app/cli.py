"""`notes-tui` command line: `--run FILE` headless, `check FILE`, `ledger list|rebuild`; the TUI by default."""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USER_ERROR = 2
    SIGINT = 130
    SIGTERM = 143


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one line with the fix, like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(ExitCode.USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="notes-tui",
        description="Run LLMs over clinical notes: experiment files, Ollama or in-process llama.cpp, a run ledger.",
    )
    parser.add_argument("--run", metavar="FILE", help="run an experiment file headless (for sbatch)")
    parser.add_argument("--ledger", metavar="DIR", help="ledger directory (default $NOTES_TUI_LEDGER, "
                        "else $XDG_DATA_HOME/notes-tui)")
    parser.add_argument("--limit", type=_positive, metavar="N", help="answer at most N notes in this run")
    parser.add_argument("--rerun-invalid", action="store_true", help="answer again the notes whose answer was invalid")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="validate an experiment, reach its source and servers, show the first prompt")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--rerun-invalid", action="store_true", help="count invalid answers as to do")
    led = sub.add_parser("ledger", help="query the run ledger")
    led.add_argument("--ledger", metavar="DIR", dest="ledger_sub", help="ledger directory")
    lsub = led.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND", required=True)
    lst = lsub.add_parser("list", help="runs, newest first")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.add_argument("--experiment", help="only runs of this experiment")
    lst.add_argument("--status", help="only runs with this status")
    lsub.add_parser("rebuild", help="recreate ledger.db from the journals alone")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    from app.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.run and args.command:
            raise UserError(f"--run and {args.command} cannot be combined — give one of them")
        if args.run:
            from app.headless import run_headless

            return run_headless(args.run, ledger=args.ledger, limit=args.limit, rerun_invalid=args.rerun_invalid)
        if args.command == "check":
            from app.check import check

            return check(args.file, rerun_invalid=args.rerun_invalid)
        if args.command == "ledger":
            from app.ledger_cli import ledger_command

            return ledger_command(args.ledger_command, args.ledger_sub or args.ledger, args)
        raise UserError("the interactive TUI is not built yet — use notes-tui --run FILE, notes-tui check FILE "
                        "or notes-tui ledger list (see --help)")
    except UserError as exc:
        print(f"notes-tui: error: {exc}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        print("notes-tui: interrupted", file=sys.stderr)
        return ExitCode.SIGINT


if __name__ == "__main__":
    sys.exit(main())
