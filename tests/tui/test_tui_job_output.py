"""`l` on the Servers screen without a cluster: a server job from a stand-in squeue, its output found in the ledger's
slurm/ folder, the dialog at 80x24 with the tail at the bottom and the token blotted out, `c` for what it runs, a
saved server that is no job, and the dialog following a file that grows."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.cluster.joblook import HIDDEN, JobLook
from app.cluster.slurm import ServerJob, ServerJobs, Slurm
from tests.helpers.tuikit import build_app, closed_url, run, screen_text, until, write_config

JOB_ID = "987654321"  # no job of the test Slurm has such an id: scontrol does not know it
TOKEN = "c2VjcmV0LXRva2VuLW9mLXRoZS1qb2ItbmV2ZXItc2hvd24"


class FakeSlurm(Slurm):
    available = property(lambda self: True)  # type: ignore[assignment]


def fake_jobs(line: str) -> ServerJobs:
    def run(argv, **kwargs):
        assert argv[0] == "squeue", argv
        return subprocess.CompletedProcess(argv, 0, line + "\n", "")

    return ServerJobs(FakeSlurm(run=run, which=lambda _: "/usr/bin/squeue"))


def job_output_file(ledger: Path, lines: int) -> Path:
    out = ledger / "slurm" / f"ollama-standin-{JOB_ID}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"server line {i}\n" for i in range(lines)) + f"a proxy said Bearer {TOKEN}\n")
    return out


@run
async def test_l_on_a_server_job_shows_the_end_of_its_output_and_c_what_it_runs(tmp_path):
    from app.cluster import tokens

    write_config(tmp_path / "user-config.toml", [(closed_url(), "saved")])
    env = {"NOTES_TUI_CONFIG": str(tmp_path / "user-config.toml")}
    tokens.write_record(tokens.record_path(JOB_ID, None, env), {"job_id": JOB_ID, "token": TOKEN})
    ledger = tmp_path / "ledger"
    out = job_output_file(ledger, 100)
    app = build_app(tmp_path, env, ledger_dir=ledger)
    app.jobs = fake_jobs(f"{JOB_ID}|RUNNING|None|vm|(null)|14:00|N/A|debug|ollama-standin")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: bool(app.state.job_list), what="the job from squeue")
        await pilot.press("l")  # the saved server is selected: no job
        await until(pilot, lambda: "is not one of your server jobs: l shows" in screen_text(app), what="the hint")
        app.screen.query_one("#servers-table").select_key("job:" + JOB_ID)
        await pilot.pause(0.1)
        assert "l its output · k cancels it" in screen_text(app)
        await pilot.press("l")
        await until(pilot, lambda: f"a proxy said Bearer {HIDDEN}" in screen_text(app), what="the tail")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert f"server job {JOB_ID} (ollama-standin) — the end of its output" in text
        assert "server line 99" in text and "server line 39" not in text  # scrolled to the end
        assert TOKEN not in text and "c: its command and script" in text
        look = app.screen.look
        assert look.output == out and len(look.lines) == 60 and look.lines[0] == "server line 41"

        with open(out, "a") as f:  # the job writes on: the dialog follows
            f.write("a line written after the dialog opened\n")
        await until(pilot, lambda: "a line written after the dialog opened" in screen_text(app), timeout=10,
                    what="the new line")

        await pilot.press("c")
        await until(pilot, lambda: "what it runs" in screen_text(app), what="the command view")
        text = screen_text(app)
        assert "not submitted by notes-tui from this ledger dir" in text
        assert "Slurm no longer knows this job" in text
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "ServersScreen", what="the dialog closed")


def _look(tmp_path: Path) -> JobLook:
    return JobLook(job_id="42", name="llmserver-vllm", output=tmp_path / "llmserver-vllm-42.out",
                   output_from="scontrol show job", lines=[f"INFO: request {i} answered" for i in range(60)], size=2_600_000,
                   submitted={"profile": "vllm", "submitted_at": "2026-12-06T21:36:14.000Z",
                              "command": f"vllm serve meta-llama/Llama-3.1-8B-Instruct --api-key {HIDDEN} --port {{port}}",
                              "kind": "openai-compatible", "idle": "1800s", "isolate": True,
                              "script": "/repo/slurm/ollama-server.sbatch",
                              "options": ["--job-name=llmserver-vllm", "--output=/ledger/slurm/%x-%j.out",
                                          "--partition=a100", "--gres=gpu:1", "--time=0-12:00:00"]},
                   slurm={"JobState": "RUNNING", "Reason": "None", "Partition": "a100", "NodeList": "gpu-n12",
                          "TRES": "cpu=16,mem=125G,node=1,billing=16,gres/gpu=1", "TimeLimit": "12:00:00",
                          "RunTime": "01:02:03", "StartTime": "2026-12-06T21:36:15",
                          "Command": "/repo/slurm/ollama-server.sbatch", "WorkDir": "/home/u/study"},
                   script="#!/bin/bash\n#SBATCH --job-name=ollama-server\nset -u")


@run
async def test_the_dialog_at_80x24(tmp_path):
    from app.tui.dialogs.job_output import JobOutputScreen

    job = ServerJob(job_id="42", name="llmserver-vllm", state="RUNNING", reason="", node="gpu-n12", host=None,
                    port=None, time_left_s=3600, gres="gpu:1", partition="a100", kind="openai-compatible")
    look = _look(tmp_path)
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(JobOutputScreen(job, looker=lambda _: look))
        await until(pilot, lambda: "request 59 answered" in screen_text(app), what="the tail")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "server job 42 (llmserver-vllm) — the end of its output" in text
        assert "request 45 answered" not in text  # the last lines fill the dialog, the first are above
        assert "esc closes" in text
        await pilot.press("c")
        await until(pilot, lambda: "as notes-tui submitted it (profile vllm" in screen_text(app), what="command")
        text = screen_text(app)
        assert "█  command  vllm serve meta-llama/Llama-3.1-8B-Instruct --api-key" in text
        assert f"█{' ' * 11}{HIDDEN} --port {{port}}" in text  # wrapped under its value, the key's value hidden
        assert "█  kind     openai-compatible · idle 30m00s" in text
        assert "--partition=a100" in text
        await pilot.press("end")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "its script (scontrol write batch_script 42 -)" in text and "#SBATCH --job-name=ollama-server" in text
        await pilot.press("c")
        await until(pilot, lambda: "the end of its output" in screen_text(app), what="back to the output")
        assert "request 59 answered" in screen_text(app)
