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
