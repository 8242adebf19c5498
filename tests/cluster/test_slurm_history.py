"""`server history` against the real single-node Slurm and its slurmdbd (slurm/testcluster.sh start): a stand-in
server job shows while it runs, then, cancelled, with its state, run time, GPUs (the test profile asks for none:
0 GPU-hours; tests/cluster/test_history.py covers gres/gpu) and the used/idle seconds of its ledger record; and the
real sacct, pointed at a configuration without accounting or with slurmdbd unreachable, gives one line and exit 2.
Every job is cancelled at the end of its test."""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path

import httpx
import pytest

from app.cluster import tokens
from app.cluster.slurm import Slurm
from tests.helpers.slurmkit import STANDIN_COMMAND, cancel_jobs, cluster_up, queue_has, run_app
from tests.helpers.support import need
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


@pytest.fixture
def home(tmp_path, monkeypatch):
    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    config = tmp_path / "config" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[profiles.standin]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'command = "{STANDIN_COMMAND}"\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    submitted: list[str] = []
    yield config, submitted
    cancel_jobs(submitted)


app = run_app


def history_of(job_id: str) -> dict | None:
    done = app("server", "history", "--since", "2h", "--json")
    assert done.returncode == 0, done.stderr
    return next((j for j in json.loads(done.stdout)["jobs"] if j["job_id"] == job_id), None)


def test_a_server_job_that_ran_and_was_cancelled_is_in_the_history(home, private_ledger):
    _, submitted = home
    started = app("server", "start", "--profile", "standin", "--json")
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["job_id"]
    submitted.append(job_id)
    slurm = Slurm()
    job = wait_for(lambda: next((j for j in slurm.server_jobs() if j.job_id == job_id and j.url), None), 60,
                   f"job {job_id} to publish its port", every=0.3)

    running = wait_for(lambda: history_of(job_id), 30, "the running job in sacct", every=1)
    assert running["state"] == "RUNNING" and running["end"] is None and running["name"] == "ollama-standin"

    token = tokens.job_record(job_id)["token"]
    answered = httpx.post(f"{job.url}/api/generate", json={"model": "llama3", "prompt": "hello", "stream": False},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answered.status_code == 200
    time.sleep(3)  # idle a moment: the record has both
    assert app("server", "stop", job_id).returncode == 0
    wait_for(lambda: not queue_has(job_id), 60, f"job {job_id} to leave the queue", every=0.5)
    from ledger.serverjobs import job_record

    record = wait_for(lambda: (r := job_record(private_ledger, job_id)) and r["status"] == "ended" and r, 20,
                      "the job's ledger record")

    past = wait_for(lambda: (j := history_of(job_id)) and j["end"] and j, 30, "sacct to have the job's end", every=1)
    assert past["state"].startswith("CANCELLED") and past["kind"] == "ollama" and past["node"]
    held = record["starting_s"] + record["busy_s"] + record["idle_s"]
    assert past["elapsed_s"] >= 3 and abs(past["elapsed_s"] - held) <= 5, (past, record)
    assert past["gpus"] == 0 and past["gpu_hours"] == 0  # the test profile asks for no GPU
    ledger = past["ledger"]
    assert ledger["ended_by"] == "stopped" and ledger["requests"] >= 1 and ledger["busy_s"] > 0
    assert ledger["idle_s"] >= 2 and ledger["gpu_hours"] == record["gpu_hours"]

    text = app("server", "history", "--since", "2h")
    assert text.returncode == 0, text.stderr
    row = next(line for line in text.stdout.splitlines() if line.startswith(f"{job_id} ")).split()
    assert row[1:3] == ["ollama-standin", "CANCELLED"] and row[-5:-1] == ["0", "0.00", "0.00", "0.00"]
    day = date.fromisoformat(past["start"][:10])
    assert any(line.startswith(f"{day.isoformat()} {day.strftime('%a')}") for line in text.stdout.splitlines())
    assert "WEEK" in text.stdout and "GPU-H: run time × GPUs" in text.stdout


def _conf(tmp_path: Path, key: str, value: str) -> dict[str, str]:
    """This cluster's slurm.conf with one line changed, for sacct alone (the cluster itself is not touched)."""
    text = Path(os.environ["SLURM_CONF"]).read_text()
    lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in text.splitlines()]
    conf = tmp_path / f"{key}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return dict(os.environ, SLURM_CONF=str(conf))


@pytest.mark.parametrize("key, value, words", [
    ("AccountingStorageType", "accounting_storage/none", "this Slurm keeps no job accounting"),
    ("AccountingStoragePort", "1", "sacct cannot reach Slurm's accounting database"),  # slurmdbd down
])
def test_real_sacct_without_accounting_is_one_line_and_exit_2(home, tmp_path, key, value, words):
    done = app("server", "history", env=_conf(tmp_path, key, value))
    assert done.returncode == 2 and done.stdout == "", done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("notes-tui: error: ") and words in line
