"""A ticked box shows a mark and an empty one does not, so NO_COLOR (no colours at all) still tells them apart."""

from __future__ import annotations

from textual.app import App, ComposeResult

from app.tui.widgets.check_box import CheckBox
from tests.helpers.tuikit import run


class _One(App):
    def compose(self) -> ComposeResult:
        yield CheckBox("answer again", id="box")


@run
async def test_the_mark_is_a_character_not_a_colour(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = _One()
    async with app.run_test() as pilot:
        box = app.query_one(CheckBox)
        assert "X" not in box.render().plain
        await pilot.click("#box")
        await pilot.pause()
        assert box.value and "X" in box.render().plain
        assert box.render().plain.strip().endswith("answer again")
