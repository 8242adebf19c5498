"""Screen 3, Experiments: the workspace's files (valid or the one-line error), notes to do counted in a worker, the
last run from the ledger, check in a dialog, edit with $EDITOR and the file checked again on return."""

from __future__ import annotations

import os
import sqlite3
import stat

from tests.helpers.runhelp import cli
from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import build_app, rows, run, screen_text, until

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def workspace(tmp_path, server_url: str):
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}: patchy opacity, right lower lobe.")
                                                          for i in range(1, 13)])
    conn.commit()
    conn.close()
    (folder / "pna.toml").write_text(experiment_toml(source=SOURCE, hosts=[server_url], name="pna-v1"))
    (folder / "broken.toml").write_text(experiment_toml(source=SOURCE, hosts=[server_url]).replace(
        'num_ctx = 4096', 'num_ctx = "lots"'))
    return folder


def test_experiments_listed_valid_or_with_their_error_and_notes_to_do(tmp_path, standin, capsys):
    folder = workspace(tmp_path, standin.url)
    code, _, _ = cli(capsys, "--run", str(folder / "pna.toml"), "--limit", "5", "--ledger", str(tmp_path / "ledger"))
    assert code == 0
    listed(tmp_path, folder)


@run
async def listed(tmp_path, folder):
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        table = lambda: rows(app, "experiments-table")  # noqa: E731
        await until(pilot, lambda: table()[str(folder / "pna.toml")][4] == "7", what="notes to do counted")
        pna, broken = table()[str(folder / "pna.toml")], table()[str(folder / "broken.toml")]
        assert pna[:3] == ("pna-v1", "ollama · llama3", "valid")
        assert pna[3].startswith("completed 5/5 · ")
        assert broken[2].startswith("error: model.options.num_ctx: Input should be a valid integer")
        app.screen.query_one("#experiments-table").select_key(str(folder / "broken.toml"))
        await pilot.pause()
        assert "e opens it in your editor" in screen_text(app)


def test_a_study_row_shows_its_last_cell_and_the_requests_left_over_every_cell(tmp_path, standin, capsys):
    folder = workspace(tmp_path, standin.url)
    study = experiment_toml(source=SOURCE, hosts=[standin.url], name="pna-study",
                            extra="[study]\nrepeats = 2\n[study.prompts.a]\n[study.prompts.b]\nsystem = \"JSON only.\"\n")
    (folder / "study.toml").write_text(study)
    code, _, err = cli(capsys, "--run", str(folder / "study.toml"), "--limit", "5", "--ledger", str(tmp_path / "ledger"))
    assert code == 0, err
    study_listed(tmp_path, folder)


@run
async def study_listed(tmp_path, folder):
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        table = lambda: rows(app, "experiments-table")  # noqa: E731
        # 4 cells of 12 notes, 5 answered in each: 28 requests left, and the last cell's run is the study's last
        await until(pilot, lambda: table()[str(folder / "study.toml")][4] == "28", what="requests to do counted")
        assert table()[str(folder / "study.toml")][3].startswith("completed 5/5 · ")


@run
async def test_check_shows_what_the_command_shows_with_the_first_prompt(tmp_path, standin):
    folder = workspace(tmp_path, standin.url)
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        app.screen.query_one("#experiments-table").select_key(str(folder / "pna.toml"))
        await pilot.press("c")
        body = lambda: app.screen.query_one("#check").render().plain  # noqa: E731
        await until(pilot, lambda: "\n---" in body(), timeout=20, what="the check to finish")
        text = body()
        assert "config:  " in text and "12 notes to do" in text and "model:   llama3:latest digest" in text
        assert "first note to do" in text and "CXR 1: patchy opacity" in text  # the note, because we asked
        await pilot.press("escape")
        assert "Experiments" in screen_text(app)


@run
async def test_edit_opens_the_editor_and_checks_the_file_again(tmp_path, standin, monkeypatch):
    folder = workspace(tmp_path, standin.url)
    editor = tmp_path / "fix-it"
    editor.write_text("#!/bin/sh\nsed -i 's/num_ctx = \"lots\"/num_ctx = 4096/' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("VISUAL", str(editor))
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        key = str(folder / "broken.toml")
        app.screen.query_one("#experiments-table").select_key(key)
        assert rows(app, "experiments-table")[key][2].startswith("error:")
        await pilot.press("e")
        await until(pilot, lambda: rows(app, "experiments-table")[key][2] == "valid", what="re-validated")
        assert "broken.toml is valid" in screen_text(app)
        monkeypatch.setenv("VISUAL", "/no/such/editor")
        await pilot.press("e")
        assert "could not start the editor '/no/such/editor'" in screen_text(app)
        assert os.path.exists(key)


def question(app) -> str:
    """The text of the confirmation on screen, its lines joined."""
    return " ".join(app.screen.query_one(".question").render().plain.split())


def fake_editor(folder, name: str, fix: bool):
    """An editor called `name` in a folder of its own: it writes its name to a log, and with `fix` repairs broken.toml
    (shell builtins only: PATH holds nothing else)."""
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text("#!/bin/sh\n" + f'echo {name} >> "{folder}/log"\n'
                      + ('printf "%s\\n" "$FIXED" > "$1"\n' if fix else ""))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder / "log"


@run
async def test_edit_without_an_editor_set_says_which_opens_first(tmp_path, standin, monkeypatch):
    folder = workspace(tmp_path, standin.url)
    key = str(folder / "broken.toml")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.setenv("FIXED", (folder / "pna.toml").read_text())
    with_nano = tmp_path / "bin-nano"
    log = fake_editor(with_nano, "nano", fix=True)
    monkeypatch.setenv("PATH", str(with_nano))
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        app.screen.query_one("#experiments-table").select_key(key)
        await pilot.press("e")  # nano is installed: the dialog names it and its keys before the app is suspended
        text = question(app)
        assert "No $VISUAL or $EDITOR is set, so broken.toml opens in nano: ctrl+o saves, ctrl+x leaves" in text
        assert "export EDITOR=" in text and not log.exists()  # nothing started yet
        await pilot.press("enter")  # the focused button opens it
        await until(pilot, lambda: rows(app, "experiments-table")[key][2] == "valid", what="edited in nano")
        assert log.read_text() == "nano\n"
        await pilot.press("e")  # said once a session: the next e opens it at once
        await until(pilot, lambda: log.read_text() == "nano\nnano\n", what="opened again without asking")
        assert "No $VISUAL" not in screen_text(app)

    with_vi = tmp_path / "bin-vi"  # no nano: vi, and how to leave it
    log = fake_editor(with_vi, "vi", fix=False)
    monkeypatch.setenv("PATH", str(with_vi))
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        app.screen.query_one("#experiments-table").select_key(str(folder / "pna.toml"))
        await pilot.press("e")
        text = question(app)
        assert "so pna.toml opens in vi: i to type, then escape and :wq saves and leaves" in text
        await pilot.press("n")  # no: nothing opens
        await pilot.pause()
        assert not log.exists() and "No $VISUAL" not in screen_text(app)
        await pilot.press("e", "y")
        await until(pilot, lambda: log.exists() and "pna.toml is valid" in screen_text(app), what="edited in vi")
