"""`notes-tui doctor [FILE…] [--json]`: the whole setup checked at once (app.doctor), one line a check — ok, warn or
fail, what was found and the fix. Exit 0 when nothing failed (warnings included), 1 when something did."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli.options import Shared


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    doctor = shared.add(sub, "doctor", shared.json,
                        help="check the setup: Slurm, user config and profiles, models dir and quota, .env, MySQL, "
                             "ledger dir, servers, terminal, embedded model — one line each, with the fix")
    doctor.add_argument("files", nargs="*", metavar="FILE",
                        help="experiment files whose .env, MySQL and servers to check (default: the workspace's "
                             "experiments/*.toml)")
    doctor.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from app.doctor.checks import Setup, checks_for
    from app.doctor.findings import failed, run_checks, summary
    from app.errors import ExitCode, UserError
    from app.settings.files import config_path
    from ledger import resolve_ledger_dir

    workspace = Path(args.workspace).expanduser() if args.workspace else Path.cwd()
    if not workspace.is_dir():
        raise UserError(f"--workspace: {workspace} is not a directory — give the folder that holds experiments/")
    workspace = workspace.resolve()
    files = [Path(f).expanduser() for f in args.files]
    if not files:
        files = sorted((workspace / "experiments").glob("*.toml"))
    environ = dict(os.environ)
    setup = Setup(workspace=workspace, config_path=config_path(environ), ledger_dir=resolve_ledger_dir(args.ledger),
                  environ=environ, files=files, given=bool(args.files), stdout_tty=sys.stdout.isatty())
    findings = run_checks(checks_for(setup))
    if args.json:
        print(json.dumps([f.as_json() for f in findings], indent=2))
    else:
        print("\n".join(f.line() for f in findings))
        print(summary(findings))
    return ExitCode.FAILED if failed(findings) else ExitCode.OK
