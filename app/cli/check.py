"""`notes-tui check FILE`: is the experiment ready to run? Prints app.tryout.check's lines, warnings to stderr."""

from __future__ import annotations

import sys


def check(file: str, rerun_invalid: bool = False) -> int:
    from app.tryout.check import check_lines

    for line, warning in check_lines(file, rerun_invalid):
        if warning:
            print(f"notes-tui: {line}", file=sys.stderr)
        else:
            print(line)
    return 0
