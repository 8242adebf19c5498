"""Per-job tokens of the authenticating proxy: one `0600` file per server job under the user's own config directory
(`~/.config/notes-tui/server-jobs/<job id>.json`, on the cluster's shared home), written by the job, read by every
notes-tui client of the same user. Nobody else can read it, so nobody else can use the server.

A record also names the URL, node and GPUs of its job: a client that only has a URL (an experiment's hosts, a
saved server) finds the token by URL, and a run can record which jobs answered it. Tokens never go to a log, the
console, the ledger or an exception message.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from app.settings.files import config_path, write_private

HEADER = "Authorization"
DIR_NAME = "server-jobs"


def jobs_dir(environ: dict[str, str] | None = None) -> Path:
    return config_path(environ).parent / DIR_NAME


def record_path(job_id: str, cluster: str | None = None, environ: dict[str, str] | None = None) -> Path:
    return jobs_dir(environ) / (f"{cluster}-{job_id}.json" if cluster else f"{job_id}.json")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_record(path: Path, record: dict[str, Any]) -> None:
    write_private(path, json.dumps(record))
    os.chmod(path.parent, 0o700)  # a folder made before, by hand, may be open to others


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("token"), str) else None


def job_record(job_id: str, cluster: str | None = None, environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    return read_record(record_path(job_id, cluster, environ))


def records(environ: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every job record, newest first (a URL reused by a later job finds the later token)."""
    folder = jobs_dir(environ)
    try:
        paths = [p for p in folder.glob("*.json")]
    except OSError:
        return []
    stamped = []
    for p in paths:
        try:
            stamped.append((p.stat().st_mtime, p))
        except OSError:
            continue
    out = []
    for _, p in sorted(stamped, reverse=True):
        rec = read_record(p)
        if rec is not None:
            out.append(rec)
    return out


def record_for_url(url: str, environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    return next((r for r in records(environ) if r.get("url") == url), None)


def job_slots(url: str) -> int | None:
    """The slots (num_parallel) the profile of the server job behind `url` gave it; None for any other server."""
    parallel = (record_for_url(url) or {}).get("num_parallel")
    return parallel if isinstance(parallel, int) and parallel > 0 else None


def auth_headers(url: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The header a client of `url` must send: the token of the server job behind it, or nothing."""
    rec = record_for_url(url, environ)
    return {HEADER: f"Bearer {rec['token']}"} if rec else {}


def job_summary(rec: dict[str, Any]) -> dict[str, Any]:
    """What a run records about a server job it used (for GPU-hours): never the token."""
    return {k: rec.get(k) for k in ("job_id", "cluster", "url", "node", "gpus", "partition")}


ENDED_DIR = "ended"  # the addresses of jobs that ended: what listens there later is not the user's server
ENDED_KEEP_S = 30 * 86400


def ended_path(job_id: str, cluster: str | None = None, environ: dict[str, str] | None = None) -> Path:
    return jobs_dir(environ) / ENDED_DIR / (f"{cluster}-{job_id}.json" if cluster else f"{job_id}.json")


def record_ended(record: dict[str, Any], environ: dict[str, str] | None = None) -> None:
    """Keep the address of a job that ended (never its token): a URL saved or exported from it must not find another
    user's process there later and hand it notes."""
    import time

    path = ended_path(str(record.get("job_id")), record.get("cluster"), environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps({**job_summary(record), "ended_at": round(time.time())}))
    try:  # and forget the ones that ended long ago
        for old in path.parent.glob("*.json"):
            if time.time() - old.stat().st_mtime > ENDED_KEEP_S:
                old.unlink(missing_ok=True)
    except OSError:
        pass


def ended_job_for_url(url: str, environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    folder = jobs_dir(environ) / ENDED_DIR
    try:
        paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for p in paths:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("url") == url:
            return data
    return None
