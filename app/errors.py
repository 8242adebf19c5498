"""Errors a user can cause and fix. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import json
import re
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Exit statuses of every command: scripts and sbatch wrappers rely on them."""

    OK = 0
    FAILED = 1
    USER_ERROR = 2
    SIGINT = 130
    SIGTERM = 143


class UserError(Exception):
    """A mistake in a file, the environment or a command line: one line that says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    """A mistake in a file the user wrote (an experiment file, the user's settings): the file, the key, the fix."""

    def __init__(self, path: Path | str, key: str, problem: str, fix: str = ""):
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem + (f" — {fix}" if fix else ""))


def key_part(name: str) -> str:
    """A key as the error line shows it: plain names as they are, anything else quoted (a key may hold a newline)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)


class SourceError(UserError):
    """The notes database refused us (wrong password, unknown table, unreachable host)."""


class BackendError(UserError):
    """The model server refused us before any note was sent (unreachable, model not pulled)."""
