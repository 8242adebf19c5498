"""Pulls without a GPU (issue 25 item 3), without a cluster: the pull job's sbatch options, environment and arguments;
the checks that refuse before anything is submitted (sbatch replaced by a fake that records every call: none); the
quota from the models directory's blobs and the registry's manifest; the progress file's first line and how a pending
job's line is judged alive; following the file to the end; the job's side run in-process against the stand-in, which
leaves the model's files in the directory; the Models screen's rule for which servers use a pull's directory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.cluster import pulljob
from app.cluster.detached_pull import ProgressFile, driver_alive, read_progress, update_pull
from app.cluster.pulljob import (
    JOB_PREFIX,
    PULL_SCRIPT,
    Manifest,
    check_quota,
    follow,
    manifest_url,
    pull_submission,
    server_models_dir,
    split_cluster,
    submit_pull_job,
    to_fetch,
)
from app.cluster.pulls import CANCELLED, DONE, FAILED, PULLING, QUEUED, STOPPED, Pull
from app.cluster.slurm import ServerJob, ServerJobs, Slurm
from app.errors import UserError
from app.settings.user import Profile, UserConfig
from tests.helpers.support import ROOT, TESTS

STANDIN = TESTS / "standin" / "standin_ollama.py"
LLAMA = Manifest((("sha256:" + "a" * 64, 4_000_000_000), ("sha256:" + "b" * 64, 8_000), ("sha256:" + "c" * 64, 1_000)))


class FakeRun:
    """subprocess.run for Slurm: every call recorded; sbatch answers a job id, squeue the jobs it is given."""

    def __init__(self, queue: str = ""):
        self.calls: list[list[str]] = []
        self.envs: list[dict | None] = []
        self.queue = queue

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        self.envs.append(kwargs.get("env"))
        if argv[0] == "sbatch":
            return subprocess.CompletedProcess(argv, 0, "4242\n", "")
        if argv[0] == "squeue":
            return subprocess.CompletedProcess(argv, 0, self.queue, "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def commands(self) -> list[str]:
        return [c[0] for c in self.calls]


def fake_slurm(run: FakeRun) -> Slurm:
    return Slurm(run=run, which=lambda _: "/usr/bin/squeue")


def config(**profiles: dict) -> UserConfig:
    return UserConfig.model_validate({"models": {"quota_gb": 75}, "profiles": profiles})


def blob(models_dir: Path, digest: str, size: int) -> None:
    (models_dir / "blobs").mkdir(parents=True, exist_ok=True)
    with open(models_dir / "blobs" / digest.replace(":", "-"), "wb") as f:
        f.truncate(size)  # sparse: the size is what counts


def known(manifest: Manifest | None, why: str = ""):
    return lambda name, environ: (manifest, why)


# ---- what is submitted ----

def test_the_job_has_the_profiles_cpu_resources_and_never_a_gpu(tmp_path):
    profile = Profile(partition="smp", account="lab", mem="16G", cpus=4, time="0-01:00:00", models_dir="~/m",
                      command="singularity exec ollama.sif ollama serve", extra=["--clusters=smp", "--qos=short"])
    sub = pull_submission("llama3.1:8b", profile, tmp_path / "models", tmp_path / "pulls" / "X.jsonl",
                          tmp_path / "ledger", {"PATH": "/bin", "OLLAMA_MODELS": "/elsewhere"}, "smp")
    assert sub.script == PULL_SCRIPT and PULL_SCRIPT.is_file() and os.access(PULL_SCRIPT, os.X_OK)
    assert sub.options == (f"--job-name={JOB_PREFIX}llama3.1_8b", f"--output={tmp_path / 'ledger' / 'slurm'}/%x-%j.out",
                           "--partition=smp", "--account=lab", "--mem=16G", "--cpus-per-task=4",
                           "--time=0-01:00:00", "--qos=short")  # -M is the Slurm object's, not an option twice
    assert not any("gres" in o or "gpus" in o for o in sub.options)
    assert sub.args == ("llama3.1:8b", str(tmp_path / "pulls" / "X.jsonl"))
    env = sub.env
    assert env["OLLAMA_MODELS"] == str(tmp_path / "models")  # the directory the quota was checked on
    assert env["NOTES_TUI_SERVER_COMMAND"] == "singularity exec ollama.sif ollama serve"
    assert env["NOTES_TUI_LEDGER"] == str(tmp_path / "ledger") and env["NOTES_TUI_CLUSTER"] == "smp"
    assert env["NOTES_TUI_ROOT"] == str(ROOT) and env["NOTES_TUI_PYTHON"] == sys.executable
    assert not JOB_PREFIX.startswith("ollama")  # squeue must not take it for a server job
    # the time given on the command line wins, and is checked
    sub = pull_submission("x", profile, tmp_path, tmp_path / "p.jsonl", tmp_path / "ledger", {}, None, "0-00:20:00")
    assert "--time=0-00:20:00" in sub.options
    with pytest.raises(UserError, match="is not a Slurm time"):
        pull_submission("x", profile, tmp_path, tmp_path / "p.jsonl", tmp_path / "ledger", {}, None, "soon")


def test_the_script_runs_the_pull_in_the_background_and_passes_term_on():
    text = PULL_SCRIPT.read_text()
    assert "models pull-in-job \"$1\" --progress-file \"$progress\"" in text
    assert "trap 'kill -TERM \"$pid\"" in text and "wait \"$pid\"" in text
    assert "OLLAMA_MODELS" in text and "OLLAMA_NOPRUNE=1" in text and "--gres" not in text.split("#SBATCH")[-1]
    assert "#SBATCH --job-name=notes-pull" in text


@pytest.mark.parametrize(("extra", "cluster", "rest"), [
    ([], "gpu", []),
    (["--clusters=smp"], "smp", []),
    (["-M", "smp", "--qos=x"], "smp", ["--qos=x"]),
    (["-Msmp"], "smp", []),
    (["--cluster", "smp"], "smp", []),
    (["--constraint=intel"], "gpu", ["--constraint=intel"]),
])
def test_a_profiles_cluster_comes_from_its_extra_options(extra, cluster, rest):
    assert split_cluster(extra, "gpu") == (cluster, rest)


def test_the_manifest_is_asked_of_the_models_registry():
    assert manifest_url("llama3.1:8b", {}) == "https://registry.ollama.ai/v2/library/llama3.1/manifests/8b"
    assert manifest_url("llama3", {}) == "https://registry.ollama.ai/v2/library/llama3/manifests/latest"
    assert manifest_url("me/model:q4", {}) == "https://registry.ollama.ai/v2/me/model/manifests/q4"
    assert manifest_url("hf.co/org/model:q8", {}) == "https://hf.co/v2/org/model/manifests/q8"
    assert manifest_url("llama3.1:8b", {"NOTES_TUI_REGISTRY": "http://mirror:5000/"}) == \
        "http://mirror:5000/v2/library/llama3.1/manifests/8b"
    assert manifest_url("llama3.1:8b", {"NOTES_TUI_REGISTRY": "off"}) is None


# ---- the quota ----

def test_what_a_pull_still_fetches_counts_complete_blobs_and_partial_downloads(tmp_path):
    models = tmp_path / "models"
    blob(models, LLAMA.layers[1][0], 8_000)  # complete
    blob(models, LLAMA.layers[0][0] + "-partial-0", 1_000_000_000)  # a quarter of the big one
    sizes = pulljob.blob_sizes(models)
    assert sum(sizes.values()) == 1_000_008_000
    assert to_fetch(LLAMA, sizes) == 3_000_000_000 + 1_000
    assert to_fetch(LLAMA, {}) == LLAMA.size
    assert pulljob.blob_sizes(tmp_path / "nowhere") == {}


def test_the_quota_check_adds_what_the_pull_brings_to_what_the_directory_holds(tmp_path):
    models = tmp_path / "models"
    blob(models, "sha256:" + "9" * 64, 72_000_000_000)
    with pytest.raises(UserError) as err:
        check_quota("llama3.1:8b", models, 75_000_000_000, {}, known(LLAMA))
    text = str(err.value)
    assert "llama3.1:8b needs 4.0 GB more" in text and "holds 72.0 GB: 76.0 GB" in text
    assert "would pass the 75 GB quota — nothing submitted" in text and "models rm" in text
    ok = check_quota("llama3.1:8b", models, 80_000_000_000, {}, known(LLAMA))
    assert (ok.used, ok.fetch, ok.up_to_date) == (72_000_000_000, LLAMA.size, False)
    assert "4.0 GB to fetch" in ok.text and "76.0 GB of the 80 GB quota (95%)" in ok.text
    # the size unknown: the directory's use alone decides
    unknown = check_quota("llama3.1:8b", models, 75_000_000_000, {}, known(None, "the registry did not answer"))
    assert unknown.fetch is None and "the size of llama3.1:8b is unknown (the registry did not answer)" in unknown.text
    with pytest.raises(UserError, match="at or over the 72 GB quota, and the size of llama3.1:8b is unknown"):
        check_quota("llama3.1:8b", models, 72_000_000_000, {}, known(None, "x"))


def test_a_model_whose_manifest_and_layers_are_there_is_not_pulled_again(tmp_path):
    models = tmp_path / "models"
    for digest, size in LLAMA.layers:
        blob(models, digest, size)
    assert not check_quota("llama3.1:8b", models, 75_000_000_000, {}, known(LLAMA)).up_to_date  # no manifest yet
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "llama3.1" / "8b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    check = check_quota("llama3.1:8b", models, 75_000_000_000, {}, known(LLAMA))
    assert check.up_to_date and "already in" in check.text


def test_the_registry_is_asked_once_and_a_name_it_does_not_know_is_refused(tmp_path):
    from tests.standin.standin_ollama import StandinOllama

    with StandinOllama() as registry:
        env = {"NOTES_TUI_REGISTRY": registry.url}
        found, why = pulljob.fetch_manifest("llama3.1:8b", env)
        assert why == "" and found is not None and len(found.layers) == 5 and found.size > 4e9
        with pytest.raises(UserError, match="'nope:1b' is not in the registry"):
            pulljob.fetch_manifest("nope:1b", env)
    found, why = pulljob.fetch_manifest("llama3.1:8b", {"NOTES_TUI_REGISTRY": "http://127.0.0.1:9"})
    assert found is None and why.startswith("the registry did not answer")


# ---- refused before anything is submitted ----

def submit(tmp_path, cfg: UserConfig, run: FakeRun, name: str = "llama3.1:8b", profile: str = "cpu",
           manifest=known(LLAMA), **kw):
    return submit_pull_job(cfg, tmp_path / "config.toml", profile, name, tmp_path / "ledger",
                           {"OLLAMA_MODELS": str(tmp_path / "models")}, slurm=fake_slurm(run), manifest=manifest, **kw)


def test_over_the_quota_nothing_is_submitted_and_nothing_written(tmp_path):
    blob(tmp_path / "models", "sha256:" + "9" * 64, 72_000_000_000)
    run = FakeRun()
    with pytest.raises(UserError, match="would pass the 75 GB quota — nothing submitted"):
        submit(tmp_path, config(cpu={"partition": "smp"}), run)
    assert run.calls == []  # no sbatch, not even a squeue
    assert not (tmp_path / "ledger").exists()


@pytest.mark.parametrize(("profiles", "profile", "said"), [
    ({"cpu": {"partition": "smp"}}, "l40s", "--profile l40s: no such profile in"),
    ({"l40s": {"partition": "l40s", "gres": "gpu:1"}}, "l40s", "--profile l40s asks for a GPU (gres = \"gpu:1\")"),
    ({"a100": {"gpus": "1"}}, "a100", "--profile a100 asks for a GPU (gpus = \"1\")"),
    ({"vllm": {"command": "vllm serve m --port {port}"}}, "vllm", "starts an OpenAI-compatible server"),
])
def test_a_profile_that_cannot_pull_is_one_line_and_nothing_is_submitted(tmp_path, profiles, profile, said):
    run = FakeRun()
    with pytest.raises(UserError) as err:
        submit(tmp_path, config(**profiles), run, profile=profile)
    assert said in str(err.value) and " — " in str(err.value)
    assert run.calls == []


def test_a_wrong_name_is_refused_before_the_registry_is_asked(tmp_path):
    asked = []
    run = FakeRun()
    with pytest.raises(UserError, match="is not a model name"):
        submit(tmp_path, config(cpu={}), run, name="llama 3", manifest=lambda n, e: asked.append(n) or (LLAMA, ""))
    assert asked == [] and run.calls == []


def test_up_to_date_is_said_and_nothing_submitted(tmp_path):
    models = tmp_path / "models"
    for digest, size in LLAMA.layers:
        blob(models, digest, size)
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "llama3.1" / "8b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    run = FakeRun()
    job = submit(tmp_path, config(cpu={}), run)
    assert job.job_id is None and job.quota.up_to_date and run.calls == []


def test_a_submitted_job_gets_its_progress_file_first_line(tmp_path):
    run = FakeRun()
    job = submit(tmp_path, config(cpu={"partition": "smp", "mem": "16G", "cpus": 4}), run, time_limit="0-00:30:00")
    assert run.commands() == ["sbatch"]
    argv = run.calls[0]
    assert argv[:2] == ["sbatch", "--parsable"] and str(PULL_SCRIPT) in argv and argv[-2:] == [
        "llama3.1:8b", str(job.progress_file)]
    assert "--partition=smp" in argv and "--time=0-00:30:00" in argv
    assert run.envs[0]["OLLAMA_MODELS"] == str(tmp_path / "models")
    assert job.job_id == "4242" and job.progress_file.parent == tmp_path / "ledger" / "pulls"
    assert oct(job.progress_file.stat().st_mode & 0o777) == "0o600"
    first = read_progress(job.progress_file)
    assert first["state"] == QUEUED and first["pid"] is None and first["job_id"] == "4242"
    assert first["url"] == "job 4242" and first["models_dir"] == str(tmp_path / "models")
    assert first["total"] == LLAMA.size and first["phase"] == "job 4242 pending"
    assert job.output == tmp_path / "ledger" / "slurm" / "notes-pull-llama3.1_8b-4242.out"


def test_a_second_pull_job_of_the_same_model_into_the_same_directory_is_refused_while_the_first_is_queued(tmp_path):
    cfg = config(cpu={})
    first = submit(tmp_path, cfg, FakeRun())
    queued = FakeRun(queue="4242|PENDING|Resources||(null)|1:00:00|N/A|smp|notes-pull-llama3.1_8b\n")
    with pytest.raises(UserError, match="is being pulled into .* by job 4242 already"):
        submit(tmp_path, cfg, queued)
    assert queued.commands() == ["squeue"]
    gone = FakeRun(queue="")  # the first job left the queue without a word: no longer in the way
    assert submit(tmp_path, cfg, gone).job_id == "4242" and gone.commands() == ["squeue", "sbatch"]
    other = FakeRun(queue=queued.queue)
    assert submit(tmp_path, cfg, other, name="qwen2.5:7b").job_id and other.commands() == ["sbatch"]
    assert first.progress_file.exists()


# ---- a pending job's line, and following the file ----

def test_a_pending_jobs_line_lives_as_long_as_squeue_lists_the_job(tmp_path):
    record = {"job_id": "7", "pid": None, "host": "login1", "at": time.time() - 3600}
    assert driver_alive(record, time.time(), "login1", lambda r: True)
    assert not driver_alive(record, time.time(), "login1", lambda r: False)
    assert driver_alive(record, time.time(), "login1", lambda r: None)  # Slurm cannot say: not taken for dead
    assert not driver_alive(record, time.time(), "login1")  # no one to ask: an hour-old line is stale
    # the job's own lines (a pid) are judged as any pull's: by their heartbeat from another node
    running = {"job_id": "7", "pid": 123, "host": "smp-n1", "at": time.time()}
    assert driver_alive(running, time.time(), "login1", lambda r: False)


def test_squeue_is_asked_again_when_its_answer_predates_the_job(tmp_path):
    run = FakeRun(queue="")
    jobs = ServerJobs(fake_slurm(run))
    assert jobs.in_queue("9") is False and len(run.calls) == 1
    assert jobs.in_queue("9", since=0.0) is False and len(run.calls) == 1  # rationed
    run.queue = "9|PENDING|Priority||(null)|1:00|N/A|smp|notes-pull-x\n"
    assert jobs.in_queue("9", since=time.time() + 1) is True and len(run.calls) == 2
    assert jobs.jobs == [] and jobs.job_ids == {"9"}  # not a server job, but in the queue
    assert ServerJobs(Slurm(run=run, which=lambda _: None)).in_queue("9") is None


def _progress(tmp_path: Path) -> Path:
    path = tmp_path / "pulls" / "01ABC.jsonl"
    path.parent.mkdir(parents=True)
    pulljob.write_submitted(path, "llama3.1:8b", "77", None, tmp_path / "models", 1000)
    return path


def test_following_reads_the_job_lines_to_the_end(tmp_path):
    path = _progress(tmp_path)
    seen = []

    def job() -> None:
        time.sleep(0.3)
        progress = ProgressFile(path, "job 77", "llama3.1:8b", extra={"job_id": "77", "models_dir": "m"})
        progress.record.update(state=PULLING, phase="pulling 6a07", done=500, total=1000)
        progress.flush()
        time.sleep(0.3)
        progress.record.update(state=DONE, done=1000, finished_at=time.time())
        progress.flush()
        progress.close()

    writer = threading.Thread(target=job)
    writer.start()
    pull = follow(path, lambda p: seen.append((p.state, p.done)), lambda r: True, poll_s=0.05)
    writer.join()
    assert pull.state == DONE and pull.job_id == "77" and pull.name == "llama3.1:8b"
    assert seen[0] == (QUEUED, 0) and (PULLING, 500) in seen and seen[-1] == (DONE, 1000)


def test_a_job_that_leaves_the_queue_without_a_word_is_stopped(tmp_path):
    path = _progress(tmp_path)
    pull = follow(path, lambda p: None, lambda r: False, poll_s=0.01)
    assert pull.state == STOPPED


def test_cancelling_a_pending_job_writes_its_last_line(tmp_path, monkeypatch):
    path = _progress(tmp_path)
    cancelled = []
    monkeypatch.setattr(Slurm, "cancel", lambda self, job_id: cancelled.append((self.cluster, job_id)))
    pull = Pull(id="01ABC", url="job 77", name="llama3.1:8b")
    update_pull(pull, read_progress(path), True)
    pulljob.cancel_pull_job(pull, path)
    assert cancelled == [(None, "77")] and read_progress(path)["state"] == CANCELLED


# ---- the Models screen: which servers use a pull's directory ----

def _job(name: str, job_id: str = "5") -> ServerJob:
    return ServerJob(job_id=job_id, name=name, state="RUNNING", reason="", node="n1", host="n1", port=4000,
                     time_left_s=600, gres="gpu:1", partition="l40s")


def test_a_server_jobs_models_directory(tmp_path, monkeypatch):
    from app.cluster import tokens

    cfg = config(l40s={"models_dir": str(tmp_path / "shared")}, plain={})
    env = {"OLLAMA_MODELS": str(tmp_path / "mine")}
    assert server_models_dir(None, cfg, env) is None  # not a job: unknown
    assert server_models_dir(_job("ollama-l40s"), cfg, env) == str(tmp_path / "shared")
    assert server_models_dir(_job("ollama-plain"), cfg, env) == str(tmp_path / "mine")
    assert server_models_dir(_job("ollama_0.11.10_server_job"), cfg, {}) == os.path.expanduser("~/.ollama/models")
    tokens.write_record(tokens.record_path("6"), {"job_id": "6", "models_dir": "/recorded", "token": "t"})
    assert server_models_dir(_job("ollama-l40s", "6"), cfg, env) == "/recorded"  # as the job itself recorded it
    assert pulljob.same_dir(tmp_path / "shared", str(tmp_path / "shared") + "/")
    assert not pulljob.same_dir(None, tmp_path)


# ---- the job's side, in-process against the stand-in ----

def _standin_command(*extra: str) -> str:
    return (f"sh -c 'exec {sys.executable} {STANDIN} --port ${{OLLAMA_HOST##*:}} --pull-seconds 0.5 "
            f"--models-dir=$OLLAMA_MODELS {' '.join(extra)}'")


def _in_job(tmp_path: Path, command: str, name: str = "llama3.1:8b"):
    path = _progress(tmp_path)
    env = dict(os.environ, SLURM_JOB_ID="77", OLLAMA_MODELS=str(tmp_path / "models"), SLURMD_NODENAME="n9")
    pull = asyncio.run(pulljob.pull_in_job(name, path, command, 20.0, env, 75_000_000_000))
    return pull, read_progress(path)


def test_the_job_pulls_through_its_own_server_and_leaves_the_files_in_the_directory(tmp_path):
    pull, last = _in_job(tmp_path, _standin_command())
    assert pull.state == DONE and last["state"] == DONE and last["job_id"] == "77" and last["node"] == "n9"
    assert last["models_dir"] == str(tmp_path / "models") and last["url"] == "job 77"
    manifest = tmp_path / "models" / "manifests" / "registry.ollama.ai" / "library" / "llama3.1" / "8b"
    layers = json.loads(manifest.read_text())["layers"]
    assert all((tmp_path / "models" / "blobs" / lay["digest"].replace(":", "-")).stat().st_size == lay["size"]
               for lay in layers)
    lines = [json.loads(line) for line in (tmp_path / "pulls" / "01ABC.jsonl").read_text().splitlines()]
    assert lines[0]["pid"] is None and all(isinstance(r["pid"], int) for r in lines[1:])
    assert any(r["phase"] == "starting the server on n9" for r in lines)
    # the server was stopped: nothing listens on its port any more
    out = subprocess.run(["pgrep", "-f", f"models-dir={tmp_path / 'models'}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_a_server_that_does_not_start_fails_the_pull_in_one_line(tmp_path):
    pull, last = _in_job(tmp_path, "sh -c 'echo no GPU driver >&2; exit 3'")
    assert pull.state == FAILED and last["state"] == FAILED
    assert "exited with status 3 before it answered" in last["error"] and "\n" not in last["error"]


def test_a_name_the_registry_lacks_fails_as_a_wrong_name(tmp_path):
    pull, last = _in_job(tmp_path, _standin_command(), name="nope:1b")
    assert pull.state == FAILED and pull.wrong_name and last["wrong_name"]


def test_the_job_side_needs_a_job(tmp_path):
    with pytest.raises(UserError, match="runs inside a pull job"):
        asyncio.run(pulljob.pull_in_job("llama3", tmp_path / "p.jsonl", "ollama serve", 5, {}, None))


# ---- the command line ----

def _app(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def test_profile_options_that_do_not_go_together_are_one_line(tmp_path):
    res = _app("models", "pull", "llama3", "--profile", "cpu", "--host", "http://127.0.0.1:9")
    assert res.returncode == 2 and "--profile and --host cannot be combined" in res.stderr
    res = _app("models", "pull", "llama3", "--no-wait", "--host", "http://127.0.0.1:9")
    assert res.returncode == 2 and "--no-wait goes with --profile" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
