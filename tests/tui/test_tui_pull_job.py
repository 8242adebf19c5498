"""A pull job on the Models screen (issue 25 item 3), without a cluster: a job pulling into the models directory of a
server job shows in that server's pull panel (from its progress file, as a detached pull), not on a server of
another directory; once its file says done the server's model list is read again and shows the model the job left
in the directory; `p` of the same model there meanwhile is refused (two servers would write the same blobs)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from app.cluster.detached_pull import ProgressFile, pulls_dir
from app.cluster.pulls import DONE, PULLING
from app.cluster.slurm import ServerJobs, Slurm
from tests.helpers.tuikit import build_app, rows, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama, _write_model


class FakeSlurm(Slurm):
    available = property(lambda self: True)  # type: ignore[assignment]


def fake_jobs(lines: list[str]) -> ServerJobs:
    def run(argv, **kwargs):
        assert argv[0] == "squeue", argv
        return subprocess.CompletedProcess(argv, 0, "".join(line + "\n" for line in lines), "")

    return ServerJobs(FakeSlurm(run=run, which=lambda _: "/usr/bin/squeue"))


def job_progress(ledger: Path, models: Path) -> ProgressFile:
    """The lines a pull job writes from its node (here: this process, alive)."""
    path = pulls_dir(ledger) / "01JOBPULL0000000000000000.jsonl"
    progress = ProgressFile(path, "job 9001", "llama3.1:8b",
                            extra={"job_id": "9001", "cluster": None, "models_dir": str(models), "node": "smp-n3"})
    progress.record.update(state=PULLING, phase="pulling 9f7faaff52bf", done=1_000_000_000, total=4_668_869_047,
                           rate=50e6, started_at=time.time())
    progress.flush()
    return progress


@run
async def test_a_pull_job_shows_beside_the_servers_of_its_directory_and_the_list_reloads_when_it_is_done(tmp_path):
    models, other = tmp_path / "models", tmp_path / "other-models"
    config = tmp_path / "user-config.toml"
    config.write_text(f'[profiles.l40s]\ngres = "gpu:1"\nmodels_dir = "{models}"\n\n'
                      f'[profiles.a100]\ngres = "gpu:1"\nmodels_dir = "{other}"\n')
    ledger = tmp_path / "ledger"
    progress = job_progress(ledger, models)
    with StandinOllama(models=(), models_dir=str(models)) as l40s, \
            StandinOllama(models=("llama3",), models_dir=str(other)) as a100:
        app = build_app(tmp_path, {"NOTES_TUI_CONFIG": str(config)}, ledger_dir=ledger)
        app.jobs = fake_jobs([f"501|RUNNING|None|vm|ollama:127.0.0.1:{l40s.port}|3:00:00|gpu:1|l40s|ollama-l40s",
                              f"502|RUNNING|None|vm|ollama:127.0.0.1:{a100.port}|3:00:00|gpu:1|a100|ollama-a100"])
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: len(app.state.job_list) == 2, what="the server jobs")
            await until(pilot, lambda: app.health(l40s.url).state == "up", what="the l40s server up")
            app.state.selected_url = l40s.url
            await pilot.press("2")
            await until(pilot, lambda: app.state.model_list(l40s.url).loaded_once, what="the model list")
            assert rows(app, "models-table") == {}
            await until(pilot, lambda: "1.0 GB / 4.7 GB" in screen_text(app), what="the pull job in the panel")
            [pull] = app.pulls.pulls
            assert pull.job_id == "9001" and pull.url == "job 9001" and pull.models_dir == str(models)

            await pilot.press("p", *"llama3.1:8b", "enter")  # the same model through the server meanwhile
            await until(pilot, lambda: "is being pulled into this server's models directory by job 9001"
                        in screen_text(app), what="the refusal")
            assert len(app.pulls.pulls) == 1

            _write_model(str(models), "llama3.1:8b")  # what the job's Ollama leaves, then its last line
            progress.record.update(state=DONE, phase="success", done=4_668_869_047, rate=None,
                                   finished_at=time.time())
            progress.flush()
            progress.close()
            await until(pilot, lambda: "llama3.1:8b:latest" not in rows(app, "models-table")
                        and "llama3.1:8b" in rows(app, "models-table"), timeout=10, what="the list read again")
            assert "pulled, 4.7 GB" in screen_text(app)

            # a server of another directory: the job is none of its business
            app.state.selected_url = a100.url
            await pilot.press("1")
            await pilot.press("2")
            await until(pilot, lambda: list(rows(app, "models-table")) == ["llama3:latest"], what="the a100 list")
            assert "llama3.1:8b" not in screen_text(app)  # no pull panel here
