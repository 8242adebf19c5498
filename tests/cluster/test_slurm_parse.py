"""Parsing what a real Slurm 22.05 printed (tests/cluster/slurm_samples/, recorded with the command in their README), and
the rules around the commands: one squeue per 15 s for the whole process, sbatch --parsable, -M errors, no Slurm."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.cluster.slurm import ServerJobs, Slurm, SlurmError, parse_comment, parse_sbatch, parse_squeue, parse_time

SAMPLES = Path(__file__).resolve().parent / "slurm_samples"
RECORDED = "%i|%j|%T|%N|%k|%L|%M"  # the format behind squeue-o-pipe*.txt


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_running_and_pending_server_jobs_from_the_recorded_queue():
    jobs = {j.job_id: j for j in parse_squeue(sample("squeue-o-pipe.txt"), fmt=RECORDED)}
    assert set(jobs) == {"1", "2", "3", "4", "5", "6"}
    long = jobs["1"]
    assert long.name == "ollama-llama3.1-8b-instruct-q4_K_M"  # 34 characters: -O would have cut it at 20
    assert (long.state, long.node, long.port, long.url) == ("RUNNING", "vm", 39287, "http://vm:39287")
    assert long.time_left_s == 59 * 60 + 57 and long.phase == "running"
    # started by the backfill scheduler without --time: 364-23:59:58 left means no limit
    assert jobs["2"].time_left_s is None and jobs["2"].url == "http://vm:58553"
    pending = jobs["3"]
    assert (pending.phase, pending.node, pending.url, pending.time_left_s) == ("pending", "", None, None)


def test_pending_reasons_come_from_the_reason_column():
    jobs = {j.name: j for j in parse_squeue(sample("squeue-o-pipe-reason.txt"), fmt=RECORDED + "|%R")}
    assert jobs["ollama-wants-2-cpus"].reason == "Resources"
    assert jobs["ollama-too-big"].reason == "PartitionConfig"  # sbatch -c 8 on a 2-CPU node: pends forever
    assert jobs["ollama-held"].reason == "JobHeldUser"
    assert jobs["ollama"].reason == "" and jobs["ollama"].node == "vm"


def test_other_jobs_and_a_pending_array_are_not_server_jobs():
    jobs = parse_squeue(sample("squeue-o-pipe-array.txt"), fmt=RECORDED)
    assert "8_[0-2]" not in {j.job_id for j in jobs}  # the array "arr" is not an Ollama server
    assert {j.job_id for j in jobs} == {"2", "3", "4", "5", "6"}


def test_with_M_the_cluster_line_is_skipped_and_jobs_carry_the_cluster():
    text = "CLUSTER: gpu\n" + sample("squeue-M-h-o-pipe.txt")
    jobs = {j.job_id: j for j in parse_squeue(text, cluster="gpu", fmt="%i|%j|%T|%N|%k|%L|%M")}
    # with-M-plain, plain and arr have no ollama name nor comment; no-M and with-M publish ollama:PORT
    assert set(jobs) == {"1", "2"}
    assert jobs["2"].url == "http://vm:57685" and jobs["2"].origin == "job 2 on gpu"


def test_a_name_holding_the_delimiter_does_not_shift_the_other_fields():
    line = "41|RUNNING|None|gpu-n57|ollama:gpu-n57:48362|1-02:03:04|gres:gpu:l40s:2|l40s|ollama|my|job"
    (job,) = parse_squeue(line)
    assert job.name == "ollama|my|job" and job.partition == "l40s" and job.url == "http://gpu-n57:48362"
    assert job.time_left_s == 86400 + 2 * 3600 + 3 * 60 + 4 and job.gpus == 2


def test_a_running_job_without_its_comment_yet_is_starting():
    (job,) = parse_squeue("42|RUNNING|None|gpu-n55|(null)|11:59:58|gres:gpu:1|l40s|ollama-l40s")
    assert (job.phase, job.url, job.gpus) == ("starting", None, 1)


@pytest.mark.parametrize("text,seconds", [("59:57", 3597), ("1:00:00", 3600), ("2-00:00:00", 172800),
                                          ("0:05", 5), ("UNLIMITED", None), ("NOT_SET", None),
                                          ("364-23:59:57", None), ("365-00:00:00", None)])
def test_time_left(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("comment,node,expected", [("ollama:39287", "vm", ("vm", 39287)),
                                                   ("ollama:gpu-n57:48362", "gpu-n57", ("gpu-n57", 48362)),
                                                   ("(null)", "vm", (None, None)), ("ollama:0", "vm", (None, None)),
                                                   ("somebody else's note", "vm", (None, None))])
def test_comment(comment, node, expected):
    assert parse_comment(comment, node) == expected


def test_sbatch_parsable_with_and_without_M():
    lines = sample("sbatch-parsable-with-and-without-M.txt").splitlines()
    plain = lines[lines.index("$ sbatch --parsable ollama_job.sh") + 1]
    with_m = lines[lines.index("$ sbatch --parsable -M gpu ollama_job.sh") + 1]
    assert parse_sbatch(plain) == "1" and parse_sbatch(with_m) == "2"
    with pytest.raises(ValueError):
        parse_sbatch("Submitted batch job 4")  # not --parsable


class FakeRun:
    """Stands in for subprocess.run: records each call, answers with a recorded output."""

    def __init__(self, stdout: str = "", stderr: str = "", rc: int = 0):
        self.calls: list[list[str]] = []
        self.stdout, self.stderr, self.rc = stdout, stderr, rc

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, self.rc, self.stdout, self.stderr)


def test_one_squeue_per_interval_however_many_ask():
    run = FakeRun(stdout="1|RUNNING|None|vm|ollama:39287|59:57|N/A|debug|ollama\n")
    now = [100.0]
    jobs = ServerJobs(Slurm(run=run, which=lambda _: "/usr/bin/squeue"), clock=lambda: now[0])
    for _ in range(50):
        assert jobs.get()[0].url == "http://vm:39287"
    now[0] += 14.9
    jobs.get()
    assert len(run.calls) == 1
    now[0] += 0.2
    jobs.get()
    assert len(run.calls) == 2
    jobs.expire()  # after our own sbatch/scancel
    jobs.get()
    jobs.get()
    assert len(run.calls) == 3
    assert run.calls[0][:2] == ["squeue", "--me"] and "-o" in run.calls[0]


def test_M_is_passed_and_its_refusal_is_one_line_with_the_fix():
    recorded = sample("M-without-dbd.txt").split("$ sbatch")[0].splitlines()[1:3]
    run = FakeRun(stderr="\n".join(recorded), rc=1)
    slurm = Slurm("gpu", run=run, which=lambda _: "/usr/bin/squeue")
    with pytest.raises(SlurmError) as err:
        slurm.server_jobs()
    assert run.calls[0][:3] == ["squeue", "-M", "gpu"]
    text = str(err.value)
    assert "\n" not in text and "slurmdbd" in text and "sacctmgr list clusters" in text
    jobs = ServerJobs(slurm)
    assert jobs.get() == [] and "slurmdbd" in (jobs.error or "")


def test_no_squeue_on_the_machine_means_no_slurm_parts():
    run = FakeRun()
    jobs = ServerJobs(Slurm(run=run, which=lambda _: None))
    assert not jobs.available and jobs.get() == [] and run.calls == [] and jobs.error is None


def test_the_words_for_a_job_and_whether_it_outlives_a_run():
    from app.cluster.health import Health
    from app.cluster.jobactions import ends_before, job_status, time_left_text

    pending, starting, running = parse_squeue(
        "3|PENDING|Resources||(null)|UNLIMITED|gres:gpu:1|l40s|ollama-l40s\n"
        "4|RUNNING|None|gpu-n55|(null)|11:59:58|gres:gpu:1|l40s|ollama-l40s\n"
        "5|RUNNING|None|gpu-n57|ollama:gpu-n57:48362|10:00|gres:gpu:1|l40s|ollama-l40s")
    assert job_status(pending, None) == "pending (Resources)" and time_left_text(pending) == "no limit"
    assert job_status(starting, None) == "starting"
    assert job_status(running, Health("up", version="0.11.10")) == "up"
    assert job_status(running, Health("down", reason="connection refused")) == "unhealthy: connection refused"
    assert time_left_text(running) == "10m00s"
    assert ends_before(running, eta_s=900) and not ends_before(running, eta_s=300)
    assert ends_before(running, eta_s=300, age_s=400)  # the squeue answer is old: less time is left now
    assert not ends_before(pending, eta_s=10 ** 6)
