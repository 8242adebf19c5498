"""`server history` without a cluster: sacct's lines parsed (a name holding `|`, an empty or `(null)` Comment, a job
that never started, one still running), GPUs from AllocTRES, GPU-hours, the totals per day and per ISO week with
the ledger's used/idle beside, --since, and the one line where sacct cannot answer (not installed, accounting off,
slurmdbd down)."""

from __future__ import annotations

import subprocess
from datetime import date, datetime

import pytest

from app.cluster.history import (
    DELIMITER,
    FIELDS,
    PastJob,
    alloc_gpus,
    grand_total,
    history_json,
    history_text,
    parse_sacct,
    parse_since,
    sacct_args,
    server_history,
    totals,
    with_records,
)
from app.cluster.slurm import AccountingUnavailable, Slurm, SlurmError

L40S_TRES = "billing=16,cpu=16,gres/gpu:l40s=1,gres/gpu=1,mem=125G,node=1"


def line(job_id="101", state="COMPLETED", submit="2026-12-06T09:00:00", start="2026-12-06T09:00:05",
         end="2026-12-06T10:30:05", elapsed="5400", tres=L40S_TRES, partition="l40s", node="gpu-n57",
         name="ollama-l40s", comment="") -> str:
    values = dict(JobID=job_id, State=state, Submit=submit, Start=start, End=end, ElapsedRaw=elapsed,
                  AllocTRES=tres, Partition=partition, NodeList=node, JobName=name, Comment=comment)
    return DELIMITER.join(values[f] for f in FIELDS)


def test_a_server_job_line_gives_its_state_run_time_gpus_and_gpu_hours():
    (job,) = parse_sacct(line() + "\n")
    assert (job.job_id, job.name, job.state, job.partition, job.node) == ("101", "ollama-l40s", "COMPLETED", "l40s",
                                                                          "gpu-n57")
    assert job.start == datetime(2026, 12, 6, 9, 0, 5) and job.end == datetime(2026, 12, 6, 10, 30, 5)
    assert job.elapsed_s == 5400 and job.gpus == 1 and job.gpu_hours == 1.5 and job.kind == "ollama"
    assert not job.running and job.day == date(2026, 12, 6)


@pytest.mark.parametrize("tres, gpus", [
    (L40S_TRES, 1),  # the typed count is the untyped one again: not 2
    ("billing=32,cpu=32,gres/gpu=4,mem=500G,node=1", 4),
    ("cpu=8,gres/gpu:a100=2,gres/gpu:l40s=1,mem=64G,node=1", 3),  # typed only: their sum
    ("billing=1,cpu=1,mem=256M,node=1", 0),
    ("cpu=4,gres/gpumem=40G,gres/shard=2,mem=8G", 0),  # other GPU-ish TRES are not GPUs
    ("", 0),
])
def test_gpus_come_from_alloc_tres(tres, gpus):
    assert alloc_gpus(tres) == gpus


def test_names_and_comments_a_user_writes_do_not_shift_slurms_fields():
    text = "\n".join([
        line(job_id="1", name="ollama|odd|name"),  # sacct's own delimiter in a name: harmless with ours
        line(job_id="2", name="ollama" + DELIMITER + "weird", comment=""),  # even ours: it stays in the name
        line(job_id="3", name="sop_server", comment="openai:gpu-n12:8000"),  # the SOP's job, known by its Comment
        line(job_id="4", name="llmserver-vllm", comment="(null)"),
        line(job_id="5", name="notes-pna+l40s"),  # submit --with-server
        line(job_id="6", name="notes-pna"),  # a run job: not a server job
        line(job_id="7", name="bash", comment=""),
        "",
        "garbage without delimiters",
    ])
    jobs = {j.job_id: j for j in parse_sacct(text)}
    assert sorted(jobs) == ["1", "2", "3", "4", "5"]
    assert jobs["1"].name == "ollama|odd|name" and jobs["1"].node == "gpu-n57" and jobs["1"].comment == ""
    assert jobs["2"].name == "ollama" + DELIMITER + "weird" and jobs["2"].elapsed_s == 5400 and jobs["2"].gpus == 1
    assert jobs["3"].kind == "openai-compatible" and jobs["3"].comment == "openai:gpu-n12:8000"
    assert jobs["4"].kind == "openai-compatible" and jobs["4"].comment == ""
    assert jobs["5"].kind == "with-run"


def test_a_job_that_never_started_and_one_still_running():
    never, running = parse_sacct("\n".join([
        line(job_id="8", state="CANCELLED by 1234", start="None", end="2026-12-07T08:00:00", elapsed="0",
             tres="", node="None assigned", submit="2026-12-07T07:00:00"),
        line(job_id="9", state="RUNNING", start="2026-12-07T09:00:00", end="Unknown", elapsed="1800"),
    ]))
    assert never.start is None and never.state_word == "CANCELLED" and never.node == "" and never.gpus == 0
    assert never.day == date(2026, 12, 7)  # counted on the day it was submitted
    assert running.end is None and running.running and running.gpu_hours == 0.5
    text = history_text([never, running], datetime(2026, 12, 1), None)
    row = next(r for r in text.splitlines() if r.startswith("9 "))
    assert "RUNNING (so far)" in row and "30m00s" in row
    row = next(r for r in text.splitlines() if r.startswith("8 "))
    assert "CANCELLED" in row and " - " in row


def _jobs() -> list[PastJob]:
    """Sunday 6 Dec 2026 (ISO week 49): 1.5 + 2×1 GPU-hours; Monday 7 Dec (week 50): 4 GPUs × 15 min."""
    return parse_sacct("\n".join([
        line(job_id="101"),
        line(job_id="102", start="2026-12-06T22:00:00", end="2026-12-07T00:00:00", elapsed="3600",
             tres="cpu=2,gres/gpu=2,mem=8G,node=1"),
        line(job_id="103", submit="2026-12-07T11:00:00", start="2026-12-07T11:00:00", end="2026-12-07T11:15:00",
             elapsed="900", tres="cpu=2,gres/gpu=4,mem=8G,node=1"),
    ]))


def test_totals_per_day_and_per_iso_week_with_the_ledgers_used_and_idle_where_recorded():
    records = {(None, "101"): {"job_id": "101", "gpu_hours": {"used": 0.25, "idle": 1.0, "starting": 0.25},
                               "busy_s": 900, "idle_s": 3600, "status": "ended", "ended_by": "idle"},
               (None, "103"): {"job_id": "103", "gpu_hours": {"used": 0.8, "idle": 0.2}}}
    jobs = with_records(_jobs(), records)
    days = totals(jobs, "day")
    assert [d.label for d in days] == ["2026-12-06 Sun", "2026-12-07 Mon"]
    assert [d.jobs for d in days] == [2, 1] and [round(d.gpu_hours, 4) for d in days] == [3.5, 1.0]
    assert (days[0].recorded, days[0].used, days[0].idle) == (1, 0.25, 1.0)  # 102 has no record: not counted in
    assert [d.elapsed_s for d in days] == [9000, 900]  # a job counts on the day it started, midnight or not
    weeks = totals(jobs, "week")
    assert [w.label for w in weeks] == ["2026-W49 (Nov 30 – Dec 06)", "2026-W50 (Dec 07 – Dec 13)"]
    assert [round(w.gpu_hours, 4) for w in weeks] == [3.5, 1.0]
    assert round(grand_total(jobs).gpu_hours, 4) == 4.5 and grand_total(jobs).recorded == 2

    text = history_text(jobs, datetime(2026, 11, 30), None)
    assert text.splitlines()[0] == "server jobs since 2026-11-30 00:00 (sacct; the cluster's local time): 3, 4.50 GPU-hours"
    rows = {r.split()[0]: r.split() for r in text.splitlines() if r.startswith("10")}
    assert rows["101"][-5:] == ["1", "1.50", "0.25", "1.00", "gpu-n57"]
    assert rows["102"][-5:] == ["2", "2.00", "-", "-", "gpu-n57"]
    assert "\n2026-12-06 Sun     2     2h30m   3.50  0.25  1.00  1 of 2\n" in text
    assert "\n2026-W50 (Dec 07 – Dec 13)     1    15m00s   1.00  0.80  0.20  1 of 1\n" in text

    doc = history_json(jobs, datetime(2026, 11, 30), None)
    assert [j["job_id"] for j in doc["jobs"]] == ["101", "102", "103"]
    assert doc["jobs"][0]["ledger"]["gpu_hours"]["used"] == 0.25 and doc["jobs"][1]["ledger"] is None
    assert doc["days"][0] == {"label": "2026-12-06 Sun", "from": "2026-12-06", "jobs": 2, "elapsed_s": 9000,
                              "gpu_hours": 3.5, "recorded_jobs": 1, "used_gpu_hours": 0.25, "idle_gpu_hours": 1.0}
    assert doc["total"]["gpu_hours"] == 4.5


def test_no_server_job_since_says_none():
    assert history_text([], datetime(2026, 12, 1, 8), None).endswith(": none")


def test_since_ago_or_a_local_date():
    now = datetime(2026, 12, 6, 12, 0)
    assert parse_since("7d", now) == datetime(2026, 11, 29, 12, 0)
    assert parse_since("2w", now) == datetime(2026, 11, 22, 12, 0)
    assert parse_since("12h", now) == datetime(2026, 12, 6, 0, 0)
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1)
    assert parse_since("2026-12-01T08:30", now) == datetime(2026, 12, 1, 8, 30)
    with pytest.raises(ValueError, match="write 7d, 2w"):
        parse_since("last tuesday", now)


def _runner(stdout="", stderr="", code=0, calls=None):
    def run(argv, **kwargs):
        if calls is not None:
            calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, code, stdout, stderr)

    return run


def test_one_sacct_call_for_the_user_allocations_only_and_standard_times(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")  # the user's taste must not break the parsing
    calls: list = []
    slurm = Slurm("gpu", run=_runner(line() + "\n", calls=calls), which=lambda _: "/usr/bin/sacct")
    jobs = server_history(slurm, datetime(2026, 11, 30, 8, 0), tmp_path / "ledger", user="researcher")
    (argv, kwargs), = calls
    assert argv[:3] == ["sacct", "-M", "gpu"]
    assert argv[3:] == sacct_args("researcher", datetime(2026, 11, 30, 8, 0))
    assert ["--user", "researcher", "-X", "-P", "-n"] == argv[3:8] and argv[-2:] == ["-S", "2026-11-30T08:00:00"]
    assert kwargs["env"]["SLURM_TIME_FORMAT"] == "standard"
    assert [j.cluster for j in jobs] == ["gpu"] and jobs[0].record is None


def test_the_ledger_record_of_a_job_is_found_under_its_cluster(tmp_path):
    from ledger.serverjobs import write_record

    ledger = tmp_path / "ledger"
    write_record(ledger, {"job_id": "101", "cluster": "gpu", "gpu_hours": {"used": 0.5, "idle": 1.0}})
    write_record(ledger, {"job_id": "101", "cluster": None, "gpu_hours": {"used": 9.0, "idle": 9.0}})  # another
    slurm = Slurm("gpu", run=_runner(line() + "\n"), which=lambda _: "/usr/bin/sacct")
    (job,) = server_history(slurm, datetime(2026, 11, 30), ledger, user="u")
    assert (job.recorded("used"), job.recorded("idle")) == (0.5, 1.0)


@pytest.mark.parametrize("stderr, words", [
    ("Slurm accounting storage is disabled\n", "keeps no job accounting"),
    ("sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to host:vm:6819: "
     "Connection refused\nsacct: error: Sending PersistInit msg: Connection refused\n"
     "sacct: error: Problem talking to the database: Connection refused\n",
     "cannot reach Slurm's accounting database (sacct: Problem talking to the database: Connection refused) — "),
])
def test_where_accounting_cannot_answer_one_line_says_why_and_what_to_do(stderr, words):
    slurm = Slurm(run=_runner(stderr=stderr, code=1), which=lambda _: "/usr/bin/sacct")
    with pytest.raises(AccountingUnavailable) as caught:
        server_history(slurm, datetime(2026, 12, 1), None, user="u")
    said = str(caught.value)
    assert words in said and "\n" not in said and " — " in said and caught.value.exit_code == 2


def test_no_sacct_here_is_one_line_too():
    def never(*a, **k):
        raise AssertionError("sacct is not there to run")

    with pytest.raises(AccountingUnavailable, match="not installed here — run notes-tui server history on a login"):
        server_history(Slurm(run=never, which=lambda _: None), datetime(2026, 12, 1), None, user="u")


def test_another_refusal_of_sacct_is_not_taken_for_missing_accounting():
    slurm = Slurm(run=_runner(stderr="sacct: error: Invalid field requested: \"Bogus\"\n", code=1),
                  which=lambda _: "/usr/bin/sacct")
    with pytest.raises(SlurmError) as caught:
        server_history(slurm, datetime(2026, 12, 1), None, user="u")
    assert not isinstance(caught.value, AccountingUnavailable) and "Invalid field" in str(caught.value)
