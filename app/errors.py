"""Errors a user can cause and fix. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a file, the environment or a command line: one line that says what is wrong and how to fix it."""

    exit_code = 2


class SourceError(UserError):
    """The notes database refused us (wrong password, unknown table, unreachable host)."""


class BackendError(UserError):
    """The model server refused us before any note was sent (unreachable, model not pulled)."""
