"""A tiny synchronous event bus. A subscriber that raises is reported once and never stops the run (scrapy's rule)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

Subscriber = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._broken: set[int] = set()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Any) -> None:
        for sub in self._subscribers:
            try:
                sub(event)
            except Exception:  # noqa: BLE001 - a broken subscriber must not lose the run
                if id(sub) not in self._broken:
                    self._broken.add(id(sub))
                    print(f"notes-tui: a subscriber failed on {type(event).__name__}; the run goes on:",
                          file=sys.stderr)
                    traceback.print_exc(file=sys.stderr)
