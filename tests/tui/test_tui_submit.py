"""Submit (`b`) on screen 3 (issue 24 item 14): a dialog with the job's time limit (default [slurm.run] time) and the
array size, each checked with one line; a job array refused for a SQLite source; and where there is no Slurm, `b` is
absent from the key bar, the help and the palette (as Servers' s and k are)."""

from __future__ import annotations

import sqlite3

import pytest

import app.cluster.submit as submit_module
import app.tui.screens.experiments as experiments
from app.cluster.slurm import ServerJobs, Slurm
from app.tui.dialogs.submit import SubmitChoice, check_choice
from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import build_app, free_port, rows, run, screen_text, until

SQLITE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
MYSQL = 'kind = "mysql"\nenv_file = "db.env"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def workspace(tmp_path):
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'CXR: clear.')")
    conn.commit()
    conn.close()
    (folder / "db.env").write_text(f"DB_USER=u\nDB_PASS=p\nDB_HOST=127.0.0.1\nDB_PORT={free_port()}\nDB_NAME=notes\n")
    (folder / "db.env").chmod(0o600)
    (folder / "lite.toml").write_text(experiment_toml(source=SQLITE, hosts=["http://127.0.0.1:9"], name="lite"))
    (folder / "big.toml").write_text(experiment_toml(source=MYSQL, hosts=["http://127.0.0.1:9"], name="big"))
    (tmp_path / "user-config.toml").write_text('[slurm.run]\ntime = "0-01:30:00"\n')
    return folder


@pytest.fixture
def slurm_here(monkeypatch):
    """Slurm present (sbatch, squeue) without a cluster: squeue lists no job, sbatch is a stand-in that records."""
    monkeypatch.setattr(Slurm, "available", property(lambda self: True))
    monkeypatch.setattr(ServerJobs, "get", lambda self: [])
    monkeypatch.setattr(experiments, "_count_todo", lambda exp: (1, None))  # no MySQL asked for notes to do
    calls = []

    def submit_experiment(file, ctx, ledger_dir, array=None, time=None, signal_s=None):
        calls.append({"file": file, "array": array, "time": time})
        return str(4240 + len(calls)), None

    monkeypatch.setattr(submit_module, "submit_experiment", submit_experiment)
    return calls


def test_the_choice_is_checked_with_one_line():
    assert check_choice("", "", sqlite=True) == SubmitChoice(None, 1)
    assert check_choice(" 0-02:00:00 ", "4", sqlite=False) == SubmitChoice("0-02:00:00", 4)
    assert check_choice("90", "1", sqlite=True) == SubmitChoice("90", 1)  # minutes, as sbatch takes them
    assert check_choice("soon", "1", sqlite=False) == "time 'soon': not a Slurm time — D-HH:MM:SS, HH:MM:SS or minutes"
    assert check_choice("", "0", sqlite=False) == "array '0': a whole number from 1 (one job) to 1000"
    assert check_choice("", "two", sqlite=False).startswith("array 'two': a whole number")
    assert check_choice("", "1001", sqlite=False).startswith("array '1001': a whole number")
    assert check_choice("", "2", sqlite=True) == "array 2: a SQLite source takes one job (an array needs MySQL)"


def select(app, folder, name: str) -> None:
    app.screen.query_one("#experiments-table").select_key(str(folder / name))


@run
async def test_submit_asks_for_time_and_array_then_submits_what_was_chosen(tmp_path, slurm_here):
    folder = workspace(tmp_path)
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.jobs.available
        await pilot.press("3")
        await until(pilot, lambda: len(rows(app, "experiments-table")) == 2, what="both experiments")
        assert " b Submit " in screen_text(app).splitlines()[-1]  # the key bar
        select(app, folder, "lite.toml")
        await pilot.press("b")
        await until(pilot, lambda: "Submit lite.toml to Slurm" in screen_text(app), what="the dialog")
        text = screen_text(app)
        assert "default: your [slurm.run] time" in text and "1 only — this source is SQLite" in text
        assert app.screen.query_one("#time").value == "0-01:30:00" and app.screen.query_one("#array").value == "1"
        assert slurm_here == []  # nothing submitted by b alone
        # a bad time: one line, the dialog stays
        app.screen.query_one("#time").value = "soon"
        await pilot.press("enter")
        assert "time 'soon': not a Slurm time" in screen_text(app) and slurm_here == []
        # an array of a SQLite experiment: refused as the CLI refuses it
        app.screen.query_one("#time").value = "0-00:20:00"
        app.screen.query_one("#array").value = "3"
        await pilot.press("enter")
        assert "array 3: a SQLite source takes one job" in screen_text(app) and slurm_here == []
        app.screen.query_one("#array").value = "1"
        await pilot.press("enter")
        await until(pilot, lambda: "submitted lite.toml as job 4241" in screen_text(app), what="submitted")
        assert slurm_here == [{"file": str(folder / "lite.toml"), "array": None, "time": "0-00:20:00"}]
        assert "time limit 0-00:20:00; press 4 to follow the run" in screen_text(app)
        # a MySQL experiment as a job array, at the config's time
        select(app, folder, "big.toml")
        await pilot.press("b")
        await until(pilot, lambda: "Submit big.toml to Slurm" in screen_text(app), what="the dialog")
        assert "N = N tasks, each answering its own shard" in screen_text(app)
        app.screen.query_one("#array").value = "4"
        await pilot.press("enter")
        await until(pilot, lambda: "submitted big.toml as job 4242 (4 array tasks" in screen_text(app),
                    what="the array submitted")
        assert slurm_here[-1] == {"file": str(folder / "big.toml"), "array": 4, "time": "0-01:30:00"}
        # escape submits nothing
        await pilot.press("b")
        await until(pilot, lambda: "Submit big.toml to Slurm" in screen_text(app), what="the dialog")
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert len(slurm_here) == 2 and app.current_mode == "experiments"


@run
async def test_with_slurm_the_slurm_keys_are_in_help_and_palette(tmp_path, slurm_here):
    workspace(tmp_path)
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 120)) as pilot:
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Experiments: Submit", "Servers: Start job", "Servers: Cancel job"} <= titles
        await pilot.press("question_mark")
        await until(pilot, lambda: "escape closes · ctrl+p" in screen_text(app), what="the help")
        assert "Submit" in screen_text(app) and "Start job" in screen_text(app)


@run
async def test_without_slurm_submit_is_absent_from_key_bar_help_and_palette(tmp_path):
    folder = workspace(tmp_path)
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 120)) as pilot:
        assert not app.jobs.available  # the TUI tests' default (tests/tui/conftest.py)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Experiments: Try" in titles
        assert not {"Experiments: Submit", "Servers: Start job", "Servers: Cancel job"} & titles
        await pilot.press("question_mark")
        await until(pilot, lambda: "escape closes · ctrl+p" in screen_text(app), what="the help")
        text = screen_text(app)
        assert "Run here" in text and "Submit" not in text and "Start job" not in text and "Cancel job" not in text
        await pilot.press("escape")
        await pilot.press("3")
        await until(pilot, lambda: len(rows(app, "experiments-table")) == 2, what="both experiments")
        assert " g Run here " in screen_text(app) and "Submit" not in screen_text(app)
        select(app, folder, "lite.toml")
        await pilot.press("b")  # does nothing: no dialog
        await pilot.pause(0.1)
        assert "to Slurm" not in screen_text(app) and app.screen.__class__.__name__ == "ExperimentsScreen"
