"""Screen 5, Ledger: runs newest first a page at a time, filters, a run's details with its evals, its report, and
the comparison of marked runs — on a ledger made by real runs."""

from __future__ import annotations

import sqlite3

import app.tui.screens.ledger_runs as ledger_screen
from tests.helpers.runhelp import cli, ledger_runs
from tests.helpers.support import experiment_toml
from tests.helpers.tuikit import build_app, rows, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def make_runs(tmp_path, capsys) -> list[str]:
    """Five runs of two experiments and two models: pna-a three times (five notes each), pna-b twice."""
    folder = tmp_path / "exps"
    folder.mkdir()
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT, gold TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)",
                     [(i, f"CT {i}: ground glass.", "(1) Likely" if i % 2 else "(2) Unlikely") for i in range(15)])
    conn.commit()
    conn.close()
    with StandinOllama(models=("llama3", "mistral")) as server:
        for name, model in (("pna-a", "llama3"), ("pna-b", "mistral")):
            exp = folder / f"{name}.toml"
            exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], name=name, model=model,
                                           results=f'table = "{name.replace("-", "_")}"\nbatch_size = 5'))
            for _ in range(3 if name == "pna-a" else 2):
                code, _, _ = cli(capsys, "--run", str(exp), "--limit", "5", "--ledger", str(tmp_path / "ledger"))
                assert code == 0
    ids = [r["run_id"] for r in ledger_runs(tmp_path / "ledger")]
    code, _, err = cli(capsys, "ledger", "eval", ids[0], "--file", str(folder / "pna-b.toml"), "--gold-column", "gold",
                       "--ledger", str(tmp_path / "ledger"))  # the newest run gets an eval against gold
    assert code == 0, err
    return ids


def test_runs_paged_filtered_shown_reported_compared(tmp_path, capsys, monkeypatch):
    ids = make_runs(tmp_path, capsys)  # newest first
    monkeypatch.setattr(ledger_screen, "PAGE", 2)
    browse(tmp_path, ids)


@run
async def browse(tmp_path, ids):
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: len(rows(app, "ledger-table")) == 2, what="the first page")
        assert list(rows(app, "ledger-table")) == ids[:2] and "n loads 2 more" in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: len(rows(app, "ledger-table")) == 4, what="the second page")
        await pilot.press("n")
        await until(pilot, lambda: len(rows(app, "ledger-table")) == 5, what="the last page")
        assert list(rows(app, "ledger-table")) == ids and app.screen.complete
        first = rows(app, "ledger-table")[ids[0]]
        assert first[2:4] == ("pna-b", "mistral:latest") and first[6:9] == ("completed", "5/5", "100%")
        # times as local time, the zone said once (issue 24 items 10, 15): in the column header and the line below
        from datetime import datetime

        from ledger import Ledger

        started = Ledger(tmp_path / "ledger").get_run(ids[0])["started_at"]
        local = datetime.fromisoformat(started.replace("Z", "+00:00")).astimezone()
        zone = local.tzname()
        assert first[9] == f"{local:%Y-%m-%d %H:%M}" and f"Started ({zone})" in screen_text(app)
        assert f"started {local:%Y-%m-%d %H:%M} {zone}" in app.screen.query_one("#ledger-detail").render().plain

        await pilot.press("f")  # only pna-b's runs
        app.screen.query_one("#experiment").value = "pna-b"
        await pilot.press("enter")
        await until(pilot, lambda: set(rows(app, "ledger-table")) == set(ids[:2]), what="filtered")
        assert "filter: experiment pna-b" in screen_text(app)

        await pilot.press("enter")  # the selected run in full
        body = lambda: app.screen.query_one("#run-text").render().plain  # noqa: E731
        await until(pilot, lambda: "prompt hash" in body(), what="details")
        assert f"run {ids[0]}  completed" in body() and "mistral:latest" in body() and "labels" in body()
        assert "eval " in body() and "response: accuracy " in body()  # the eval stored for it
        await pilot.press("escape")

        await pilot.press("p")  # its report, as Markdown
        await until(pilot, lambda: bool(app.screen.query("#run-markdown")), what="report")
        report = app.screen.query_one("#run-markdown").source
        assert "Ledger head" in report and "Evaluation against gold labels" in report and "No eval is" not in report
        await pilot.press("escape")

        await pilot.press("c")  # nothing marked yet: says how
        assert "mark two runs or more with space" in screen_text(app)
        await pilot.press("space", "down", "space", "c")
        await until(pilot, lambda: "kappa" in app.screen.query_one("#run-text").render().plain, what="compare")
        assert "agreement" in app.screen.query_one("#run-text").render().plain
        await pilot.press("escape")

        # p with runs marked: one report of them together (issue 24 item 8), saved as md and html from the dialog
        await pilot.press("p")
        await until(pilot, lambda: bool(app.screen.query("#run-markdown")), what="the report of the marked runs")
        report = app.screen.query_one("#run-markdown").source
        assert ids[0] in report and ids[1] in report
        assert f"report of runs {ids[0][:10]}, {ids[1][:10]}" in screen_text(app)
        hint = lambda: app.screen.query_one("#run-hint").render().plain  # noqa: E731
        for key, ext in (("m", "md"), ("h", "html")):
            await pilot.press(key)
            path = tmp_path / "workspace" / "reports" / f"report-{ids[0][:10]}-and-1.{ext}"
            await until(pilot, lambda p=path: hint() == f"saved: {p}", what=f"the {ext} saved")
            assert ids[1] in path.read_text()
        assert path.read_text().startswith("<!DOCTYPE html>")


def test_filter_matches_part_of_a_name_says_when_nothing_matches_and_esc_clears_it(tmp_path, capsys):
    ids = make_runs(tmp_path, capsys)  # newest first: pna-b twice, then pna-a three times
    filter_partly(tmp_path, ids)


@run
async def filter_partly(tmp_path, ids):
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: len(rows(app, "ledger-table")) == 5, what="every run")
        assert "esc Clear filter" not in screen_text(app)  # nothing to clear yet: not offered

        await pilot.press("f")  # part of the name, in another case
        app.screen.query_one("#experiment").value = "NA-b"
        await pilot.press("enter")
        await until(pilot, lambda: list(rows(app, "ledger-table")) == ids[:2], what="pna-b's runs")
        text = screen_text(app)
        assert "filter: experiment NA-b (esc clears)" in text and "esc Clear filter" in text

        await pilot.press("escape")  # one key: every run again
        await until(pilot, lambda: len(rows(app, "ledger-table")) == 5, what="the filter cleared")
        assert "filter: none" in screen_text(app) and "esc Clear filter" not in screen_text(app)

        await pilot.press("f")  # a model filter: part of it, and enter from the status list applies
        app.screen.query_one("#model").value = "stra"
        app.screen.query_one("#status").focus()
        await pilot.press("enter")
        await until(pilot, lambda: list(rows(app, "ledger-table")) == ids[:2], what="mistral's runs")
        assert "filter: model stra" in screen_text(app)

        await pilot.press("f")  # space opens the statuses; enter there picks one, enter again applies
        app.screen.query_one("#model").value = ""
        select = app.screen.query_one("#status")
        select.focus()
        await pilot.press("space")
        await until(pilot, lambda: select.expanded, what="the list of statuses")
        await pilot.press("down", "enter")
        await until(pilot, lambda: not select.expanded and select.value == "completed", what="completed picked")
        await pilot.press("enter")
        await until(pilot, lambda: "filter: status completed" in screen_text(app), what="the status filter")
        assert len(rows(app, "ledger-table")) == 5

        await pilot.press("f")  # a name nothing has: says so, with the names there are, closest first
        app.screen.query_one("#experiment").value = "pna-bx"
        await pilot.press("enter")
        await until(pilot, lambda: "No run matches the filter" in screen_text(app), what="the empty filter")
        assert rows(app, "ledger-table") == {}
        text = " ".join(screen_text(app).split())
        assert ("no run's experiment contains 'pna-bx' — the experiments here, closest first: pna-b, pna-a"
                in text), text
        assert "esc clears it" in text

        await pilot.press("f")  # each part matches runs, not together
        app.screen.query_one("#experiment").value = "pna-a"
        app.screen.query_one("#model").value = "mistral"
        await pilot.press("enter")
        await until(pilot, lambda: "together" in screen_text(app), what="the empty combination")
        text = " ".join(screen_text(app).split())
        assert "no run matches experiment 'pna-a', model 'mistral' and status completed together" in text

        await pilot.press("escape")
        await until(pilot, lambda: len(rows(app, "ledger-table")) == 5, what="cleared again")
        assert "No run matches" not in screen_text(app)
