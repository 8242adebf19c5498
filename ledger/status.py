"""The status shown to users. A run only records `running` until its close record; whether it is still running
or crashed is decided at read time from the process table or the age of its last record, and never stored (it
changes without any journal changing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .clock import age_s, parse_iso
from .procinfo import same_process_alive, this_host

# Runs on other hosts cannot be probed; a run that wrote nothing for this long is taken as crashed. Generous,
# because the app only writes a record per batch and a batch on a slow model can take minutes.
STALE_AFTER_S = 15 * 60


def display_status(row: dict[str, Any], host: str | None = None, now: datetime | None = None) -> str:
    recorded = row.get("recorded_status") or "running"
    if recorded != "running":
        return recorded
    if row.get("hostname") == (host or this_host()):
        return "running" if same_process_alive(row.get("pid"), row.get("pid_start")) else "crashed"
    age = age_s(row.get("last_seen_at"), now)
    return "crashed" if age is None or age > STALE_AFTER_S else "running"


def duration_s(row: dict[str, Any], status: str, now: datetime | None = None) -> float | None:
    """Closed runs: start to close. Running: start to now. Crashed: start to the last record it wrote."""
    start = parse_iso(row.get("started_at"))
    if start is None:
        return None
    if status == "running":
        end = now or datetime.now(start.tzinfo)
    else:
        end = parse_iso(row.get("ended_at")) or parse_iso(row.get("last_seen_at"))
    if end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)
