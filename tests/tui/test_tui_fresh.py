"""Nothing on screen goes stale (issue 24 items 2 and 6): Experiments follows a run that advances and ends without `r`
(and counts notes to do again only for the experiment whose run moved); a new, changed or removed experiment file
changes Servers without `r`; the status line ages out (an error later than a message)."""

from __future__ import annotations

import sqlite3

import pytest

import app.tui.app as app_module
import app.tui.screens.experiments as experiments
import app.tui.widgets.status_line as status_line
from tests.helpers.runhelp import spawn_run
from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import build_app, closed_url, rows, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
N = 200


def workspace(tmp_path, url: str):
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}: streaky opacity at the left base.")
                                                          for i in range(N)])
    conn.commit()
    conn.close()
    (folder / "pna.toml").write_text(experiment_toml(source=SOURCE, hosts=[url], name="pna-v1",
                                                     results='table = "pna_results"\nbatch_size = 10'))
    (folder / "other.toml").write_text(experiment_toml(source=SOURCE, hosts=[url], name="other",
                                                       results='table = "other_results"'))
    return folder


@pytest.fixture
def slow_server():
    with StandinOllama(latency=0.05, slots=2) as server:  # ~40 notes/s: a run of 200 notes takes seconds
        yield server


def test_experiments_follow_a_run_of_another_process_as_it_advances_and_ends(tmp_path, slow_server, monkeypatch):
    monkeypatch.setattr(experiments, "LOOK_S", 0.2)
    monkeypatch.setattr(experiments, "RECOUNT_S", 0.5)
    counted: dict[str, int] = {}
    real = experiments._count_todo

    def count(exp):
        counted[exp.spec.name] = counted.get(exp.spec.name, 0) + 1
        return real(exp)

    monkeypatch.setattr(experiments, "_count_todo", count)
    folder = workspace(tmp_path, slow_server.url)
    followed(tmp_path, folder, counted)


@run
async def followed(tmp_path, folder, counted):
    app = build_app(tmp_path)
    key = str(folder / "pna.toml")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        row = lambda: rows(app, "experiments-table")[key]  # noqa: E731
        await until(pilot, lambda: row()[3:] == ("never run", "200"), what="never run, 200 to do")
        assert counted == {"pna-v1": 1, "other": 1}
        proc = spawn_run(folder / "pna.toml", "--ledger", str(tmp_path / "ledger"),
                         env={"NOTES_TUI_CONFIG": str(tmp_path / "user-config.toml")})
        try:
            # while it runs: the last run says so, and notes to do go down (no r pressed)
            await until(pilot, lambda: row()[3].startswith("running ") and 0 < int(row()[4]) < N, timeout=60,
                        what=f"the run advancing on screen 3:\n{screen_text(app)}")
            assert proc.poll() is None, "the run ended before the screen showed it running: make it slower"
            await until(pilot, lambda: proc.poll() is not None, timeout=60, what="the run to end")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert proc.returncode == 0, proc.stderr.read()
        await until(pilot, lambda: row()[3].startswith(f"completed {N}/{N} · ") and row()[4] == "0", timeout=10,
                    what=f"the ended run and 0 to do:\n{screen_text(app)}")
        assert counted["pna-v1"] >= 2
        assert counted["other"] == 1  # its runs did not change: the source is not asked again
        assert rows(app, "experiments-table")[str(folder / "other.toml")][3:] == ("never run", "200")


@run
async def test_a_new_experiment_files_hosts_show_on_servers_and_leave_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "EXPERIMENTS_S", 0.2)
    app = build_app(tmp_path)
    folder = tmp_path / "workspace" / "experiments"
    async with app.run_test(size=(120, 40)) as pilot:
        assert rows(app, "servers-table") == {}
        first, second = closed_url(), closed_url()
        (folder / "new.toml").write_text(experiment_toml(source=SOURCE, hosts=[first], name="new"))
        await until(pilot, lambda: first in rows(app, "servers-table"), what="the new file's host on Servers")
        assert rows(app, "servers-table")[first][1] == "new.toml"
        await pilot.press("3")
        assert str(folder / "new.toml") in rows(app, "experiments-table")
        # changed: its new host replaces the old one, on Servers and in the Experiments row's detail
        (folder / "new.toml").write_text(experiment_toml(source=SOURCE, hosts=[second], name="new"))
        await until(pilot, lambda: [s.url for s in app.state.servers] == [second], what="the changed host")
        await until(pilot, lambda: second.removeprefix("http://") in screen_text(app), what="the row read again")
        # removed: the row and the host leave
        (folder / "new.toml").unlink()
        await until(pilot, lambda: rows(app, "experiments-table") == {}, what="the row gone")
        await pilot.press("1")
        await until(pilot, lambda: rows(app, "servers-table") == {}, what="its host gone")


@run
async def test_coming_back_to_a_screen_looks_at_the_folder_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "EXPERIMENTS_S", 600.0)  # the app's own look never comes during this test
    app = build_app(tmp_path)
    folder = tmp_path / "workspace" / "experiments"
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.2)
        url = closed_url()
        (folder / "late.toml").write_text(experiment_toml(source=SOURCE, hosts=[url], name="late"))
        await pilot.press("1")
        await until(pilot, lambda: url in rows(app, "servers-table"), timeout=3, what="the host on resume")
        await pilot.press("3")
        await until(pilot, lambda: str(folder / "late.toml") in rows(app, "experiments-table"), timeout=3,
                    what="the file listed")


def status(app) -> str:
    return app.screen.query_one("#status").render().plain


@run
async def test_a_saved_server_message_ages_out(tmp_path, standin, monkeypatch):
    monkeypatch.setattr(status_line, "SAID_S", 0.5)
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a")
        await pilot.press(*standin.url, "enter")
        await until(pilot, lambda: status(app).startswith(f"saved {standin.url}"), what="saved")
        await until(pilot, lambda: status(app) == "", timeout=3, what="the message to age out")


@run
async def test_an_error_stays_longer_than_a_message_and_work_under_way_until_its_outcome(tmp_path, monkeypatch):
    monkeypatch.setattr(status_line, "SAID_S", 0.3)
    monkeypatch.setattr(status_line, "ERROR_S", 1.5)
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text("name = \n")
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: len(rows(app, "experiments-table")) == 1, what="the row")
        await pilot.press("t")
        assert status(app).startswith("error: broken.toml has an error")
        await pilot.pause(0.8)  # a message would be gone by now
        assert status(app).startswith("error: broken.toml has an error")
        await until(pilot, lambda: status(app) == "", timeout=4, what="the error to age out")
        line = app.screen.query_one("#status")
        line.say("submitting…", lasting=True)
        await pilot.pause(0.8)
        assert status(app) == "submitting…"
        line.say("submitted")  # its outcome replaces it, and ages out in turn
        assert status(app) == "submitted"
        await until(pilot, lambda: status(app) == "", timeout=3, what="the outcome to age out")
