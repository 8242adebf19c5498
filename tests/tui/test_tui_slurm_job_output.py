"""`l` on the Servers screen with the real single-node Slurm: a stand-in server job started from a profile, its
output file's tail as the job wrote it (found through scontrol's StdOut, never showing the job's token), then `c`:
the profile's command and sbatch options as submitted, what Slurm holds and its script. The job is cancelled."""

from __future__ import annotations

import os
import time

import pytest

from tests.helpers.slurmkit import STANDIN_COMMAND, cancel_jobs, cluster_up
from tests.helpers.support import need
from tests.helpers.tuikit import build_app, run, screen_text, until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The user config with the stand-in profile (the name `slurm` lets the screens see Slurm: tests/tui/conftest.py);
    the jobs the test lists are cancelled afterwards — only those: other sessions may share the test Slurm."""
    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    config = tmp_path / "user-config.toml"
    config.write_text(f'[profiles.standin]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'command = "{STANDIN_COMMAND}"\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    submitted: list[str] = []
    yield config, submitted
    cancel_jobs(submitted)


@run
async def test_l_shows_the_tail_of_a_running_server_jobs_output_and_c_what_it_runs(tmp_path, slurm):
    from app.cluster import tokens

    config, submitted = slurm
    app = build_app(tmp_path, {**os.environ, "NOTES_TUI_CONFIG": str(config)})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s", "enter")  # the stand-in profile
        await until(pilot, lambda: "submitted server job" in screen_text(app), timeout=30, what="sbatch")
        job_id = screen_text(app).split("submitted server job ")[1].split()[0]
        submitted.append(job_id)
        end = time.monotonic() + 60
        while not any(j.job_id == job_id and j.url for j in app.state.job_list):
            assert time.monotonic() < end, f"job {job_id} never published its port:\n{screen_text(app)}"
            app.jobs.expire()
            app.refresh_jobs()
            await pilot.pause(0.5)
        job = next(j for j in app.state.job_list if j.job_id == job_id)
        app.screen.query_one("#servers-table").select_key(job.url)
        await pilot.pause(0.2)
        await pilot.press("l")
        await until(pilot, lambda: "serving at http://" in screen_text(app), timeout=20, what="the output's tail")
        text = screen_text(app)
        look = app.screen.look
        assert f"server job {job_id} (ollama-standin) — the end of its output" in text
        assert look.output_from == "scontrol show job" and look.output.name == f"ollama-standin-{job_id}.out"
        # the size when it was read: a running job may have written more since
        assert look.output.parent == app.ledger_dir / "slurm" and 0 < look.size <= look.output.stat().st_size
        assert any(line.startswith("LISTENING http://127.0.0.1:") for line in look.lines)
        token = tokens.job_record(job_id)["token"]
        assert any("token in " in line for line in look.lines)  # the job names its token's file…
        assert token not in text and not any(token in line for line in look.lines)  # …never the token
        assert token not in look.output.read_text()

        await pilot.press("c")
        await until(pilot, lambda: "as notes-tui submitted it (profile standin" in screen_text(app), what="command")
        text = screen_text(app)
        assert "command  sh -c 'exec" in text and "sbatch   --job-name=ollama-standin" in text
        assert f"scontrol show job {job_id}" in text and "state    RUNNING" in text
        assert look.submitted["options"][:1] == ["--job-name=ollama-standin"]
        assert look.script is not None and look.script.startswith("#!/bin/bash")
        await pilot.press("end")
        await pilot.pause(0.3)
        assert "exit \"$status\"" in screen_text(app)  # the last line of slurm/ollama-server.sbatch
        await pilot.press("escape", "k", "y")
        await until(pilot, lambda: f"cancelled job {job_id}" in screen_text(app), timeout=30, what="scancel")
