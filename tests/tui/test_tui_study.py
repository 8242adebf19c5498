"""The study view (Ledger, s on a cell): the cells with their figures, the per-note table with the cells as columns
and the reference beside them, "different only" on and off, the note's text read from the source on demand, and an
adjudication set from the table that changes the reference — the same figures `ledger study` prints."""

from __future__ import annotations

import json

from tests.engine.test_study import CELLS, GOLD, _exp, server  # noqa: F401  (server is a fixture)
from tests.helpers.runhelp import cli
from tests.helpers.tuikit import build_app, rows, run, screen_text, until


@run
async def _drive(tmp_path, body):
    app = build_app(tmp_path, ledger_dir=tmp_path / "ledger")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: rows(app, "ledger-table"), what="the ledger's runs")
        await body(app, pilot)


def test_the_study_view_shows_the_cells_and_the_notes_they_differ_on_and_records_an_adjudication(
        tmp_path, server, capsys, private_ledger, monkeypatch):  # noqa: F811
    import app.tui.screens.study as study_screen

    monkeypatch.setattr(study_screen, "PAGE", 4)
    exp = _exp(tmp_path, server)
    assert cli(capsys, "--run", str(exp))[0] == 0
    code, out, err = cli(capsys, "ledger", "study", "pna-study", "--json", "--bootstrap", "0")
    doc = json.loads(out)
    different = [n["unit"] for n in doc["notes"] if n["different"]]
    assert 4 < len(different) < 12, "the stand-in must make cells differ on some notes only, more than a page"
    note = next(n for n in doc["notes"] if n["unit"] == different[0])
    label = note["labels"][CELLS[0]]
    gold = note["gold"]

    async def body(app, pilot):
        from app.tui.screens.study import StudyScreen

        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StudyScreen) and app.screen.report is not None,
                    what="the study view")
        text = screen_text(app)
        assert "pna-study · response · reference adjudicated (0 adjudicated)" in text
        for i, cell in enumerate(CELLS):
            line = next(line.strip() for line in text.splitlines() if line.strip().startswith(f"{'ABCDEFGH'[i]} {cell} "))
            assert line.split()[2] == "12"  # n
        assert "under 30 notes with a reference: the intervals are wide" in text
        table = rows(app, "study-notes")
        assert list(table) == different[:4]  # "different only" is where the view starts, a page (4 here) at a time
        await pilot.press("n")  # the next page: study_notes, not every figure again
        await until(pilot, lambda: list(rows(app, "study-notes")) == different, what="the second page")
        assert f"{len(different)} of {len(different)} notes where cells disagree or differ" in screen_text(app)
        table = rows(app, "study-notes")
        assert f"4 of {len(different)} notes where cells disagree or differ" in text
        assert table[different[0]][2] == label.split(" ")[0]  # cell A's label, short
        await pilot.press("d")  # every note, a page at a time
        await until(pilot, lambda: list(rows(app, "study-notes")) == ["0", "1", "2", "3"], what="every note's first page")
        assert "4 of 12 notes (d: only where they differ)" in screen_text(app)
        await pilot.press("d")
        await until(pilot, lambda: list(rows(app, "study-notes")) == different[:4], what="different only again")

        # t: the note's text from the source, shown and not kept
        await pilot.press("t")
        await until(pilot, lambda: f"CHEST X-RAY {different[0]}:" in screen_text(app), what="the note's text")
        await pilot.press("escape")

        # a: set the reference to cell A's label, with a comment
        target = label if label != gold else next(g for g in GOLD if g != gold)
        await pilot.press("a")
        await until(pilot, lambda: f"reference label of note {different[0]}" in screen_text(app), what="the dialog")
        await pilot.press("tab")
        await pilot.press(*"second reader")
        await pilot.press("shift+tab")
        await pilot.press("home")
        for _ in range(GOLD.index(target)):
            await pilot.press("down")
        await pilot.press("enter")
        await until(pilot, lambda: "reference adjudicated (1 adjudicated)" in screen_text(app), what="the adjudication applied")
        agree = set(note["labels"].values()) == {target}
        assert (different[0] not in rows(app, "study-notes")) == agree  # no longer different where every cell agrees
        await pilot.press("d")
        await until(pilot, lambda: len(rows(app, "study-notes")) == 4, what="every note's first page")
        assert int(different[0]) < 4, "the adjudicated note must be on the first page of every note"
        assert rows(app, "study-notes")[different[0]][1] == target.split(" ")[0] + "*"  # adjudicated, marked
        await pilot.press("g")
        await until(pilot, lambda: "reference gold (0 adjudicated)" in screen_text(app), what="gold alone")

    _drive(tmp_path, body)
    code, out, err = cli(capsys, "ledger", "adjudications", "pna-study", "--json")
    trail = json.loads(out)
    assert [(d["unit"], d["label"], d["replaces"], d["replaces_kind"], d["comment"]) for d in trail] == [
        (different[0], target_label(label, gold), gold, "gold", "second reader")]
    log = "\n".join(p.read_text() for p in (tmp_path / "ledger").rglob("*.jsonl"))
    assert "CHEST X-RAY" not in log  # the note's text was shown, never stored


def target_label(label: str, gold: str) -> str:
    return label if label != gold else next(g for g in GOLD if g != gold)
