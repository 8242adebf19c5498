"""Who, where and with what a run was made: the header record of its journal. Never credentials, never note text."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from app.backends.base import ModelInfo
from app.experiment import Experiment
from ledger.procinfo import pid_start_time


def tool_version() -> str:
    try:
        return metadata.version("notes-tui")
    except metadata.PackageNotFoundError:
        return "unknown"


def slurm_ids(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
             "cluster": "SLURM_CLUSTER_NAME"}
    return {k: env[v] for k, v in names.items() if env.get(v)}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def run_header(exp: Experiment, info: ModelInfo, source: dict[str, Any], schema: dict[str, Any], phash: str,
               total: int, per_host: int, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    spec = exp.spec
    used = set(info.hosts)
    return {
        "experiment": spec.name,
        "description": spec.description,
        "toml_path": str(exp.path.resolve()),  # absolute: `ledger eval` and `rerun` find it from anywhere
        "toml_text": exp.toml_text,
        "toml_sha256": hashlib.sha256(exp.toml_text.encode("utf-8")).hexdigest(),
        "prompt_hash": phash,
        "system_prompt": spec.prompt.system,
        "user_template": spec.prompt.user,
        "answer_schema": schema,
        "max_attempts": spec.answer.max_attempts,
        "fallback": spec.answer.fallback,
        "backend": spec.model.backend,
        "model": info.model,
        "model_digest": info.digest,
        "model_details": info.details,
        "server_version": info.server_version,
        # what the servers say of themselves and what the run sends them: kind, context length, think, truncate
        "server": info.server,
        "think": spec.model.think,
        "allow_remote": spec.model.allow_remote,
        "hosts": list(info.hosts),
        # the Slurm server jobs that answered (job_id, cluster, url, node, gpus, partition): GPU-hours = run time x gpus
        "server_jobs": [j for j in exp.server_jobs if j.get("url") in used],
        "shard": {"index": shard[0], "count": shard[1]} if shard else None,
        "study": exp.cell.header() if exp.cell else None,  # a cell of a study: its name, model, prompt, repeat
        "options": spec.model.options.as_dict(),
        "concurrency_per_host": per_host,
        "tool_version": tool_version(),
        "user": _user(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": pid_start_time(os.getpid()),
        "slurm": slurm_ids(),
        "total": total,
        "source": source,
        "results_table": spec.results.table,
        "started_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
