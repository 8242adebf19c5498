"""`hosts = "auto"`: an experiment's servers are the user's running, healthy server jobs of its backend's kind. For any run, the
server jobs behind its hosts are recorded in the run header (`server_jobs`), so the ledger can state GPU-hours."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from app.cluster import tokens
from app.errors import ConfigError
from app.experiment import Experiment

if TYPE_CHECKING:  # a run with listed hosts needs neither Slurm nor httpx (the probe): imported for "auto" only
    from app.cluster.slurm import ServerJob, ServerJobs

HINT = "start one with: notes-tui server start --profile NAME (see notes-tui server list)"


def job_entry(job: ServerJob | None, record: dict[str, Any] | None) -> dict[str, Any]:
    """One `server_jobs` entry: job id, cluster, url, node, gpus (per node, from the job), partition."""
    entry = tokens.job_summary(record) if record else {}
    if job is not None:
        entry.update({"job_id": job.job_id, "cluster": job.cluster, "url": job.url, "node": job.node,
                      "partition": job.partition, "gres": job.gres or None})
        if not entry.get("gpus"):
            entry["gpus"] = job.gpus
    return entry


def _describe_others(jobs: list[ServerJob]) -> str:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.phase] = counts.get(j.phase, 0) + 1
    return ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))


def resolve_hosts(exp: Experiment, cluster: str | None = None, jobs: ServerJobs | None = None,
                  environ: dict[str, str] | None = None) -> Experiment:
    """The experiment with its hosts found (hosts = "auto") and the server jobs behind its hosts named."""
    if not exp.uses_servers:
        return exp
    kind = exp.spec.model.backend
    if not exp.auto_hosts:
        known = [tokens.record_for_url(h, environ) for h in exp.hosts]
        return replace(exp, server_jobs=tuple(job_entry(None, r) for r in known if r))
    from app.cluster.health import probe_all
    from app.cluster.slurm import ServerJobs, Slurm

    if jobs is None:
        if cluster is None:
            from app.settings.files import config_path
            from app.settings.user import load_user_config

            cluster = load_user_config(config_path(environ)).slurm.cluster
        jobs = ServerJobs(Slurm(cluster))
    if not jobs.available:
        raise ConfigError(exp.path, "model.hosts", 'hosts = "auto" finds Slurm server jobs, and there is no squeue '
                          "here", 'run on the cluster\'s login node, or list the servers: hosts = ["http://HOST:PORT"]')
    found = jobs.get()
    if jobs.error:
        raise ConfigError(exp.path, "model.hosts", f'hosts = "auto": {jobs.error}',
                          'check that Slurm answers here (squeue --me), or list the servers: hosts = ["http://HOST:PORT"]')
    others_kind = [j for j in found if j.kind != kind]
    found = [j for j in found if j.kind == kind]  # an openai-compatible experiment cannot use an Ollama job
    running = [j for j in found if j.url]
    health = asyncio.run(probe_all(j.url for j in running if j.url)) if running else {}
    up = [j for j in running if j.url and health[j.url].answers]
    if not up:
        others = [j for j in found if j not in up]
        what = f" ({_describe_others(others)})" if others else ""
        if others_kind:
            what += f"; {len(others_kind)} job{'s' if len(others_kind) != 1 else ''} of another kind than {kind}"
        down = [f"job {j.job_id}: {health[j.url].reason}" for j in running if j.url and j not in up]
        why = f"; {', '.join(down)}" if down else ""
        raise ConfigError(exp.path, "model.hosts", f'hosts = "auto": no {kind} server job of yours is up{what}{why}',
                          HINT)
    entries = tuple(job_entry(j, tokens.job_record(j.job_id, j.cluster, environ)) for j in up)
    return replace(exp, hosts=tuple(j.url for j in up if j.url), server_jobs=entries)

