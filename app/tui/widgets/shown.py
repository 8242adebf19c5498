"""A Static that redraws only when what it shows changed, and lays the screen out again only when the number of rows
it needs changed: screens set their text on every refresh, and a refresh that changes nothing must cost nothing."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Shown(Static):
    _shown: Text | str | None = None

    def _rows(self, content: Text | str | None) -> int:
        if content is None:
            return 0
        width = max(1, self.content_size.width)
        plain = content.plain if isinstance(content, Text) else content
        return sum(max(1, -(-Text(line).cell_len // width)) for line in plain.split("\n"))

    def show(self, content: Text | str) -> None:
        if content == self._shown:
            return
        before, self._shown = self._shown, content
        self.update(content, layout=before is None or self._rows(before) != self._rows(content))
