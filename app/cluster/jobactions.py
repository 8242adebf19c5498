"""What a user does with server jobs, for the `server` commands and the TUI's Servers screen alike: start one from a
profile, cancel one, and the words for how a job is (pending with its reason, starting, up, unhealthy, time left)."""

from __future__ import annotations

from pathlib import Path

from app.cluster.health import Health
from app.cluster.slurm import ServerJob, ServerJobs, Slurm
from app.cluster.submit import server_submission
from app.errors import UserError
from app.settings.user import UserConfig


def _slurm(config: UserConfig) -> Slurm:
    slurm = Slurm(config.slurm.cluster)
    if not slurm.available:
        raise UserError("there is no Slurm here (no squeue) — run this on the cluster's login node")
    return slurm


def start_server_job(config: UserConfig, config_path: Path, profile: str, ledger_dir: Path,
                     environ: dict[str, str], time: str | None = None, jobs: ServerJobs | None = None,
                     idle: str | None = None) -> str:
    """Submit a server job from `[profiles.NAME]`; the job id. `idle` (`45m`, `0` for never) instead of the
    profile's. Blocking (sbatch): call it from a worker."""
    chosen = config.profiles.get(profile)
    if chosen is None:
        have = ", ".join(sorted(config.profiles)) or "none yet"
        raise UserError(f"--profile {profile}: no such profile in {config_path} (have: {have}) — add "
                        f"[profiles.{profile}] (see slurm/config.example.toml)")
    slurm = _slurm(config)
    if chosen.isolate:  # asked here, where the job's nodes run the same system: one line now, not a failed job later
        from app.cluster.isolate import unavailable

        why = unavailable()
        if why is not None:
            raise UserError(f"--profile {profile}: the server job could not be kept to you: {why} — ask the site to "
                            f'allow them, or set isolate = false in [profiles.{profile}] with extra = ["--exclusive"] '
                            "(a node to yourself)")
    sub = server_submission(profile, chosen, ledger_dir, environ, config.slurm.cluster, time=time, idle=idle)
    job_id = sub.submit(slurm)
    from app.cluster.joblook import record_submission

    record_submission(ledger_dir, job_id, config.slurm.cluster, sub, profile)  # what `l` shows as its command
    if jobs is not None:
        jobs.expire()
    return job_id


def stop_server_job(config: UserConfig, job_id: str, jobs: ServerJobs | None = None) -> ServerJob:
    """Cancel one of the user's server jobs; the job as it was. Blocking (squeue, scancel)."""
    job_id = job_id.strip()
    if not job_id.isdigit():
        raise UserError(f"{job_id!r} is not a job id — give the number notes-tui server list shows under JOB")
    slurm = _slurm(config)
    # scancel of an unknown id says nothing and exits 0: ask squeue first, so a typo is not taken for success
    mine = {j.job_id: j for j in slurm.server_jobs()}
    if job_id not in mine:
        shown = ", ".join(sorted(mine)) or "none"
        raise UserError(f"job {job_id} is not one of your server jobs (yours: {shown}) — see notes-tui server list")
    slurm.cancel(job_id)
    if jobs is not None:
        jobs.expire()
    return mine[job_id]


def job_status(job: ServerJob, health: Health | None) -> str:
    """pending (Reason) | starting | up | slow | unhealthy: why | ending."""
    if job.phase == "pending":
        return f"pending ({job.reason})" if job.reason else "pending"
    if job.phase != "running" or health is None or health.state == "unknown":
        return job.phase
    return health.state if health.answers else f"unhealthy: {health.reason}"


def time_left_text(job: ServerJob) -> str:
    from ledger.clock import format_duration

    return "no limit" if job.time_left_s is None else format_duration(job.time_left_s)


def ends_before(job: ServerJob, eta_s: float | None, age_s: float = 0.0) -> bool:
    """Would the job reach its time limit before a run that needs `eta_s` more seconds is done? (`age_s`: how old
    the squeue answer is, since time left counts down meanwhile.)"""
    if eta_s is None or job.time_left_s is None:
        return False
    return job.time_left_s - age_s < eta_s
