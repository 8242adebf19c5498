"""UTC timestamps as the journal writes them, tolerant parsing for what the app puts in headers, and durations as
people read them (the one formatter every listing, report and screen uses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now_iso() -> str:
    """e.g. 2024-05-01T12:00:00.123Z; fixed width, so these strings also sort by time."""
    return iso_utc(datetime.now(UTC))


def iso_utc(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


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


_AGO = {"d": 86400, "h": 3600, "m": 60}


def parse_since(text: str, now: datetime | None = None) -> str:
    """`2024-05-01`, `2024-05-01T10:30`, an ISO time with a zone, or `7d` / `12h` / `30m` ago, as the fixed-width UTC
    string the ledger stores (so it compares as text). A time without a zone is UTC. ValueError when unreadable."""
    value = text.strip()
    if len(value) >= 2 and value[:-1].isdigit() and value[-1] in _AGO:
        at = (now or datetime.now(UTC)) - timedelta(seconds=int(value[:-1]) * _AGO[value[-1]])
    else:
        at = parse_iso(value)
        if at is None:
            raise ValueError(text)
    return iso_utc(at)


def format_duration(seconds: float | None) -> str:
    """45s, 3m07s, 2h05m, 3d04h; "-" when unknown."""
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
