"""Waiting for a condition instead of sleeping for a fixed time (the TUI's Pilot tests have tuikit.until, which lets
the app's event loop run meanwhile)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str | None = None, every: float = 0.05) -> Any:
    """The first truthy value of `condition()`, checked every `every` s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(every)
