"""What the Runs screen lists, and the counts in its title, from one set of facts so that they agree: the runs the
ledger shows running, the last ones that ended (app.runs.running.recent_runs), the runs this app started (which the
ledger may not know yet, or never will: a mistake before the first note), and the run followed (whose feed is newer
than the index). Each row says where its run is in the ledger's words (app.runs.states) and keeps the counts it
ended with. No UI here.

    rows = listing(recent_runs(ledger_dir), started, followed)
    title_counts(rows)        -> "1 running, 10 ended"
    progress_words(done, total) -> "30/30 100%"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.runs.follow import Glance
from app.runs.followed import FollowedRun, waiting_state
from app.runs.running import RunningRun
from app.runs.states import STARTING, run_state
from ledger.procinfo import this_host


@dataclass(frozen=True)
class Started:
    """A run this app started: its process's exit status once it exited, and the last line of its log then."""

    run_id: str
    experiment: str
    exit_code: int | None = None
    exit_line: str | None = None


@dataclass(frozen=True)
class Listed:
    run_id: str
    experiment: str
    hostname: str | None
    slurm: dict[str, Any] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    state: str = "running"  # the ledger's words, or what a running run waits on
    live: bool = True  # not over: running, waiting, starting
    starting: bool = False


def listing(records: list[RunningRun], started: list[Started], followed: FollowedRun | None,
            glances: dict[str, Glance] | None = None) -> list[Listed]:
    """One row per run, running rows first: the runs started here that the ledger does not list yet (the newest:
    run ids are ULIDs, which sort by start time), then the ledger's (running ones and the last that ended, each
    newest first, as recent_runs gives them), then the run followed if it is in neither (it ended and newer runs
    have taken its place). A running run's `glances` entry (its feed's last progress line) gives its row fresher
    counts and what it waits on."""
    glances = glances or {}
    by_id = {s.run_id: s for s in started}
    known = {r.run_id for r in records}
    rows: list[Listed] = []
    for s in sorted(started, key=lambda s: s.run_id, reverse=True):
        if s.run_id in known:
            continue
        if followed is not None and followed.run_id == s.run_id:
            rows.append(_of_followed(followed, s.experiment, this_host(), {}))
            continue
        state = run_state(None, None, None, s.exit_code, s.exit_line)
        rows.append(Listed(s.run_id, s.experiment, this_host(), {}, state=state.row_words, live=not state.over,
                           starting=state.status == STARTING))
    for r in records:
        if followed is not None and followed.run_id == r.run_id:
            rows.append(_of_followed(followed, r.experiment, r.hostname, r.slurm))
            continue
        s = by_id.get(r.run_id)
        state = run_state(r.status, r.last_error, None, s.exit_code if s else None, s.exit_line if s else None)
        c = r.counts or {}
        done, words = _int(c.get("done")), state.row_words
        seen = glances.get(r.run_id) if not state.over else None
        if seen is not None:
            done = seen.counts.done if seen.counts is not None else done
            words = waiting_state(list(seen.waiting)) if seen.waiting else words
        rows.append(Listed(r.run_id, r.experiment or "-", r.hostname, r.slurm, done,
                           _int(r.total or c.get("total")), words, not state.over))
    if followed is not None and all(row.run_id != followed.run_id for row in rows):
        h = followed.header or {}
        r = followed.recorded
        rows.append(_of_followed(
            followed, h.get("experiment") or (r.experiment if r else None) or "-",
            h.get("hostname") or (r.hostname if r else None), h.get("slurm") or (r.slurm if r else {}) or {}))
    return sorted(rows, key=lambda row: not row.live)  # stable: each group keeps its order


def _of_followed(f: FollowedRun, experiment: str | None, hostname: str | None, slurm: dict) -> Listed:
    """The followed run's row: its feed's counts and end (newer than the index), what it waits on."""
    state = f.state
    return Listed(f.run_id, experiment or "-", hostname, slurm or {}, f.shown_counts.done, f.shown_total,
                  f.row_words(), not state.over, starting=state.status == STARTING)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def title_counts(rows: list[Listed]) -> str:
    """The rows counted as they read: "2 running, 1 starting, 10 ended"."""
    starting = sum(1 for r in rows if r.live and r.starting)
    running = sum(1 for r in rows if r.live and not r.starting)
    ended = sum(1 for r in rows if not r.live)
    parts = [f"{running} running"] + ([f"{starting} starting"] if starting else []) + (
        [f"{ended} ended"] if ended else [])
    return ", ".join(parts)


def progress_words(done: int, total: int) -> str:
    """A row's progress: "120/400 30%"; "-" when nothing is known."""
    if not total and not done:
        return "-"
    return f"{done:,}/{total:,}" + (f" {done / total:.0%}" if total else "")
