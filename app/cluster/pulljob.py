"""Pulls without a GPU: `notes-tui models pull NAME --profile P` pulls into the shared models directory in a CPU job of
its own (`slurm/ollama-pull.sbatch`) that ends when the pull does — the SOP's `srun -M smp -p smp … ollama pull` as a
batch job, with no GPU held for a download.

Before anything is submitted (one line and exit 2 for each, nothing submitted): the profile exists, asks for no GPU
(`gres`/`gpus`) and starts Ollama; the model's layers are asked of the registry (its manifest: one GET, 5 s at most;
`$NOTES_TUI_REGISTRY` names a mirror, `off` skips it) and the blobs of the models directory are summed: those two
against `[models] quota_gb`. A model whose manifest and every layer are there already is not pulled again. Where the
registry does not answer, the directory's use alone is checked and the size is said to be unknown.

The job (`notes-tui models pull-in-job`) starts the profile's command with OLLAMA_HOST=127.0.0.1:PORT and OLLAMA_MODELS
the models directory — not in a network namespace of its own, since a pull needs the registry —, waits until it
answers, pulls through it exactly as `models pull --progress-file` does (app.cluster.detached_pull: the same progress
file, in the submitter's ledger dir on the shared home), then stops the server; the job's exit status is the pull's.

The progress file's first line is the submitter's (a job id, no pid): while the job is pending it is alive as long as
squeue lists the job. Every line names `job_id` and `models_dir`, so the Models screen shows the pull beside the
servers that use that directory (`server_models_dir`) and reloads their model lists once it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.backends.ollama import full_name
from app.cluster import present
from app.cluster.detached_pull import (
    ACTIVE,
    POLL_S,
    SUFFIX,
    JobCheck,
    ProgressFile,
    Tail,
    driver_alive,
    pull_detached,
    pulls_dir,
    read_progress,
    update_pull,
)
from app.cluster.pulls import CANCELLED, FAILED, PULLING, QUEUED, Pull, check_model_name
from app.cluster.slurm import ServerJob, ServerJobs, Slurm
from app.cluster.submit import SLURM_DIR, Submission, _common, _server_env, check_time, log_dir
from app.errors import UserError
from app.settings.user import Profile, UserConfig
from ledger.ids import new_run_id
from ledger.journal import ensure_private_dir
from ledger.procinfo import this_host

PULL_SCRIPT = SLURM_DIR / "ollama-pull.sbatch"
JOB_PREFIX = "notes-pull-"  # not `ollama…`: squeue must not take a pull job for a server job
REGISTRY = "https://registry.ollama.ai"
REGISTRY_ENV = "NOTES_TUI_REGISTRY"  # a registry mirror (its base URL), or "off": the size is not asked
REGISTRY_TIMEOUT_S = 5.0
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
DEFAULT_MODELS_DIR = "~/.ollama/models"
SERVER_JOB_PREFIX = "ollama-"  # server start names its jobs ollama-<profile>
QUOTA_FIX = ("remove a model first (notes-tui models rm NAME), or raise [models] quota_gb in the user config if your "
             "allowance is larger")


def say(text: str) -> None:
    print(f"notes-tui pull job: {text}", file=sys.stderr, flush=True)


def home_path(path: Path | str) -> str:
    """A path as people read it: ~ for the home directory."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if home != "/" and (text == home or text.startswith(home + "/")) else text


def models_dir_for(profile: Profile | None, environ: dict[str, str]) -> Path:
    """Where a job from `profile` keeps its models: the profile's models_dir, else $OLLAMA_MODELS, else Ollama's
    default (what the job scripts export as OLLAMA_MODELS)."""
    if profile is not None and profile.models_dir:
        return Path(os.path.expanduser(profile.models_dir))
    return Path(os.path.expanduser(environ.get("OLLAMA_MODELS") or DEFAULT_MODELS_DIR))


def same_dir(a: str | Path | None, b: str | Path | None) -> bool:
    return bool(a and b) and os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))


def job_label(job_id: str, cluster: str | None) -> str:
    """What a pull job's progress file gives as its `url`: where the pull happens, in words (`job 1234 on smp`)."""
    return f"job {job_id}" + (f" on {cluster}" if cluster else "")


# ---- the registry and the quota ----

@dataclass(frozen=True)
class Manifest:
    layers: tuple[tuple[str, int], ...]  # (digest, size) of the config and of every layer

    @property
    def size(self) -> int:
        return sum(size for _, size in self.layers)


def _name_parts(name: str) -> tuple[str | None, str, str, str]:
    """(registry host or None for the default, namespace, model, tag) of an Ollama model name."""
    path, _, tag = full_name(name).rpartition(":")
    parts = path.split("/")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], tag
    if len(parts) == 2:
        return None, parts[0], parts[1], tag
    return None, "library", parts[0], tag


def manifest_url(name: str, environ: dict[str, str]) -> str | None:
    """Where the model's manifest is (None: `$NOTES_TUI_REGISTRY` is off)."""
    base = environ.get(REGISTRY_ENV, "").strip()
    if base.lower() == "off":
        return None
    host, namespace, model, tag = _name_parts(name)
    base = base or (f"https://{host}" if host else REGISTRY)
    return f"{base.rstrip('/')}/v2/{namespace}/{model}/manifests/{tag}"


def fetch_manifest(name: str, environ: dict[str, str]) -> tuple[Manifest | None, str]:
    """The model's manifest from its registry, or None and why not. A registry that has no such model or tag: the
    user's mistake, one line (as the pull itself would end)."""
    url = manifest_url(name, environ)
    if url is None:
        return None, f"{REGISTRY_ENV}=off"
    try:
        resp = httpx.get(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=REGISTRY_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        return None, f"the registry did not answer: {type(exc).__name__}"
    if resp.status_code == 404:
        raise UserError(f"{name!r} is not in the registry ({httpx.URL(url).host} has no such model or tag) — check "
                        "the name at ollama.com/library, e.g. llama3.1:8b")
    if resp.status_code != 200:
        return None, f"the registry said HTTP {resp.status_code}"
    try:
        doc = resp.json()
        entries = [doc.get("config"), *doc["layers"]]
        layers = tuple((str(e["digest"]), int(e["size"])) for e in entries if e)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, "the registry's answer was not a manifest"
    return Manifest(layers), ""


def blob_sizes(models_dir: Path) -> dict[str, int]:
    """The size of every file in the directory's blobs/ (a partial download too: it takes its room)."""
    sizes: dict[str, int] = {}
    with contextlib.suppress(OSError), os.scandir(models_dir / "blobs") as it:
        for entry in it:
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
    return sizes


def to_fetch(manifest: Manifest, sizes: dict[str, int]) -> int:
    """Bytes a pull still has to bring: the layers not complete in blobs/ (less what their partial files hold)."""
    total = 0
    for digest, size in manifest.layers:
        blob = digest.replace(":", "-")
        if sizes.get(blob) == size:
            continue
        partial = sum(n for f, n in sizes.items() if f.startswith(blob + "-partial"))
        total += max(0, size - partial)
    return total


def manifest_path(models_dir: Path, name: str) -> Path:
    host, namespace, model, tag = _name_parts(name)
    return models_dir / "manifests" / (host or "registry.ollama.ai") / namespace / model / tag


@dataclass(frozen=True)
class QuotaCheck:
    used: int  # bytes in blobs/ now
    fetch: int | None  # bytes the pull brings; None: unknown (the registry did not say)
    up_to_date: bool  # the manifest and every layer are there: nothing to pull
    text: str


def check_quota(name: str, models_dir: Path, quota_bytes: int, environ: dict[str, str],
                manifest: Callable[[str, dict[str, str]], tuple[Manifest | None, str]] = fetch_manifest) -> QuotaCheck:
    """The directory's blobs and the model's missing layers against the quota; over it: UserError."""
    sizes = blob_sizes(models_dir)
    used = sum(sizes.values())
    shown, quota = home_path(models_dir), f"{quota_bytes / 1e9:g} GB"
    found, why = manifest(name, environ)
    if found is None:
        if used >= quota_bytes:
            raise UserError(f"{shown} holds {present.size(used)}, at or over the {quota} quota, and the size of {name} "
                            f"is unknown ({why}) — nothing submitted; {QUOTA_FIX}")
        return QuotaCheck(used, None, False, f"{shown} holds {present.size(used)} of the {quota} quota "
                          f"({used / quota_bytes:.0%}); the size of {name} is unknown ({why}): the pull says so if it "
                          "passes the quota")
    fetch = to_fetch(found, sizes)
    if fetch == 0 and manifest_path(models_dir, name).is_file():
        return QuotaCheck(used, 0, True, f"{name} is already in {shown} with every layer the registry lists: "
                          "nothing to pull")
    if used + fetch > quota_bytes:
        raise UserError(f"{name} needs {present.size(fetch)} more in {shown}, which holds {present.size(used)}: "
                        f"{present.size(used + fetch)} would pass the {quota} quota — nothing submitted; {QUOTA_FIX}")
    return QuotaCheck(used, fetch, False, f"{name}: {present.size(fetch)} to fetch into {shown}, which holds "
                      f"{present.size(used)}: {present.size(used + fetch)} of the {quota} quota "
                      f"({(used + fetch) / quota_bytes:.0%})")


# ---- the submission ----

_CLUSTER_WORDS = ("-M", "--clusters", "--cluster")
_CLUSTER_GLUED = re.compile(r"^(?:--clusters?=|-M)(\S+)$")


def split_cluster(extra: list[str] | tuple[str, ...], default: str | None) -> tuple[str | None, list[str]]:
    """A profile's cluster (`extra = ["--clusters=smp"]`, the SOP's `-M smp`), else `default`; and the rest of its
    extra options. notes-tui passes -M itself, and asks squeue and scancel on that cluster too."""
    cluster, rest = default, []
    words = iter(extra)
    for word in words:
        if word in _CLUSTER_WORDS:
            cluster = next(words, cluster)
            continue
        glued = _CLUSTER_GLUED.match(word)
        if glued:
            cluster = glued.group(1)
            continue
        rest.append(word)
    return cluster, rest


def job_name(name: str) -> str:
    return JOB_PREFIX + (re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "model")


def pull_submission(name: str, profile: Profile, models_dir: Path, progress_file: Path, ledger_dir: Path,
                    environ: dict[str, str], cluster: str | None, time_limit: str | None = None) -> Submission:
    """The pull job: the profile's partition, account, memory, CPUs and time; never a GPU."""
    _, extra = split_cluster(profile.extra, cluster)
    opts = [f"--job-name={job_name(name)}", f"--output={log_dir(ledger_dir) / '%x-%j.out'}"]
    opts += _common(profile.partition, profile.account, profile.mem, profile.cpus,
                    check_time(time_limit) or profile.time)
    opts += extra
    env = _server_env(profile, ledger_dir, environ, cluster)
    env["OLLAMA_MODELS"] = str(models_dir)
    env["NOTES_TUI_ISOLATE"] = "0"  # a pull needs the registry: the server keeps the node's network
    return Submission(PULL_SCRIPT, tuple(opts), env, args=(name, str(progress_file)))


@dataclass(frozen=True)
class PullJob:
    name: str
    profile: str
    job_id: str | None  # None: nothing was submitted, the model is there already
    cluster: str | None
    models_dir: Path
    quota: QuotaCheck
    progress_file: Path | None = None
    output: Path | None = None  # the job's output file


def check_profile(config: UserConfig, config_path: Path, profile_name: str) -> Profile:
    profile = config.profiles.get(profile_name)
    if profile is None:
        have = ", ".join(sorted(config.profiles)) or "none yet"
        raise UserError(f"--profile {profile_name}: no such profile in {config_path} (have: {have}) — add "
                        f'[profiles.{profile_name}] with partition = "smp", mem = "16G", cpus = 4 (see '
                        "slurm/config.example.toml)")
    if profile.gres or profile.gpus:
        asked = f'gres = "{profile.gres}"' if profile.gres else f'gpus = "{profile.gpus}"'
        raise UserError(f"--profile {profile_name} asks for a GPU ({asked}): a pull job would hold it for a download "
                        "— pull with a profile without gres or gpus, e.g. [profiles.cpu] partition = \"smp\" (the SOP "
                        "pulls in an smp session), or through a running server: --host URL")
    if profile.server_kind != "ollama":
        raise UserError(f"--profile {profile_name} starts an OpenAI-compatible server, which pulls nothing — use a "
                        "profile whose command is Ollama's (ollama serve)")
    return profile


def submit_pull_job(config: UserConfig, config_path: Path, profile_name: str, name: str, ledger_dir: Path,
                    environ: dict[str, str], time_limit: str | None = None, slurm: Slurm | None = None,
                    manifest: Callable[[str, dict[str, str]], tuple[Manifest | None, str]] = fetch_manifest) -> PullJob:
    """Check everything, then submit the pull job and write its progress file's first line. Blocking (the
    registry, sbatch)."""
    name = check_model_name(name)
    profile = check_profile(config, config_path, profile_name)
    check_time(time_limit)
    cluster, _ = split_cluster(profile.extra, config.slurm.cluster)
    models_dir = models_dir_for(profile, environ)
    quota = check_quota(name, models_dir, config.quota_bytes, environ, manifest)
    if quota.up_to_date:
        return PullJob(name, profile_name, None, cluster, models_dir, quota)
    slurm = slurm or Slurm(cluster)
    if not slurm.available:
        raise UserError("there is no Slurm here (no sbatch) — run this on the cluster's login node, or pull through a "
                        "running server: notes-tui models pull NAME --host URL")
    folder = pulls_dir(ledger_dir)
    refuse_second(folder, name, models_dir, ServerJobs(slurm))
    try:
        ensure_private_dir(folder)
    except OSError as exc:
        raise UserError(f"cannot keep the pull's progress in {folder}: {exc.strerror or exc} — fix that folder, or "
                        "use another ledger dir (--ledger DIR)") from None
    path = folder / f"{new_run_id()}{SUFFIX}"
    sub = pull_submission(name, profile, models_dir, path, ledger_dir, environ, cluster, time_limit)
    job_id = sub.submit(slurm)
    write_submitted(path, name, job_id, cluster, models_dir, quota.fetch)
    output = log_dir(ledger_dir) / f"{job_name(name)}-{job_id}.out"
    return PullJob(name, profile_name, job_id, cluster, models_dir, quota, path, output)


def refuse_second(folder: Path, name: str, models_dir: Path, jobs: ServerJobs) -> None:
    """One pull job per model and models directory: two servers writing the same blobs would spoil them."""
    try:
        files = sorted(n for n in os.listdir(folder) if n.endswith(SUFFIX))
    except OSError:
        return
    now, host = time.time(), this_host()

    def queued(record: dict) -> bool | None:
        return jobs.in_queue(str(record["job_id"]), since=float(record.get("at") or 0.0))

    for fname in files:
        record = read_progress(folder / fname)
        if (not record or not record.get("job_id") or record.get("state") not in ACTIVE
                or full_name(str(record.get("name"))) != full_name(name)
                or not same_dir(record.get("models_dir"), models_dir)):
            continue
        if driver_alive(record, now, host, queued):
            job = record["job_id"]
            raise UserError(f"{name} is being pulled into {home_path(models_dir)} by job {job} already — wait for it "
                            f"(the Models screen follows it), or cancel it: scancel {job}")


def write_submitted(path: Path, name: str, job_id: str, cluster: str | None, models_dir: Path,
                    total: int | None) -> None:
    """The progress file's first line, for the time the job is pending; nothing when the job wrote first."""
    now = time.time()
    record = {"v": 1, "id": path.name.removesuffix(SUFFIX), "url": job_label(job_id, cluster), "name": name,
              "host": this_host(), "pid": None, "pid_start": None, "state": QUEUED, "phase": f"job {job_id} pending",
              "done": 0, "total": total or 0, "rate": None, "error": None, "wrong_name": False, "over_quota": None,
              "queued_at": now, "started_at": None, "finished_at": None, "at": now,
              "job_id": job_id, "cluster": cluster, "models_dir": str(models_dir)}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, _json_line(record))
    finally:
        os.close(fd)


def _json_line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


# ---- following it from the login node ----

def job_check(jobs: ServerJobs) -> JobCheck:
    return lambda record: jobs.in_queue(str(record["job_id"]), since=float(record.get("at") or 0.0))


def follow(path: Path, on_update: Callable[[Pull], None], check: JobCheck | None, poll_s: float = POLL_S,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> Pull:
    """Read the progress file until the pull ends (done, failed, cancelled, or stopped: its job gone without a
    word); `on_update` at every new line."""
    tail = Tail(path)
    pull = Pull(id=path.name.removesuffix(SUFFIX), url="", name="")
    host = this_host()
    while True:
        # whether its driver is alive first, then the file: a process that is gone wrote its last line before
        alive = driver_alive(tail.record, clock(), host, check) if tail.record else None
        changed = tail.read()
        record = tail.record
        if record is not None:
            if alive is None:
                alive = driver_alive(record, clock(), host, check)
            pull.url, pull.name = str(record.get("url") or ""), str(record.get("name") or "")
            update_pull(pull, record, alive)
            if changed or not pull.active:
                on_update(pull)
            if not pull.active:
                return pull
        sleep(poll_s)


def cancel_pull_job(pull: Pull, progress_file: Path) -> None:
    """scancel the pull's job; a job that never started gets its last line here. Blocking (scancel)."""
    if not pull.job_id:
        raise UserError(f"{pull.name} is not pulled by a job")
    Slurm(pull.job_cluster).cancel(pull.job_id)
    record = read_progress(progress_file)
    if record is not None and record.get("state") in ACTIVE and not isinstance(record.get("pid"), int):
        now = time.time()
        record.update(state=CANCELLED, phase="", rate=None, finished_at=now, at=now)
        with contextlib.suppress(OSError), open(progress_file, "ab") as f:
            f.write(_json_line(record))


# ---- the Models screen: which servers use a pull's directory ----

def server_models_dir(job: ServerJob | None, config: UserConfig, environ: dict[str, str]) -> str | None:
    """The models directory of a server job: as the job recorded it, else its profile's (server start names the
    job ollama-PROFILE), else Ollama's default (the SOP's own jobs). None for a server that is no job of the user:
    where it keeps its models is not known here."""
    if job is None:
        return None
    from app.cluster.tokens import job_record

    record = job_record(job.job_id, job.cluster) or {}
    if record.get("models_dir"):
        return str(record["models_dir"])
    if job.kind != "ollama":
        return None
    profile = config.profiles.get(job.name.removeprefix(SERVER_JOB_PREFIX)) if job.name.startswith(
        SERVER_JOB_PREFIX) else None
    return str(models_dir_for(profile, environ))


# ---- inside the job ----

async def pull_in_job(name: str, progress_file: Path, command: str, ready_timeout_s: float,
                      environ: dict[str, str], quota_bytes: int | None,
                      on_update: Callable[[Pull], None] = lambda _: None) -> Pull:
    """What slurm/ollama-pull.sbatch runs: the server on a loopback port of the node, the pull through it (its
    progress in `progress_file`), the server stopped. TERM (scancel, the time limit) cancels the pull."""
    from app.cluster.serverjob import _ready_unless_stopped, _stop, free_port, server_argv, server_env

    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        raise UserError("notes-tui models pull-in-job runs inside a pull job — submit one with: notes-tui models pull "
                        "NAME --profile PROFILE")
    name = check_model_name(name)
    cluster = environ.get("NOTES_TUI_CLUSTER") or None
    models_dir = environ.get("OLLAMA_MODELS") or os.path.expanduser(DEFAULT_MODELS_DIR)
    node = environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    try:
        progress = ProgressFile(progress_file, job_label(job_id, cluster), name,
                                extra={"job_id": job_id, "cluster": cluster, "models_dir": models_dir, "node": node})
    except OSError as exc:
        raise UserError(f"cannot write the pull's progress to {progress_file} ({exc.strerror or exc}) — is the "
                        "submitter's ledger dir on a file system this node shares?") from None
    progress.record.update(state=PULLING, phase=f"starting the server on {node}",
                           started_at=progress.record.get("started_at") or time.time())
    progress.flush()
    handed_over = False
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keeper = asyncio.ensure_future(progress.keep())  # a heartbeat while the server starts (minutes, on a cold node)
    child: asyncio.subprocess.Process | None = None
    pull = Pull(id=progress.id, url=progress.record["url"], name=name, job_id=job_id, models_dir=models_dir,
                job_cluster=cluster)
    try:
        port = free_port("127.0.0.1")
        argv = server_argv(command, port)
        try:
            child = await asyncio.create_subprocess_exec(*argv, env=server_env(environ, port), start_new_session=True,
                                                         stdout=sys.stderr.fileno())
        except OSError as exc:
            return _ended(progress, pull, FAILED, f"cannot start the server command {argv[0]!r} "
                          f"({exc.strerror or exc}) — check the profile's command")
        say(f"job {job_id}: started {argv[0]} (pid {child.pid}) on 127.0.0.1:{port} of {node}, models in "
            f"{models_dir}; waiting for it to answer")
        try:
            ready = await _ready_unless_stopped(port, child, ready_timeout_s, "ollama", stop)
        except UserError as exc:
            return _ended(progress, pull, FAILED, f"job {job_id}: {exc}")
        if not ready or stop.is_set():
            return _ended(progress, pull, CANCELLED, None)
        keeper.cancel()
        say(f"job {job_id}: the server answers; pulling {name}")
        handed_over = True  # pull_detached writes the file from here on, and closes it
        pull = await pull_detached(progress.path, f"http://127.0.0.1:{port}", name, quota_bytes, on_update, progress)
        pull.job_id, pull.models_dir = job_id, models_dir
        say(f"job {job_id}: the pull of {name} ended {pull.state}" + (f": {pull.error}" if pull.error else "")
            + "; stopping the server")
        return pull
    finally:
        keeper.cancel()
        with contextlib.suppress(Exception):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if child is not None:
            await _stop(child)
        if not handed_over:
            progress.close()


def _ended(progress: ProgressFile, pull: Pull, state: str, error: str | None) -> Pull:
    now = time.time()
    progress.record.update(state=state, error=error, rate=None, finished_at=now)
    progress.flush()
    pull.state, pull.error, pull.finished_at = state, error, now
    if error:
        say(error)
    return pull
