"""Issue 25 on the real single-node Slurm (slurm/testcluster.sh start): a server job with idle = 20 s ends itself
when nobody uses it and not while a run does, `server list` showing its idle time and stop; `submit --with-server`
runs an experiment in one job with its own server and leaves no job behind; the TERM that comes before a time limit
stops such a run cleanly (interrupted), then its server, and a resubmission finishes. Every job is cancelled at the
end of its test."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cluster import tokens
from app.cluster.slurm import Slurm
from tests.helpers.runhelp import journal_records, ledger_runs
from tests.helpers.slurmkit import STANDIN_COMMAND, cancel_jobs, cluster_up, queue_has, run_app
from tests.helpers.support import ROOT, TESTS, experiment_toml, need
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

# a slower stand-in: one slot, 0.5 s an answer, so a run of 70 notes keeps it busy for 35 s
SLOW_COMMAND = (f"sh -c 'exec {sys.executable} {TESTS / 'standin' / 'standin_ollama.py'} --latency 0.5 --slots 1 "
                "--port ${OLLAMA_HOST##*:}'")


@pytest.fixture
def home(tmp_path, monkeypatch):
    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    config = tmp_path / "config" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[profiles.idle20]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'idle = "20s"\ncommand = "{STANDIN_COMMAND}"\n\n'
                      f'[profiles.slow]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'idle = "20s"\ncommand = "{SLOW_COMMAND}"\n\n'
                      f'[profiles.gpuish]\ncpus = 1\nmem = "768M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'command = "{STANDIN_COMMAND}"\n\n'
                      f'[profiles.gpuslow]\ncpus = 1\nmem = "768M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'command = "{SLOW_COMMAND}"\n\n'
                      '[slurm.run]\ncpus = 1\nmem = "512M"\nsignal_s = 30\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    submitted: list[str] = []
    yield config, submitted
    cancel_jobs(submitted)


app = run_app


def job_log(ledger: Path, job_id: str) -> str:
    return "".join(p.read_text() for p in (ledger / "slurm").glob(f"*{job_id}*.out"))


def server_record(ledger: Path, job_id: str) -> dict | None:
    from ledger.serverjobs import job_record

    return job_record(ledger, job_id)


def start(profile: str, submitted: list[str], *extra: str) -> str:
    res = app("server", "start", "--profile", profile, "--json", *extra)
    assert res.returncode == 0, res.stderr
    job_id = json.loads(res.stdout)["job_id"]
    submitted.append(job_id)
    return job_id


def published(job_id: str, timeout: float = 60):
    slurm = Slurm()
    return wait_for(lambda: next((j for j in slurm.server_jobs() if j.job_id == job_id and j.url), None), timeout,
                    f"job {job_id} to publish its port", every=0.3)


def notes_db(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CHEST {i}: clear lungs.") for i in range(n)])
    conn.commit()
    conn.close()


SQLITE_SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def test_an_idle_server_job_ends_itself_after_its_limit(home, private_ledger):
    _, submitted = home
    job_id = start("idle20", submitted)
    job = published(job_id)
    up_at = time.monotonic()

    listed = json.loads(app("server", "list", "--json").stdout)
    idle = next(s for s in listed if s["url"] == job.url)["job"]["idle"]
    assert idle["limit_s"] == 20 and idle["in_flight"] == 0 and idle["requests"] == 0
    assert 0 <= idle["idle_s"] < 20 and 0 < idle["stops_in_s"] <= 20 and idle["stops_at"].endswith("Z")
    table = app("server", "list").stdout
    row = next(line for line in table.splitlines() if line.startswith(job_id))
    assert "IDLE STOP" in table and " in " in row  # idle for …, stops in …

    wait_for(lambda: not queue_has(job_id), 90, f"idle job {job_id} to end itself", every=0.5)
    ended_after = time.monotonic() - up_at
    assert 18 <= ended_after <= 45, ended_after
    log = job_log(private_ledger, job_id)
    assert "ending the job, which frees its GPU" in log and "idle = 20s" in log
    record = wait_for(lambda: (r := server_record(private_ledger, job_id)) and r["status"] == "ended" and r, 10,
                      "the job's record")
    assert record["ended_by"] == "idle" and record["requests"] == 0 and record["busy_s"] == 0
    assert 19 <= record["idle_s"] <= 30 and record["gpus"] == 0 and record["name"] == "ollama-idle20"
    assert tokens.job_record(job_id) is None
    print(f"idle job {job_id} left the queue {ended_after:.1f} s after publishing its port (idle = 20 s); "
          f"its record: {record['idle_s']:.1f} s idle, {record['starting_s']:.1f} s starting")


def test_a_server_job_a_run_is_using_outlives_its_idle_limit(home, tmp_path, private_ledger):
    """idle = 20 s and a run of 70 notes at 0.5 s each through it (35 s): the job stays for the whole run, and
    ends itself about 20 s after it."""
    _, submitted = home
    job_id = start("slow", submitted)
    job = published(job_id)
    notes_db(tmp_path / "notes.db", 70)
    exp = tmp_path / "auto.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, run="concurrency = 1").replace("hosts = []",
                                                                                        'hosts = "auto"'))
    env = dict(os.environ)
    env.pop("CI", None)
    t0 = time.monotonic()
    run = subprocess.Popen([sys.executable, "-m", "app", "--run", str(exp)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(25)  # past the limit: the job must still be up, and busy
    record = tokens.job_record(job_id)
    assert record is not None and queue_has(job_id)
    doc = httpx.get(f"{job.url}/_notes-tui/idle", headers={"Authorization": f"Bearer {record['token']}"},
                    timeout=5).json()
    assert doc["requests"] > 10 and (doc["in_flight"] == 1 or doc["idle_s"] < 2), doc
    out, err = run.communicate(timeout=120)
    run_s = time.monotonic() - t0
    assert run.returncode == 0, err
    assert run_s > 30 and queue_has(job_id), run_s  # outlived its 20 s limit while used
    (only,) = ledger_runs(private_ledger)
    assert only["status"] == "completed" and only["counts"]["valid"] == 70
    done_at = time.monotonic()
    wait_for(lambda: not queue_has(job_id), 90, f"job {job_id} to end itself after the run", every=0.5)
    after = time.monotonic() - done_at
    assert after <= 45
    rec = wait_for(lambda: (r := server_record(private_ledger, job_id)) and r["status"] == "ended" and r, 10,
                   "the job's record")
    assert rec["ended_by"] == "idle" and rec["requests"] >= 70 and rec["busy_s"] >= 30
    print(f"busy job {job_id}: run of {run_s:.1f} s through it, ended itself {after:.1f} s after the run; "
          f"{rec['busy_s']:.1f} s used, {rec['idle_s']:.1f} s idle")


def test_with_server_runs_the_experiment_in_one_job_and_leaves_nothing_behind(home, tmp_path, private_ledger):
    _, submitted = home
    notes_db(tmp_path / "notes.db", 40)
    exp = tmp_path / "pna.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE))  # no hosts: the job's own server
    t0 = time.monotonic()
    res = app("submit", str(exp), "--with-server", "gpuish", "--json")
    assert res.returncode == 0, res.stderr
    job_id = json.loads(res.stdout)["job_id"]
    submitted.append(job_id)
    assert job_id not in {j.job_id for j in Slurm().server_jobs()}  # not a server other runs can find
    wait_for(lambda: not queue_has(job_id), 180, f"job {job_id} to end with its run", every=0.5)
    took = time.monotonic() - t0
    (run,) = ledger_runs(private_ledger)
    log = job_log(private_ledger, job_id)
    assert run["status"] == "completed" and run["counts"]["valid"] == 40, log
    header = next(r for r in journal_records(private_ledger) if r["type"] == "header")["header"]
    assert header["slurm"]["job_id"] == job_id and [j["job_id"] for j in header["server_jobs"]] == [job_id]
    assert "the run ended (exit status 0); stopping the server" in log
    rec = server_record(private_ledger, job_id)
    assert rec["ended_by"] == "run ended" and rec["with_run"] == str(exp.resolve()) and rec["requests"] >= 40
    mine = subprocess.run(["squeue", "--me", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert job_id not in mine and tokens.job_record(job_id) is None
    print(f"--with-server: 40 notes, submit to job gone {took:.1f} s")


def test_the_term_before_the_limit_stops_the_run_then_the_server_and_a_resubmission_finishes(home, tmp_path,
                                                                                               private_ledger):
    """What --signal=B:TERM does at the limit, sent at once (scancel -b: the batch shell only): the run saves and
    ends interrupted, then the server stops; the same command again answers the rest."""
    _, submitted = home
    notes_db(tmp_path / "notes.db", 60)
    exp = tmp_path / "slow.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, run="concurrency = 1",
                                   results='table = "pna_results"\nbatch_size = 5'))
    first = json.loads(app("submit", str(exp), "--with-server", "gpuslow", "--json").stdout)["job_id"]
    submitted.append(first)

    def answered() -> int:
        try:
            with sqlite3.connect(tmp_path / "notes.db") as conn:
                return conn.execute("SELECT count(*) FROM pna_results").fetchone()[0]
        except sqlite3.Error:
            return 0

    wait_for(lambda: answered() >= 10, 120, "the first answers", every=0.5)
    subprocess.run(["scancel", "-b", "-s", "TERM", first], check=True)
    wait_for(lambda: not queue_has(first), 60, f"job {first} to stop", every=0.5)
    (run,) = ledger_runs(private_ledger)
    log = job_log(private_ledger, first)
    assert run["status"] == "interrupted" and 0 < run["counts"]["done"] < 60, log
    assert log.index("the run stops first") < log.index("the run stopped") < log.index("stopped;")
    assert server_record(private_ledger, first)["ended_by"] == "stopped"

    second = json.loads(app("submit", str(exp), "--with-server", "gpuish", "--json").stdout)["job_id"]
    submitted.append(second)
    wait_for(lambda: not queue_has(second), 180, f"job {second} to finish", every=0.5)
    runs = {r["run_id"]: r for r in ledger_runs(private_ledger)}
    assert sorted(r["status"] for r in runs.values()) == ["completed", "interrupted"]
    assert sum(r["counts"]["done"] for r in runs.values()) == 60 and answered() == 60


def test_mistakes_are_one_line_with_the_fix(home, tmp_path):
    (tmp_path / "notes.db").touch()
    exp = tmp_path / "e.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE))
    embedded = tmp_path / "embedded.toml"
    embedded.write_text(experiment_toml(source=SQLITE_SOURCE).replace('backend = "ollama"', 'backend = "llamacpp"')
                        .replace('name = "llama3"\n', "").replace("hosts = []\n", ""))
    for args, fragment in [(["server", "start", "--profile", "idle20", "--idle", "abc"], "is not a duration"),
                           (["submit", str(exp), "--with-server", "nope"], "--with-server nope: no such profile"),
                           (["submit", str(exp), "--with-server", "gpuish", "--array", "2"], "cannot be combined"),
                           (["submit", str(embedded), "--with-server", "gpuish"], "runs the embedded model")]:
        res = app(*args)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, res.stderr)
