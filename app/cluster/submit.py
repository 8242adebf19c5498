"""What notes-tui submits to Slurm: an Ollama server job from a profile, a headless run (or a job array of shards)
from an experiment file, or a run with a server of its own in one job (`submit --with-server PROFILE`). All run the
Python and the checkout that submitted them (`NOTES_TUI_PYTHON`, `NOTES_TUI_ROOT`), so a job never runs other code
than the command that started it."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from app.cluster.slurm import JOB_NAME_PREFIX, OPENAI_JOB_PREFIX, Slurm
from app.errors import UserError
from app.settings.user import SLURM_TIME, Profile, RunJobSettings

ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = ROOT / "slurm"
SERVER_SCRIPT = SLURM_DIR / "ollama-server.sbatch"
RUN_SCRIPT = SLURM_DIR / "notes-run.sbatch"
RUN_WITH_SERVER_SCRIPT = SLURM_DIR / "notes-run-with-server.sbatch"
MAX_ARRAY = 1000


@dataclass(frozen=True)
class Submission:
    script: Path
    options: tuple[str, ...]
    env: dict[str, str]
    args: tuple[str, ...] = ()

    def submit(self, slurm: Slurm) -> str:
        if not self.script.is_file():
            raise UserError(f"{self.script} is missing — notes-tui submits the templates of its checkout; "
                            "reinstall with pip install -e from the repository")
        return slurm.submit(str(self.script), self.options, env=self.env, args=self.args)


def check_time(text: str | None, where: str = "--time") -> str | None:
    if text is not None and not re.match(SLURM_TIME, text):
        raise UserError(f"{where}: {text!r} is not a Slurm time — write MINUTES, HH:MM:SS or D-HH:MM:SS, "
                        "e.g. 0-02:00:00")
    return text


def _job_env(environ: dict[str, str], cluster: str | None) -> dict[str, str]:
    env = dict(environ)
    env["NOTES_TUI_PYTHON"] = sys.executable
    env["NOTES_TUI_ROOT"] = str(ROOT)
    env["NOTES_TUI_CLUSTER"] = cluster or ""
    return env


def _common(partition: str | None, account: str | None, mem: str | None, cpus: int | None,
            time: str | None) -> list[str]:
    opts = []
    if partition:
        opts.append(f"--partition={partition}")
    if account:
        opts.append(f"--account={account}")
    if mem:
        opts.append(f"--mem={mem}")
    if cpus:
        opts.append(f"--cpus-per-task={cpus}")
    if time:
        opts.append(f"--time={time}")
    return opts


def log_dir(ledger_dir: Path) -> Path:
    """Job output goes beside the ledger (sbatch does not create the folder: a missing one fails the job)."""
    folder = ledger_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _gpu_options(profile: Profile) -> list[str]:
    opts = []
    if profile.gres:
        opts.append(f"--gres={profile.gres}")
    if profile.gpus:
        opts.append(f"--gpus={profile.gpus}")
    return opts


def check_idle(text: str | None, where: str = "--idle") -> int | None:
    """Seconds (None: never); `text` None is the profile's own."""
    from app.settings.user import IDLE_FIX, idle_seconds

    try:
        return idle_seconds(text) if text is not None else None
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a duration — {IDLE_FIX}") from None


def server_submission(name: str, profile: Profile, ledger_dir: Path, environ: dict[str, str],
                      cluster: str | None, time: str | None = None, idle: str | None = None) -> Submission:
    """A server job; `idle` (`30m`, `0` for never) instead of the profile's."""
    kind = profile.server_kind
    job_name = f"{JOB_NAME_PREFIX}-{name}" if kind == "ollama" else f"{OPENAI_JOB_PREFIX}{name}"
    opts = [f"--job-name={job_name}", f"--output={log_dir(ledger_dir) / '%x-%j.out'}"]
    opts += _common(profile.partition, profile.account, profile.mem, profile.cpus, check_time(time) or profile.time)
    opts += _gpu_options(profile)
    opts += profile.extra
    env = _server_env(profile, ledger_dir, environ, cluster)
    idle_s = check_idle(idle) if idle is not None else profile.idle_s
    env["NOTES_TUI_IDLE"] = f"{idle_s}s" if idle_s else "0"
    return Submission(SERVER_SCRIPT, tuple(opts), env)


def _server_env(profile: Profile, ledger_dir: Path, environ: dict[str, str], cluster: str | None) -> dict[str, str]:
    kind = profile.server_kind
    env = _job_env(environ, cluster)
    env["NOTES_TUI_LEDGER"] = str(ledger_dir)  # the job's GPU-hours are recorded where the submitter looks
    env["NOTES_TUI_SERVER_COMMAND"] = profile.command
    env["NOTES_TUI_SERVER_KIND"] = kind
    env["NOTES_TUI_ISOLATE"] = "1" if profile.isolate else "0"
    env["NOTES_TUI_READY_TIMEOUT_S"] = f"{profile.ready_timeout_s:g}"
    if profile.models_dir:
        env["OLLAMA_MODELS"] = os.path.expanduser(profile.models_dir)
    if profile.num_parallel:
        env["OLLAMA_NUM_PARALLEL"] = str(profile.num_parallel)
        env["NOTES_TUI_NUM_PARALLEL"] = str(profile.num_parallel)  # recorded with the job: `server list` shows it
    return env


def with_server_submission(exp_path: Path, name: str, profile: Profile, settings: RunJobSettings, ledger_dir: Path,
                           environ: dict[str, str], cluster: str | None, time: str | None = None,
                           signal_s: int | None = None) -> Submission:
    """One job that starts the profile's server on its node and runs the experiment against it (the profile's
    resources; TERM `signal_s` before the limit, as for a run job)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", exp_path.stem)[:40] or "run"
    opts = [f"--job-name=notes-{stem}+{name}", f"--output={log_dir(ledger_dir) / '%x-%j.out'}",
            f"--signal=B:TERM@{signal_s or settings.signal_s}"]
    opts += _common(profile.partition, profile.account, profile.mem, profile.cpus, check_time(time) or profile.time)
    opts += _gpu_options(profile)
    opts += profile.extra
    env = _server_env(profile, ledger_dir, environ, cluster)
    return Submission(RUN_WITH_SERVER_SCRIPT, tuple(opts), env, args=(str(exp_path.resolve()),))


def run_submission(exp_path: Path, settings: RunJobSettings, ledger_dir: Path, environ: dict[str, str],
                   cluster: str | None, array: int | None = None, time: str | None = None,
                   signal_s: int | None = None) -> Submission:
    if array is not None and not 1 <= array <= MAX_ARRAY:
        raise UserError(f"--array {array}: give between 1 and {MAX_ARRAY} tasks")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", exp_path.stem)[:40] or "run"
    opts = [f"--job-name=notes-{name}", f"--output={log_dir(ledger_dir) / '%x-%A_%a.out'}",
            f"--signal=B:TERM@{signal_s or settings.signal_s}"]
    opts += _common(settings.partition, settings.account, settings.mem, settings.cpus,
                    check_time(time) or settings.time)
    if array is not None and array > 1:
        opts.append(f"--array=0-{array - 1}")
    opts += settings.extra
    env = _job_env(environ, cluster)
    env["NOTES_TUI_LEDGER"] = str(ledger_dir)  # the run is recorded where the submitter looks
    return Submission(RUN_SCRIPT, tuple(opts), env, args=(str(exp_path.resolve()),))


def submit_experiment(file: str, ctx, ledger_dir, array: int | None = None, time: str | None = None,
                      signal_s: int | None = None, with_server: str | None = None) -> tuple[str, str | None]:
    """Submit FILE as a run job (job array with `array`; with its own server from the profile `with_server`);
    (job id, cluster). Blocking (sbatch): the TUI calls it from a worker."""
    from app.cluster.shards import refuse_sqlite_shard
    from app.experiment import load_experiment

    if with_server is not None:
        return _submit_with_server(file, ctx, ledger_dir, with_server, array, time, signal_s)
    exp = load_experiment(file)  # a broken file is refused here, not minutes later in the queue
    if array and array > 1:
        refuse_sqlite_shard(exp)
    slurm = _sbatch_here(ctx, file)
    sub = run_submission(Path(file), ctx.config.slurm.run, ledger_dir, ctx.environ, slurm.cluster,
                         array=array, time=time, signal_s=signal_s)
    return sub.submit(slurm), slurm.cluster


def _sbatch_here(ctx, file: str) -> Slurm:
    slurm = Slurm(ctx.config.slurm.cluster)
    if not slurm.available:
        raise UserError("there is no Slurm here (no sbatch) — run this on the cluster's login node, or run the "
                        f"experiment here: notes-tui --run {file}")
    return slurm


# what the file is checked with at submission: the job's own server takes the place of its hosts
_PLACEHOLDER_SERVER = "http://server-of-the-job.invalid:1"


def _submit_with_server(file: str, ctx, ledger_dir, name: str, array: int | None, time: str | None,
                        signal_s: int | None) -> tuple[str, str | None]:
    from app.experiment import load_experiment
    from app.experiment.hosts import RUN_SERVER_ENV

    profile = ctx.config.profiles.get(name)
    if profile is None:
        have = ", ".join(sorted(ctx.config.profiles)) or "none yet"
        raise UserError(f"--with-server {name}: no such profile in {ctx.config_path} (have: {have}) — add "
                        f"[profiles.{name}] (see slurm/config.example.toml)")
    if array is not None and array > 1:
        raise UserError(f"--with-server and --array cannot be combined — one job is one run with its server; for "
                        f"shards, start server jobs (notes-tui server start --profile {name}) and submit the array "
                        'with hosts = "auto"')
    exp = load_experiment(file, dict(ctx.environ, **{RUN_SERVER_ENV: _PLACEHOLDER_SERVER}))
    backend = exp.spec.model.backend
    if not exp.uses_servers:
        raise UserError(f"--with-server {name}: {file} runs the embedded model (backend = \"{backend}\"), which needs "
                        "no server — submit it without --with-server")
    if profile.server_kind != backend:
        raise UserError(f"--with-server {name}: that profile starts an {profile.server_kind} server and {file} "
                        f"speaks {backend} (backend = \"{backend}\") — choose a profile of its kind")
    slurm = _sbatch_here(ctx, file)
    if profile.isolate:
        from app.cluster.isolate import unavailable

        why = unavailable()
        if why is not None:
            raise UserError(f"--with-server {name}: the server could not be kept to you: {why} — ask the site to "
                            f'allow them, or set isolate = false in [profiles.{name}] with extra = ["--exclusive"]')
    sub = with_server_submission(Path(file), name, profile, ctx.config.slurm.run, ledger_dir, ctx.environ,
                                 slurm.cluster, time=time, signal_s=signal_s)
    return sub.submit(slurm), slurm.cluster
