"""`l` on a server job without a cluster: where its output file is (scontrol's StdOut, else the --output notes-tui
submitted with, else the ledger's slurm/), only the file's tail read, lines cleaned as a terminal shows them, no
secret shown (the job's token, a Bearer header, an --api-key, a …TOKEN=), and what it was submitted with."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from app.cluster.joblook import (
    HIDDEN,
    TAIL_BYTES,
    clean_line,
    expand_output,
    hide_secrets,
    look_at_job,
    read_submission,
    read_tail,
    record_submission,
    submission_path,
)
from app.cluster.slurm import Slurm, parse_scontrol_job
from app.cluster.submit import Submission

# `scontrol show job 37` on the test Slurm (22.05), a stand-in server job running (its Comment line ends in a space)
SHOW_JOB = """JobId=37 JobName=ollama-standin
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=4294901725 Nice=0 Account=root QOS=normal
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:04 TimeLimit=00:15:00 TimeMin=N/A
   SubmitTime=2026-12-06T21:36:14 EligibleTime=2026-12-06T21:36:14
   StartTime=2026-12-06T21:36:15 EndTime=2026-12-06T21:51:15 Deadline=N/A
   Partition=debug AllocNode:Sid=localhost:16245
   NodeList=vm
   BatchHost=vm
   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=1,mem=256M,node=1,billing=1
   Command=/work/main/slurm/ollama-server.sbatch
   WorkDir=/work/my dir
   Comment=ollama:vm:41977\x20
   StdErr={out}
   StdIn=/dev/null
   StdOut={out}
   Power=

"""
TOKEN = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8"


def test_scontrol_show_job_parsed_paths_with_spaces_and_all():
    facts = parse_scontrol_job(SHOW_JOB.format(out="/ledger dir/slurm/ollama-standin-37.out"))
    assert facts["JobState"] == "RUNNING" and facts["Reason"] == "None" and facts["Partition"] == "debug"
    assert facts["TRES"] == "cpu=1,mem=256M,node=1,billing=1" and facts["TimeLimit"] == "00:15:00"
    assert facts["StdOut"] == "/ledger dir/slurm/ollama-standin-37.out" and facts["WorkDir"] == "/work/my dir"
    assert facts["Comment"] == "ollama:vm:41977" and facts["UserId"] == "root(0)" and facts["CPUs/Task"] == "1"
    assert facts["AllocNode:Sid"] == "localhost:16245" and facts["BatchHost"] == "vm"


def test_only_the_tail_of_a_large_output_file_is_read(tmp_path):
    path = tmp_path / "big.out"
    with open(path, "w") as f:
        for i in range(200_000):  # ~6 MB
            f.write(f"line {i:06d} of a chatty server\n")
    lines, size = read_tail(path, 60)
    assert size == path.stat().st_size > 20 * TAIL_BYTES
    assert lines == [f"line {i:06d} of a chatty server" for i in range(200_000 - 60, 200_000)]
    short = tmp_path / "short.out"
    short.write_text("one\ntwo\nno newline at the end")
    assert read_tail(short, 60) == (["one", "two", "no newline at the end"], short.stat().st_size)
    (tmp_path / "empty.out").write_text("")
    assert read_tail(tmp_path / "empty.out") == ([], 0)


def test_the_first_line_of_the_tail_is_whole(tmp_path):
    path = tmp_path / "long-lines.out"
    path.write_text("x" * 300 + "\n" + "\n".join(f"{i}" for i in range(5)) + "\n")
    lines, _ = read_tail(path, 60, max_bytes=100)  # begins inside the long line: that part is dropped
    assert lines == ["0", "1", "2", "3", "4"]


def test_lines_shown_as_a_terminal_leaves_them():
    assert clean_line("\x1b[32mINFO\x1b[0m server up") == "INFO server up"
    assert clean_line("pulling 10%\rpulling 55%\rpulling 100%\r") == "pulling 100%"
    assert clean_line("a\tb\x07\x00c") == "a    bc"
    assert clean_line("y" * 1000, width=50) == "y" * 49 + "…"


@pytest.mark.parametrize("text, shown", [
    (f"auth {TOKEN} leaked", f"auth {HIDDEN} leaked"),
    ("Authorization: Bearer abcdefgh12345678", f"Authorization: Bearer {HIDDEN}"),
    ("vllm serve m --api-key sk-secret1 --port 8000", f"vllm serve m --api-key {HIDDEN} --port 8000"),
    ("llama-server --hf-token=hf_abc -m x", f"llama-server --hf-token={HIDDEN} -m x"),
    ("env HF_TOKEN=hf_abc OPENAI_API_KEY=sk-1 vllm serve", f"env HF_TOKEN={HIDDEN} OPENAI_API_KEY={HIDDEN} vllm serve"),
    # not secrets: a tokenizer, the token's file (what the job prints), a port
    ("vllm serve m --tokenizer hf/tok --port 8000", "vllm serve m --tokenizer hf/tok --port 8000"),
    ("serving at http://vm:41977 (token in /home/u/.config/notes-tui/server-jobs/37.json, owner-only)",
     "serving at http://vm:41977 (token in /home/u/.config/notes-tui/server-jobs/37.json, owner-only)"),
])
def test_secrets_are_blotted_out(text, shown):
    assert hide_secrets(text, (TOKEN,)) == shown


def test_output_patterns_expand():
    assert expand_output("/l/slurm/%x-%j.out", "37", "ollama-a") == "/l/slurm/ollama-a-37.out"
    assert expand_output("/l/%u/%N-%5j-%%.log", "37", "n", "me", "gpu-n57") == "/l/me/gpu-n57-00037-%.log"


def _submission(tmp_path: Path) -> Submission:
    env = {"NOTES_TUI_SERVER_COMMAND": "vllm serve m --api-key sk-1 --port {port}", "NOTES_TUI_SERVER_KIND":
           "openai-compatible", "NOTES_TUI_IDLE": "1800s", "NOTES_TUI_ISOLATE": "1", "DB_PASS": "never-recorded"}
    return Submission(Path("/repo/slurm/ollama-server.sbatch"),
                      ("--job-name=llmserver-vllm", f"--output={tmp_path / 'ledger' / 'slurm' / '%x-%j.out'}",
                       "--gres=gpu:1"), env)


def test_what_a_job_was_submitted_with_is_kept_beside_its_output_privately(tmp_path):
    ledger = tmp_path / "ledger"
    record_submission(ledger, "41", "gpu", _submission(tmp_path), "vllm")
    path = submission_path(ledger, "41", "gpu")
    assert path.name == "gpu-41.job.json" and stat.S_IMODE(path.stat().st_mode) == 0o600
    rec = read_submission(ledger, "41", "gpu")
    assert rec["profile"] == "vllm" and rec["command"] == f"vllm serve m --api-key {HIDDEN} --port {{port}}"
    assert rec["options"][2] == "--gres=gpu:1" and rec["output"].endswith("slurm/%x-%j.out")
    assert rec["kind"] == "openai-compatible" and rec["idle"] == "1800s" and rec["isolate"] is True
    assert "never-recorded" not in path.read_text() and "sk-1" not in path.read_text()
    assert read_submission(ledger, "41") is None


def _slurm(show: str | None, script: str = "#!/bin/bash\nexport HF_TOKEN=hf_x\nollama serve\n"):
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        if argv[1:3] == ["show", "job"]:
            return subprocess.CompletedProcess(argv, 0 if show else 1, show or "", "" if show else
                                               "slurm_load_jobs error: Invalid job id specified")
        if argv[1:3] == ["write", "batch_script"]:
            return subprocess.CompletedProcess(argv, 0, script, "")
        raise AssertionError(argv)

    return Slurm(run=run, which=lambda _: "/usr/bin/squeue"), calls


def test_a_running_job_its_output_from_scontrol_the_token_never_shown(tmp_path, monkeypatch):
    config = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    from app.cluster import tokens

    tokens.write_record(tokens.record_path("37"), {"job_id": "37", "token": TOKEN, "url": "http://vm:41977"})
    out = tmp_path / "ledger dir" / "slurm" / "ollama-standin-37.out"
    out.parent.mkdir(parents=True)
    out.write_text("".join(f"line {i}\n" for i in range(100)) + f"a client sent Bearer {TOKEN}\n")
    slurm, calls = _slurm(SHOW_JOB.format(out=out))
    look = look_at_job(slurm, "37", "ollama-standin", tmp_path / "ledger dir")
    assert look.output == out and look.output_from == "scontrol show job" and look.output_problem is None
    assert len(look.lines) == 60 and look.lines[0] == "line 41" and look.lines[-1] == f"a client sent Bearer {HIDDEN}"
    assert look.slurm["JobState"] == "RUNNING" and look.script == f"#!/bin/bash\nexport HF_TOKEN={HIDDEN}\nollama serve"
    assert TOKEN not in json.dumps(look.lines) and [c[:3] for c in calls] == [["scontrol", "show", "job"],
                                                                              ["scontrol", "write", "batch_script"]]
    with open(out, "a") as f:
        f.write("one more\n")
    look.reread()
    assert look.lines[-1] == "one more" and len(look.lines) == 60


def test_a_job_slurm_forgot_found_by_what_it_was_submitted_with_then_by_the_ledger(tmp_path):
    ledger = tmp_path / "ledger"
    record_submission(ledger, "41", None, _submission(tmp_path), "vllm")
    slurm, calls = _slurm(None)
    look = look_at_job(slurm, "41", "llmserver-vllm", ledger)
    assert look.output == ledger / "slurm" / "llmserver-vllm-41.out" and look.output_from == "as submitted"
    assert "does not exist" in look.output_problem and look.script is None and "no longer knows" in look.script_problem
    assert len(calls) == 1  # no script asked of a job Slurm does not know

    (ledger / "slurm" / "ollama-sop-52.out").write_text("hello\n")
    look = look_at_job(slurm, "52", "ollama-sop", ledger)
    assert look.output_from == "the ledger dir" and look.lines == ["hello"] and look.submitted is None
    look = look_at_job(slurm, "53", "ollama-other", ledger)
    assert look.output is None and "does not say where" in look.output_problem


def test_a_pending_job_has_written_nothing_yet(tmp_path):
    pending = SHOW_JOB.replace("JobState=RUNNING Reason=None", "JobState=PENDING Reason=Resources")
    slurm, _ = _slurm(pending.format(out=tmp_path / "not-yet.out"))
    look = look_at_job(slurm, "37", "ollama-standin", tmp_path)
    assert look.output_problem == "nothing written yet: the job has not started"


def test_an_unreadable_output_file_is_one_line(tmp_path):
    out = tmp_path / "a-directory.out"  # what any user (root too) cannot read as a file
    out.mkdir()
    slurm, _ = _slurm(SHOW_JOB.format(out=out))
    look = look_at_job(slurm, "37", "ollama-standin", tmp_path)
    assert look.output_problem == f"cannot read {out}: Is a directory" and look.lines == []
