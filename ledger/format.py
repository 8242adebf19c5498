"""Text and JSON renderings of `Ledger.list_runs()` for `notes-tui ledger list`."""

from __future__ import annotations

import json
from typing import Any

COLUMNS = ("id", "experiment", "model", "status", "done/total", "valid", "invalid", "empty", "truncated", "errors",
           "started", "duration")  # fmt: skip
RIGHT_ALIGNED = {"done/total", "valid", "invalid", "empty", "truncated", "errors", "duration"}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _started(value: Any) -> str:
    # Stored as UTC ISO-8601; minutes are enough in a listing, and the Z keeps it honest about the zone.
    if not isinstance(value, str) or len(value) < 16:
        return _num(value)
    return value[:10] + " " + value[11:16] + "Z"


def _cells(run: dict[str, Any]) -> list[str]:
    counts = run.get("counts") or {}
    return [
        str(run.get("run_id") or ""),
        str(run.get("experiment") or "-"),
        str(run.get("model") or "-"),
        str(run.get("status") or "-"),
        f"{_num(counts.get('done'))}/{_num(counts.get('total'))}",
        _num(counts.get("valid")),
        _num(counts.get("invalid")),
        _num(counts.get("empty")),
        _num(counts.get("truncated")),
        _num(counts.get("errors")),
        _started(run.get("started_at")),
        format_duration(run.get("duration_s")),
    ]


def format_runs_table(runs: list[dict[str, Any]]) -> str:
    """Aligned plain-text table, header first; a one-line message when there are no runs."""
    if not runs:
        return "no runs recorded"
    rows = [list(COLUMNS)] + [_cells(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if name in RIGHT_ALIGNED else cell.ljust(width) for name, cell, width in zip(COLUMNS, row, widths)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def runs_to_json(runs: list[dict[str, Any]]) -> str:
    return json.dumps(runs, indent=2, ensure_ascii=False, default=str)
