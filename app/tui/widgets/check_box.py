"""A checkbox whose mark is a character: Textual's draws the same "X" ticked or not and tells them apart by colour
alone, which NO_COLOR (and a monochrome terminal) takes away."""

from __future__ import annotations

from textual.widgets import Checkbox


class CheckBox(Checkbox):
    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]  # noqa: N802 - Textual's name
        return "X" if self.value else " "
