"""The Experiments screen's try dialog finds a note by its id as typed (issue 24 item 7): here a SQLite table made
as the CSV builder made it before, without column types, whose ids are integers."""

from __future__ import annotations

import sqlite3

from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import build_app, run, until
from tests.standin.standin_ollama import StandinOllama

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def untyped_workspace(tmp_path, url: str):
    folder = tmp_path / "workspace" / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute('CREATE TABLE notes ("note_id", "note_text")')  # no types: integer 5 is not the text '5'
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}: streaky opacity.") for i in range(10)])
    conn.commit()
    conn.close()
    exp = folder / "pna.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=[url]))
    return exp


@run
async def test_the_try_dialog_finds_an_integer_id_typed_as_text(tmp_path):
    with StandinOllama(latency=0.0, slots=2) as server:
        exp = untyped_workspace(tmp_path, server.url)
        app = build_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            app.screen.query_one("#experiments-table").select_key(str(exp))
            await pilot.press("t")
            app.screen.query_one("#id").value = "5"
            app.screen.query_one("#id").focus()
            await pilot.press("enter")
            body = lambda: app.screen.query_one("#try-reply").render().plain  # noqa: E731
            await until(pilot, lambda: "1 note:" in body() or "error:" in body(), timeout=30, what="the try to end")
            found = body()
            done = app.screen.query_one("#try-done").render().plain
            labels = [str(w.render()) for w in app.screen.query(".labels Label")]
            app.screen.query_one("#id").value = "50"
            await pilot.press("enter")
            await until(pilot, lambda: "error:" in body(), timeout=30, what="the second try to end")
            missing = body()
            failed = app.screen.query_one("#try-done").render().plain
    assert "note 5: valid" in found and "CXR 5: streaky opacity." in found and "[1/1]" in found
    assert missing.startswith("error: no note with id '50'") and "\n" not in missing
    # the fields are labelled, and a line below the replies says the try is done and sums it up (issue 24 item 16)
    assert labels == ["notes", "random seed", "or one note id"]
    assert done.startswith("done in ") and "1 note: 1 valid, 0 invalid" in done
    assert failed == "not sent: see the error above"
