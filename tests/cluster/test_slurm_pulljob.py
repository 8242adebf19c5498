"""Issue 25 items 3 and 6 on the real single-node Slurm (slurm/testcluster.sh start): `models pull NAME --profile cpu`
submits a CPU job that starts the stand-in Ollama on a loopback port with OLLAMA_MODELS the profile's models
directory, pulls through it and ends: the model's blobs and manifest are in the directory afterwards, another server
of that directory lists it, the job is gone and the progress file says done; the app's follower (DetachedPulls) sees
the job pending, pulling and done; over the quota nothing is submitted; scancel ends a pull job cleanly. The stand-in
is also the registry the quota asks for the model's size. Every job is cancelled at the end of its test."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cluster.detached_pull import DetachedPulls, read_progress
from app.cluster.pulls import CANCELLED, DONE, PULLING, QUEUED
from tests.helpers.slurmkit import cancel_jobs, cluster_up, queue_has, run_app
from tests.helpers.support import TESTS, need
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def pull_command(seconds: float) -> str:
    # the stand-in keeps what it pulls in $OLLAMA_MODELS, as Ollama does (the job sets it to the profile's models_dir)
    return (f"sh -c 'exec {sys.executable} {TESTS / 'standin' / 'standin_ollama.py'} --latency 0.02 "
            f"--pull-seconds {seconds:g} --port ${{OLLAMA_HOST##*:}} --models-dir=$OLLAMA_MODELS'")


@pytest.fixture
def home(tmp_path, monkeypatch):
    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    models = tmp_path / "models"
    config = tmp_path / "config" / "config.toml"
    config.parent.mkdir()
    profile = 'cpus = 1\nmem = "256M"\ntime = "0-00:10:00"\nready_timeout_s = 60\n'
    config.write_text(f'[profiles.cpu]\n{profile}models_dir = "{models}"\ncommand = "{pull_command(1)}"\n\n'
                      f'[profiles.slowpull]\n{profile}models_dir = "{models}"\ncommand = "{pull_command(60)}"\n\n'
                      f'[profiles.l40s]\n{profile}gres = "gpu:1"\ncommand = "{pull_command(1)}"\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    submitted: list[str] = []
    with StandinOllama() as registry:  # what the quota check asks for the model's size
        monkeypatch.setenv("NOTES_TUI_REGISTRY", registry.url)
        yield config, models, submitted
    cancel_jobs(submitted)


app = run_app


def job_of(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("submitted pull job "))
    return line.split()[3]


def notes_pull_jobs() -> list[str]:
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if " notes-pull-" in ln]


def pull_files(ledger: Path) -> list[Path]:
    return sorted((ledger / "pulls").glob("*.jsonl"))


def test_a_cpu_pull_job_brings_the_model_into_the_models_directory_and_ends(home, private_ledger):
    _, models, submitted = home
    t0 = time.monotonic()
    res = app("models", "pull", "llama3.1:8b", "--profile", "cpu")
    took = time.monotonic() - t0
    job_id = job_of(res.stdout)
    submitted.append(job_id)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "llama3.1:8b: 4.7 GB to fetch into" in res.stdout and "of the 75 GB quota" in res.stdout
    assert "pulled, 4.7 GB" in res.stdout and f"job {job_id} ends with the pull" in res.stdout
    print(f"\nmodels pull --profile: submit to the model in place {took:.1f} s")

    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "llama3.1" / "8b"
    layers = json.loads(manifest.read_text())["layers"]
    for layer in layers:
        assert (models / "blobs" / layer["digest"].replace(":", "-")).stat().st_size == layer["size"]
    wait_for(lambda: not queue_has(job_id), 30, f"pull job {job_id} to leave the queue", every=0.2)
    [progress] = pull_files(private_ledger)
    last = read_progress(progress)
    assert last["state"] == DONE and last["job_id"] == job_id and last["models_dir"] == str(models)
    assert last["done"] == last["total"] == sum(la["size"] for la in layers)
    log = (private_ledger / "slurm" / f"notes-pull-llama3.1_8b-{job_id}.out").read_text()
    assert "the pull of llama3.1:8b ended done; stopping the server" in log

    with StandinOllama(models=(), models_dir=str(models)) as gpu_server:  # a server job of the same directory
        listed = app("models", "list", "--host", gpu_server.url, "--json")
        assert [m["name"] for m in json.loads(listed.stdout)["models"]] == ["llama3.1:8b"]

    again = app("models", "pull", "llama3.1:8b", "--profile", "cpu")
    assert again.returncode == 0 and "already in" in again.stdout and "submitted" not in again.stdout


def test_the_apps_follower_sees_a_pull_job_pending_pulling_and_done(home, private_ledger):
    _, models, submitted = home
    res = app("models", "pull", "qwen2.5:7b", "--profile", "cpu", "--no-wait")
    assert res.returncode == 0, res.stderr
    job_id = job_of(res.stdout)
    submitted.append(job_id)
    seen: list[tuple[str, str | None]] = []

    async def follow() -> None:
        pulls = DetachedPulls(private_ledger, lambda p: seen.append((p.state, p.job_id)))
        pulls.start()
        try:
            deadline = time.monotonic() + 60
            while not (pulls.pulls and pulls.pulls[0].state == DONE) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            [pull] = pulls.pulls
            assert pull.state == DONE and pull.job_id == job_id and pull.models_dir == str(models)
            assert pull.url == f"job {job_id}" and pull.name == "qwen2.5:7b"
        finally:
            await pulls.aclose()

    asyncio.run(follow())
    states = [s for s, _ in seen]
    assert states[0] in (QUEUED, PULLING) and PULLING in states and states[-1] == DONE
    assert "stopped" not in states  # never taken for dead while pending
    assert (models / "manifests" / "registry.ollama.ai" / "library" / "qwen2.5" / "7b").is_file()


def test_over_the_quota_or_with_a_gpu_profile_nothing_is_submitted(home, private_ledger):
    config, models, _ = home
    before = notes_pull_jobs()
    res = app("models", "pull", "llama3.1:8b", "--profile", "l40s")
    assert res.returncode == 2 and "--profile l40s asks for a GPU" in res.stderr
    config.write_text("[models]\nquota_gb = 4\n" + config.read_text())
    res = app("models", "pull", "llama3.1:8b", "--profile", "cpu")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "would pass the 4 GB quota — nothing submitted" in res.stderr and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert notes_pull_jobs() == before and pull_files(private_ledger) == [] and not models.exists()


def test_scancel_ends_a_pull_job_and_its_server(home, private_ledger):
    from app.cluster.detached_pull import update_pull
    from app.cluster.pulljob import cancel_pull_job
    from app.cluster.pulls import Pull

    _, models, submitted = home
    res = app("models", "pull", "mistral", "--profile", "slowpull", "--no-wait")
    assert res.returncode == 0, res.stderr
    job_id = job_of(res.stdout)
    submitted.append(job_id)
    [progress] = pull_files(private_ledger)
    wait_for(lambda: (r := read_progress(progress)) and r["state"] == PULLING and r["done"] > 0, 60,
             "the pull to be under way", every=0.2)
    pull = Pull(id=progress.stem, url="", name="mistral")
    update_pull(pull, read_progress(progress), True)
    cancel_pull_job(pull, progress)
    wait_for(lambda: not queue_has(job_id), 60, f"pull job {job_id} to leave the queue", every=0.2)
    last = read_progress(progress)
    assert last["state"] == CANCELLED, last
    assert not (models / "manifests" / "registry.ollama.ai" / "library" / "mistral").exists()
    out = subprocess.run(["pgrep", "-f", f"models-dir={models}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""  # the server went with the job
