"""Errors a user can cause and fix. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

from enum import IntEnum


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


class SourceError(UserError):
    """The notes database refused us (wrong password, unknown table, unreachable host)."""


class BackendError(UserError):
    """The model server refused us before any note was sent (unreachable, model not pulled)."""
