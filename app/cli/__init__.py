"""`notes-tui` command line: the parser and `main` — the TUI by default, `--run FILE` headless, and the script
commands, one module each (run, check, try_, server, models, ledger, submit, doctor). Every option works where a
user types it, before or after the subcommand (options.Shared).

This package stays light: each command imports what it needs when it runs, so `notes-tui --run` and the TUI start
without loading each other's libraries. Only `main` here launches the TUI; the command modules know no screen.
"""

from __future__ import annotations

import argparse
import sys

from app.cli.options import Shared, positive, run_id, shard
from app.errors import ExitCode


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


def build_parser() -> argparse.ArgumentParser:
    from app.cli import doctor, ledger, models, server, submit, try_

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
    parser.add_argument("--run-id", type=run_id, metavar="ID", dest="preset_run_id", help=argparse.SUPPRESS)
    parser.set_defaults(handler=None)
    parser.shared_defaults = shared.defaults
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = shared.add(sub, "check", help="validate an experiment, reach its source and servers, show the first prompt")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--rerun-invalid", action="store_true", default=argparse.SUPPRESS, help="count invalid answers as to do")
    check.set_defaults(handler=_check)
    for command in (server, models, ledger, submit, try_, doctor):
        command.register(sub, shared)
    return parser


def _check(args: argparse.Namespace) -> int:
    from app.cli.check import check

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
            from app.cli.run import run_headless

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
