"""UTC timestamps as the journal writes them, and tolerant parsing for what the app puts in headers."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now_iso() -> str:
    """e.g. 2024-05-01T12:00:00.123Z; fixed width, so these strings also sort by time."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse_iso(value: object) -> datetime | None:
    """Aware datetime, or None for anything unparseable (headers come from the app, we never crash on them)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    # A naive time from the app is taken as UTC, like every time the ledger writes.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age_s(value: object, now: datetime | None = None) -> float | None:
    parsed = parse_iso(value)
    if parsed is None:
        return None
    return ((now or datetime.now(UTC)) - parsed).total_seconds()
