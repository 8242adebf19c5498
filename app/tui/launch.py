"""`notes-tui` with no command: build the app from what the user gave, run it, give its exit status."""

from __future__ import annotations

import os
import sys

from app.errors import ExitCode, UserError


def run_tui(workspace: str | None, ledger: str | None) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UserError("the TUI needs a terminal — run notes-tui in one, or use the commands for scripts "
                        "(notes-tui server list, models list, --run FILE; see --help)")
    _check_terminal()
    _size_from_the_terminal()
    from app.context import load_context
    from app.tui.app import make_app
    from ledger import resolve_ledger_dir

    app = make_app(load_context(workspace), resolve_ledger_dir(ledger))
    app.run()
    code = app.return_code or 0
    return code if code >= 128 else (ExitCode.OK if code == 0 else ExitCode.FAILED)  # 143 / 129: by a signal


def _size_from_the_terminal() -> None:
    """Textual reads the screen size with shutil.get_terminal_size, which prefers $COLUMNS and $LINES to the
    terminal: exported (by a shell's rc file, or by GNU readline in a parent process) they pin the app to one size,
    and a resized window is then drawn at the old size or not at all. The terminal knows its size; ask it."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


def _check_terminal() -> None:
    """A TERM the login node does not know makes curses-style apps fail in odd ways: say how to fix it."""
    term = os.environ.get("TERM", "")
    if not term or term == "dumb":
        raise UserError(f"TERM is {term or 'unset'}: the TUI needs a real terminal — try: export TERM=xterm-256color")
