"""Loading the model where a server does not hold it in memory, before any note is sent there: Ollama loads on the
first request (seconds for 8B, minutes for 70B), and a note that waits for it has a load's latency, not the model's.
A run (app.engine.runner) and a try (app.tryout) both load first; what it took goes in the run's record."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.backends.base import Backend
from app.engine.events import LOAD_FAILED


async def load_model(backend: Backend, hosts: tuple[str, ...]) -> dict[str, Any]:
    """Load on every one of `hosts` at once. Returns {"hosts", "seconds", "outcome": "loaded" | "load failed: …"}
    and, where a host refused, "failed": {host: error}. Never raises for a refusal: the notes meet it themselves."""
    began = time.monotonic()
    outcomes = await asyncio.gather(*(backend.load(h) for h in hosts), return_exceptions=True)
    failed = {h: describe(o) for h, o in zip(hosts, outcomes) if isinstance(o, Exception)}
    record: dict[str, Any] = {"hosts": list(hosts), "seconds": round(time.monotonic() - began, 1),
                              "outcome": f"{LOAD_FAILED}: {next(iter(failed.values()))}" if len(failed) == len(hosts)
                              else "loaded"}
    if failed:
        record["failed"] = failed
    return record


def describe(exc: BaseException) -> str:
    """An error in one line: its kind and its first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}"[:300]
