"""What the tests on the real test Slurm share (slurm/testcluster.sh start; .ci/run starts it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.helpers.support import TESTS

# the stand-in honours --port; the profile's command hands it the port of OLLAMA_HOST, as `ollama serve` reads it
STANDIN_COMMAND = (f"sh -c 'exec {sys.executable} {TESTS / 'standin' / 'standin_ollama.py'} --latency 0.02 "
                   "--port ${OLLAMA_HOST##*:}'")


def cluster_up() -> bool:
    if not os.environ.get("SLURM_CONF") or not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20)
    return done.returncode == 0 and "up" in done.stdout


def queue_has(job_id: str) -> bool:
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
    return bool(done.stdout.strip())


def cancel_jobs(job_ids: list[str]) -> None:
    """After a test: scancel what it submitted and wait until the queue no longer has it (other sessions share it)."""
    from tests.helpers.wait import wait_for

    for job in job_ids:
        subprocess.run(["scancel", job], capture_output=True)
    wait_for(lambda: not any(queue_has(j) for j in job_ids), 60, "the test's jobs to leave the queue", every=0.5)


def run_app(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """notes-tui as a user types it, in a process of its own (CI unset: a missing part is then a skip, not a fail)."""
    from tests.helpers.support import ROOT

    env = dict(os.environ if env is None else env)
    env.pop("CI", None)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
