"""GPU-hours of server jobs, used and idle: each server job keeps one small record of its own in the ledger dir,
`server-jobs/<job id>.json` (`<cluster>-<job id>.json` under -M).

A server job is not a run: it serves many runs, or none, and its idle hours belong to no run. So it does what a run
does with its journal — only the job writes its file, many jobs on many nodes share none — but with no notes to
chain, its record is one JSON document, replaced whole (write, fsync, rename) when the server answers, every minute
while it runs, and a last time when it ends. A job killed outright leaves its last minute's record, `status`
still `running`: `updated_at` says when it was last seen.

Fields: job_id, cluster, name, node, partition, gpus (on its node), kind, idle_limit_s (null: never), with_run (the
experiment of a `submit --with-server` job), started_at / ready_at / ended_at / updated_at (UTC), status (running |
ended), ended_by (idle | stopped | run ended | server exited | did not start), requests, starting_s / busy_s /
idle_s (the job's time: before the server answered, with a request in flight, with none) and gpu_hours {used,
idle, starting, held} (those times × gpus).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .journal import ensure_private_dir

SERVER_JOBS_DIR = "server-jobs"
SUFFIX = ".json"


def record_path(ledger_dir: Path, job_id: str, cluster: str | None = None) -> Path:
    return Path(ledger_dir) / SERVER_JOBS_DIR / (f"{cluster}-{job_id}{SUFFIX}" if cluster else f"{job_id}{SUFFIX}")


def gpu_hours(gpus: int | float | None, seconds: dict[str, float]) -> dict[str, float]:
    """{used, idle, starting, held} from the job's seconds busy, idle and starting, times its GPUs."""
    n = gpus or 0
    used, idle, starting = (n * (seconds.get(k) or 0.0) / 3600 for k in ("busy_s", "idle_s", "starting_s"))
    return {"used": round(used, 4), "idle": round(idle, 4), "starting": round(starting, 4),
            "held": round(used + idle + starting, 4)}


def write_record(ledger_dir: Path, record: dict[str, Any]) -> Path:
    """Replace the job's record whole (readers see the old one or the new one, never half of either)."""
    path = record_path(ledger_dir, str(record["job_id"]), record.get("cluster"))
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("job_id") is not None else None


def read_records(ledger_dir: Path) -> list[dict[str, Any]]:
    """Every server job's record in the ledger dir, newest start first."""
    folder = Path(ledger_dir) / SERVER_JOBS_DIR
    try:
        paths = sorted(folder.glob(f"*{SUFFIX}"))
    except OSError:
        return []
    records = [r for r in (read_record(p) for p in paths if not p.name.startswith(".")) if r is not None]
    return sorted(records, key=lambda r: str(r.get("started_at") or ""), reverse=True)


def job_record(ledger_dir: Path, job_id: str, cluster: str | None = None) -> dict[str, Any] | None:
    return read_record(record_path(ledger_dir, job_id, cluster))
