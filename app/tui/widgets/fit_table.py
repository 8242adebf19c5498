"""A DataTable whose columns fit the width it has, so a screen reads at 80 columns without a sideways scroll."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.widgets import DataTable

Cell = str | Text


@dataclass(frozen=True)
class Col:
    key: str
    label: str
    width: int | None = None  # None: shares what the fixed columns leave
    min_width: int = 8
    max_width: int | None = None  # a flexible column grows no further; what is left goes to the others
    grow: int = 1  # a flexible column's share of the room left, against the other flexible ones
    right: bool = False
    hide_below: int = 0  # left out when the table is narrower: the detail line below the table shows it instead


class FitTable(DataTable):
    """Fixed columns keep their width, flexible ones share the rest, longer text ends in an ellipsis.

    Rows are given as a whole with `set_rows` (a cell for every column, shown or not); only the cells whose text
    changed are updated (nothing changed: nothing redrawn), and the cursor stays on the same row across updates,
    resizes and re-sorts."""

    DEFAULT_CSS = """
    FitTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[Col], **kwargs):
        super().__init__(cursor_type="row", **kwargs)
        self.all_cols = tuple(columns)
        self.cols = self.all_cols
        self._rows: list[tuple[str, tuple[Cell, ...]]] = []
        self._widths: tuple[int, ...] = ()

    def on_mount(self) -> None:
        self._rebuild()

    def on_resize(self, event: events.Resize) -> None:
        if self._shown(event.size.width) != self.cols or self._fit(event.size.width) != self._widths:
            self._rebuild()

    @property
    def selected_key(self) -> str | None:
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= len(self._rows):
            return None
        return self._rows[self.cursor_row][0]

    def select_key(self, key: str) -> None:
        for i, (k, _) in enumerate(self._rows):
            if k == key:
                self.move_cursor(row=i)
                return

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        new = [(key, tuple(cells)) for key, cells in rows]
        if [k for k, _ in new] != [k for k, _ in self._rows] or not self.is_mounted:
            self._rows = new
            if self.is_mounted:
                self._rebuild()
            return
        shown = [self.all_cols.index(c) for c in self.cols]
        for (key, cells), (_, old) in zip(new, self._rows):
            for i, col, width in zip(shown, self.cols, self._widths):
                if cells[i] != old[i]:
                    self.update_cell(key, col.key, self._cut(cells[i], width, col.right))
        self._rows = new

    def _shown(self, total: int) -> tuple[Col, ...]:
        return tuple(c for c in self.all_cols if total >= c.hide_below)

    def _fit(self, total: int) -> tuple[int, ...]:
        cols = self._shown(total)
        # room for the vertical scrollbar and the cell padding of every column
        room = max(0, total - 2 - 2 * self.cell_padding * len(cols))
        fixed = sum(c.width for c in cols if c.width is not None)
        flexible = [c for c in cols if c.width is None]
        width = {id(c): c.min_width for c in flexible}
        extra = room - fixed - sum(width.values())
        growing = [c for c in flexible if c.max_width is None or width[id(c)] < c.max_width]
        while extra > 0 and growing:  # share what is left by weight, capping at max_width, until it is used up
            weights = sum(c.grow for c in growing)
            given = 0
            for c in growing:
                part = max(1, extra * c.grow // weights)
                if c.max_width is not None:
                    part = min(part, c.max_width - width[id(c)])
                part = min(part, extra - given)
                width[id(c)] += part
                given += part
            extra -= given
            growing = [c for c in growing if c.max_width is None or width[id(c)] < c.max_width]
            if not given:
                break
        return tuple(c.width if c.width is not None else width[id(c)] for c in cols)

    def _rebuild(self) -> None:
        keep = self.selected_key
        total = self.size.width or 80
        self.cols, self._widths = self._shown(total), self._fit(total)
        shown = [self.all_cols.index(c) for c in self.cols]
        self.clear(columns=True)
        for col, width in zip(self.cols, self._widths):
            label = Text(col.label, justify="right" if col.right else "left")
            self.add_column(label, width=width, key=col.key)
        for key, cells in self._rows:
            self.add_row(*(self._cut(cells[i], w, col.right) for i, w, col in zip(shown, self._widths, self.cols)),
                         key=key)
        if keep is not None:
            self.select_key(keep)

    @staticmethod
    def _cut(cell: Cell, width: int, right: bool) -> Text:
        text = cell.copy() if isinstance(cell, Text) else Text(cell)
        if right:
            text.justify = "right"
        if text.cell_len > width:
            text.truncate(width, overflow="ellipsis")
        return text
