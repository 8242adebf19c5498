"""Which runs are running now, in one ledger dir, on any host: the ledger index's `running` runs, each with what its
journal header says (model, total, hosts, Slurm ids) and where its feed and log are; and the last runs that ended
(`recent_runs`), with the ledger's word for how (completed, interrupted, failed, crashed), their counts and duration.

Headers never change once written, so each is read once per process (its first line only) and kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.feed import feed_path, parse_line, read_first_line
from ledger.journal import JOURNAL_DIR, SUFFIX
from ledger.procinfo import this_host

LOG_DIR = "logs"
ENDED_SHOWN = 10  # the Runs screen lists this many of the runs that ended, newest first, beside every running one
HEADER_LIMIT = 16 << 20  # the header holds the TOML text and the schema: large, but not this large

_headers: dict[tuple[str, str], dict[str, Any]] = {}
_headers_lock = threading.Lock()


@dataclass(frozen=True)
class RunningRun:
    run_id: str
    experiment: str | None
    model: str | None
    total: int | None
    counts: dict[str, Any]  # as of the run's last journal record (per batch / 5 s checkpoint); the feed is fresher
    hostname: str | None
    pid: int | None
    here: bool  # on this host: a stop is a signal, and the pid can be checked
    started_at: str | None
    hosts: list[str] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)
    server_jobs: list[dict[str, Any]] = field(default_factory=list)
    shard: dict[str, Any] | None = None
    toml_path: str | None = None
    feed: Path | None = None  # the live feed, when the run writes one
    log: Path | None = None  # the output of a run started detached (notes-tui's "run here")
    status: str = "running"  # the ledger's word: running, completed, interrupted, failed, crashed
    last_error: str | None = None  # why a failed run failed (why an interrupted one stopped, when it was not asked to)
    duration_s: float | None = None  # start to close (crashed: to its last record; running: to now)


def log_path(ledger_dir: Path, run_id: str) -> Path:
    return Path(ledger_dir) / LOG_DIR / f"{run_id}.log"


def journal_header(ledger_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The header record's `header` of a run's journal, or None while it has none (or it is not a journal)."""
    key = (str(ledger_dir), run_id)
    with _headers_lock:
        known = _headers.get(key)
    if known is not None:
        return known
    line = read_first_line(Path(ledger_dir) / JOURNAL_DIR / f"{run_id}{SUFFIX}", HEADER_LIMIT)
    record = parse_line(line) if line is not None else None
    header = record.get("header") if record is not None and record.get("type") == "header" else None
    if not isinstance(header, dict):
        return None
    with _headers_lock:
        _headers[key] = header
    return header


def running_runs(ledger_dir: Path, sync: bool = True) -> list[RunningRun]:
    """Runs the ledger shows as running (this host: the process is alive; others: a record in the last 15 min),
    newest first. Reads the index, importing new journal data first unless `sync` is False (see ledger.Ledger):
    poll it every few seconds, and follow a run's notes with FeedFollower."""
    from ledger import Ledger

    return [_run(Path(ledger_dir), row) for row in Ledger(ledger_dir, auto_sync=sync).list_runs(status="running")]


def recent_runs(ledger_dir: Path, ended: int = ENDED_SHOWN, sync: bool = True) -> list[RunningRun]:
    """Every run the ledger shows running, then the last `ended` runs that ended (completed, interrupted, failed or
    crashed), each group newest first: what the Runs screen lists, also in an app opened after its runs ended."""
    from ledger import Ledger

    ledger_dir = Path(ledger_dir)
    index = Ledger(ledger_dir, auto_sync=sync)
    running = index.list_runs(status="running")
    index.auto_sync = False  # imported just now
    # the newest runs of all: the running ones among them are set apart, so ask for that many more
    newest = index.list_runs(limit=ended + len(running)) if ended > 0 else []
    live = {row["run_id"] for row in running}  # a run may have ended between the two reads: listed once
    over = [row for row in newest if row["status"] != "running" and row["run_id"] not in live][:ended]
    return [_run(ledger_dir, row) for row in [*running, *over]]


def _run(ledger_dir: Path, row: dict[str, Any]) -> RunningRun:
    run_id = row["run_id"]
    h = journal_header(ledger_dir, run_id) or {}
    feed, log = feed_path(ledger_dir, run_id), log_path(ledger_dir, run_id)
    return RunningRun(
        run_id=run_id, experiment=row.get("experiment"), model=row.get("model"),
        total=h.get("total", row["counts"].get("total")), counts=row["counts"],
        hostname=row.get("hostname"), pid=row.get("pid"), here=row.get("hostname") == this_host(),
        started_at=row.get("started_at"), hosts=list(h.get("hosts") or []), slurm=dict(h.get("slurm") or {}),
        server_jobs=list(h.get("server_jobs") or []), shard=h.get("shard"), toml_path=h.get("toml_path"),
        feed=feed if feed.exists() else None, log=log if log.exists() else None,
        status=row.get("status") or "running", last_error=row.get("last_error"), duration_s=row.get("duration_s"))
