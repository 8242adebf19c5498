"""Screen 1 with a real single-node Slurm: server jobs appear pending or starting and then up with their time left,
one is started from a profile with s and cancelled with k after a confirmation."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.helpers.slurmkit import STANDIN_COMMAND, cluster_up, queue_has
from tests.helpers.support import need
from tests.helpers.tuikit import build_app, rows, run, screen_text, until
from tests.helpers.wait import wait_for

# xdist: one worker at a time on the one-node test Slurm, where two tests' jobs would queue behind each other
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    need(cluster_up(), "no test Slurm here: eval \"$(slurm/testcluster.sh start)\" (it exports SLURM_CONF)")
    config = tmp_path / "user-config.toml"
    config.write_text(f'[profiles.standin]\ncpus = 1\nmem = "256M"\ntime = "0-00:15:00"\nready_timeout_s = 60\n'
                      f'command = "{STANDIN_COMMAND}"\n\n[profiles.wide]\ncpus = 64\nmem = "256M"\n'
                      'command = "ollama serve"\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    before = set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split())
    yield config
    now = set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split())
    for job in now - before:
        subprocess.run(["scancel", job], capture_output=True)
    wait_for(lambda: not any(queue_has(j) for j in now - before), 60, "the test's jobs to leave the queue", every=0.5)


async def jobs_now(pilot, app, condition, what, timeout=60.0):
    """Ask squeue again (our own start or cancel expires the 15 s ration) until `condition()` holds."""
    async def asked():
        app.jobs.expire()
        app.refresh_jobs()
        await pilot.pause(0.5)
        return condition()

    end = time.monotonic() + timeout
    while not await asked():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}:\n{screen_text(app)}")


@run
async def test_start_a_server_job_from_a_profile_see_it_up_and_cancel_it(tmp_path, slurm):
    app = build_app(tmp_path, {**os.environ, "NOTES_TUI_CONFIG": str(slurm)})
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.jobs.available
        await pilot.press("s")
        assert "standin: default partition" in screen_text(app)
        await pilot.press("enter")  # the first profile
        await until(pilot, lambda: "submitted server job" in screen_text(app), timeout=30, what="sbatch")
        job_id = screen_text(app).split("submitted server job ")[1].split()[0]
        await jobs_now(pilot, app, lambda: any(j.job_id == job_id and j.url for j in app.state.job_list), "an address")
        job = next(j for j in app.state.job_list if j.job_id == job_id)
        app.poll_servers()
        await until(pilot, lambda: app.health(job.url).state == "up", timeout=30, what="the job's server up")
        row = rows(app, "servers-table")[job.url]
        assert row[1] == f"job {job_id}" and row[2] == "up" and row[5].endswith(("m", "s"))  # time left
        assert f"job {job_id}" in screen_text(app) and "k cancels it" in screen_text(app)
        app.screen.query_one("#servers-table").select_key(job.url)
        # its proxy says how long it has been idle and when it stops (issue 25 item 1): asked with squeue
        app.jobs.expire()
        app.refresh_jobs()  # once: asking again every half second cancels the round that was fetching it
        await until(pilot, lambda: job.url in app.state.idle, timeout=60, what="the job's idle state")
        await until(pilot, lambda: "idle " in screen_text(app) and " · stops in " in screen_text(app),
                    what="idle time and stop time in the detail")
        await pilot.press("k")
        assert f"Cancel server job {job_id}" in app.screen.query_one(".question").render().plain
        await pilot.press("y")
        await until(pilot, lambda: f"cancelled job {job_id}" in screen_text(app), timeout=30, what="scancel")
        await jobs_now(pilot, app, lambda: all(j.job_id != job_id for j in app.state.job_list), "the job gone")
        assert job.url not in rows(app, "servers-table")


@run
async def test_a_job_that_cannot_start_is_shown_pending_with_its_reason(tmp_path, slurm):
    app = build_app(tmp_path, {**os.environ, "NOTES_TUI_CONFIG": str(slurm)})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s", "down", "enter")  # profile "wide": 64 CPUs on a 2-CPU node
        await until(pilot, lambda: "submitted server job" in screen_text(app), timeout=30, what="sbatch")
        await jobs_now(pilot, app, lambda: any(j.phase == "pending" and j.reason for j in app.state.job_list), "pending")
        job = next(j for j in app.state.job_list if j.phase == "pending")
        row = rows(app, "servers-table")["job:" + job.job_id]
        assert row[2].startswith("pending (") and job.reason in row[2]


@run
async def test_a_server_job_that_ends_before_the_run_is_named_on_both_screens(tmp_path, slurm):
    import sqlite3

    from tests.helpers.support import experiment_toml

    slurm.write_text(slurm.read_text().replace('time = "0-00:15:00"', 'time = "0-00:02:00"'))
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}") for i in range(40000)])
    conn.commit()
    conn.close()
    exp = folder / "pna.toml"
    source = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
    exp.write_text(experiment_toml(source=source, hosts=["http://placeholder:1"]).replace(
        'hosts = ["http://placeholder:1"]', 'hosts = "auto"'))
    app = build_app(tmp_path, {**os.environ, "NOTES_TUI_CONFIG": str(slurm)})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s", "enter")  # the stand-in profile, 2 minutes
        await until(pilot, lambda: "submitted server job" in screen_text(app), timeout=30, what="sbatch")
        await jobs_now(pilot, app, lambda: any(j.url for j in app.state.job_list), "the job's address")
        job = next(j for j in app.state.job_list if j.url)
        app.poll_servers()
        await until(pilot, lambda: app.health(job.url).state == "up", timeout=30, what="the job's server up")
        await pilot.press("3")
        app.screen.query_one("#experiments-table").select_key(str(exp))
        await pilot.press("g", "enter")  # 40,000 notes at ~180 a second: longer than the job has left
        await until(pilot, lambda: app.current_mode == "runs" and app.screen.followed is not None
                    and app.screen.followed.rate, timeout=60, what="the run followed")
        await until(pilot, lambda: f"server job {job.job_id} ends in" in screen_text(app), timeout=30,
                    what="the monitor's warning")
        await pilot.press("s", "y")  # stop the run: the test is about the warning
        await pilot.press("1")
        app.screen.query_one("#servers-table").select_key(job.url)
        await pilot.pause(0.3)
        assert "this job ends before run" in screen_text(app)


@run
async def test_submit_from_the_experiments_screen_and_follow_the_job_on_the_monitor(tmp_path, slurm):
    import sqlite3

    from tests.helpers.support import experiment_toml
    from tests.standin.standin_ollama import StandinOllama

    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}: no consolidation.") for i in range(300)])
    conn.commit()
    conn.close()
    source = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
    with StandinOllama(latency=0.05, slots=4) as server:  # 300 notes at ~80 a second: seconds, not instants
        exp = folder / "pna.toml"
        exp.write_text(experiment_toml(source=source, hosts=[server.url]))
        app = build_app(tmp_path, {**os.environ, "NOTES_TUI_CONFIG": str(slurm)})
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            app.screen.query_one("#experiments-table").select_key(str(exp))
            await pilot.press("b")  # the submit dialog: its defaults (one job, [slurm.run]'s time limit)
            await until(pilot, lambda: "array" in screen_text(app), what="the submit dialog")
            await pilot.press("enter")
            await until(pilot, lambda: "submitted pna.toml as job" in screen_text(app), timeout=30, what="sbatch")
            job_id = screen_text(app).split("submitted pna.toml as job ")[1].split(";")[0].split(",")[0].split()[0]
            await pilot.press("4")
            await until(pilot, lambda: app.screen.followed is not None, timeout=60, what="the job's run found")
            followed = app.screen.followed
            # where it runs: the batch job, not here (the row is drawn on the screen's next refresh)
            await until(pilot, lambda: f"job {job_id}" in screen_text(app), timeout=10, what="the job in the row")
            await until(pilot, lambda: followed.ended is not None, timeout=120, what="the job's run to end")
            assert followed.ended["status"] == "completed" and followed.counts.done == 300
    with sqlite3.connect(folder / "notes.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM pna_results").fetchone()[0] == 300
