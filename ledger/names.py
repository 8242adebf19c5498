"""When a filter of the runs matches nothing: which of its parts matches nothing on its own, and the names the ledger
does hold, closest to what was typed first. `notes-tui ledger list` and the Ledger screen say the same line."""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .index import Ledger

STATUSES = ("completed", "running", "interrupted", "failed", "crashed")  # as list_runs(status=…) takes them
SHOWN = 5  # names listed; the rest are counted


def closest_first(typed: str, names: list[str]) -> list[str]:
    """`names` ordered by likeness to `typed` (any case); equally alike names keep their order."""
    key = typed.lower()
    return sorted(names, key=lambda name: -SequenceMatcher(None, key, name.lower()).ratio())


def known(plural: str, typed: str, names: list[str]) -> str:
    """"the experiments here, closest first: pna-a, pna-b (and 3 more)"."""
    if not names:
        return f"no run names its {plural[:-1]}"
    shown = closest_first(typed, names)[:SHOWN]
    more = f" (and {len(names) - len(shown)} more)" if len(names) > len(shown) else ""
    return f"the {plural} here, closest first: {', '.join(shown)}{more}"


def nothing_matched(led: Ledger, *, experiment: str | None = None, model: str | None = None,
                    status: str | None = None, since: str | None = None, partial: bool = True) -> str:
    """One line for a filter under which `led.list_runs` found no run: the parts that match nothing alone, each with
    the names there are; or, when each part matches runs, that they match none together. Reads the index as it is
    (the list that came back empty has just brought it up to date)."""
    from .index import Ledger

    quiet = Ledger(led.ledger_dir, auto_sync=False)
    if not quiet.list_runs(limit=1):
        return "no runs recorded"
    alone = []
    for field, typed in (("experiment", experiment), ("model", model)):
        if typed is not None and not quiet.list_runs(limit=1, partial=partial, **{field: typed}):
            what = f"no run's {field} contains {typed!r}" if partial else f"no run of {field} {typed!r}"
            alone.append(f"{what} — {known(field + 's', typed, quiet.names(field))}")
    if status is not None and status not in STATUSES:
        alone.append(f"no run is {status!r} — the statuses are {', '.join(STATUSES)}")
    elif status is not None and not quiet.list_runs(status=status, limit=1):
        alone.append(f"no run is {status}")
    if since is not None and not quiet.list_runs(since=since, limit=1):
        alone.append(f"no run started since {since}")
    if alone:
        return "; ".join(alone)
    parts = [f"{field} {typed!r}" for field, typed in (("experiment", experiment), ("model", model)) if typed is not None]
    parts += [f"status {status}"] if status is not None else []
    parts += [f"started since {since}"] if since is not None else []
    if len(parts) < 2:  # one part that matches runs alone: the index changed in between
        return "no run matches the filter"
    return f"no run matches {', '.join(parts[:-1])} and {parts[-1]} together (each matches runs on its own)"
