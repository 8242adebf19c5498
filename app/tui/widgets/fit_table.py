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
    width: int | None = None  # None: as wide as its longest cell, between min_width and max_width
    min_width: int = 8
    max_width: int | None = None
    grow: int = 0  # a flexible column with grow > 0 also takes a share of the room that is left over
    right: bool = False
    hide_below: int = 0  # left out when the table is narrower: the detail line below the table shows it instead
    hide_empty: bool = False  # left out while no row has anything in it
    keep_tag: bool = False  # a model name: cut its name, never its tag ("qwen2.5…:7b-instruct", not "qwen2.5:7b-in…")


class FitTable(DataTable):
    """Fixed columns keep their width; flexible ones get what their cells need (between their minimum and maximum),
    less when the room is short, and the columns that grow share what is left. Longer text ends in an ellipsis.

    Rows are given as a whole with `set_rows` (a cell for every column, shown or not); only the cells whose text
    changed are updated (nothing changed: nothing redrawn), and the cursor stays on the same row across updates,
    resizes and re-sorts."""


    def __init__(self, columns: Sequence[Col], **kwargs):
        super().__init__(cursor_type="row", **kwargs)
        self.all_cols = tuple(columns)
        self.cols = self.all_cols
        self._rows: list[tuple[str, tuple[Cell, ...]]] = []
        self._widths: tuple[int, ...] = ()

    def on_mount(self) -> None:
        self._rebuild()

    def on_resize(self, event: events.Resize) -> None:
        if self._misfit():
            self._rebuild()

    @property
    def selected_key(self) -> str | None:
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= len(self._rows):
            return None
        return self._rows[self.cursor_row][0]

    def select_key(self, key: str) -> None:
        if key == self.selected_key:
            return  # moving the cursor onto itself still repaints the table
        for i, (k, _) in enumerate(self._rows):
            if k == key:
                self.move_cursor(row=i)
                return

    def set_columns(self, columns: Sequence[Col]) -> None:
        """Other columns (a study's cells): the next set_rows lays the table out again."""
        if tuple(columns) != self.all_cols:
            self.all_cols, self.cols = tuple(columns), ()

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        old, self._rows = self._rows, [(key, tuple(cells)) for key, cells in rows]
        if not self.is_mounted:
            return
        if [k for k, _ in self._rows] != [k for k, _ in old] or self._misfit():
            self._rebuild()
            return
        shown = [self.all_cols.index(c) for c in self.cols]
        for (key, cells), (_, before) in zip(self._rows, old):
            for i, col, width in zip(shown, self.cols, self._widths):
                if cells[i] != before[i]:
                    self.update_cell(key, col.key, self._cut(cells[i], width, col.right, col.keep_tag))

    def _width(self) -> int:
        """The width to fit, scrollbar included: the scrollbar comes and goes as rows do (a rebuild clears them
        for a moment), and fitting to the width beside it would resize, rebuild and resize again without end."""
        bar = self.scrollbar_size_vertical if self.show_vertical_scrollbar else 0
        return (self.size.width + bar) or 80

    def _misfit(self) -> bool:
        """The columns shown, or their widths, are not what the width and the cells call for now."""
        total = self._width()
        return self._shown(total) != self.cols or self._fit(total) != self._widths

    def _shown(self, total: int) -> tuple[Col, ...]:
        return tuple(c for i, c in enumerate(self.all_cols) if total >= c.hide_below
                     and not (c.hide_empty and not any(str(cells[i]) for _, cells in self._rows)))

    def _longest(self, col: Col) -> int:
        i = self.all_cols.index(col)
        cells = [r[1][i] for r in self._rows]
        return max([len(col.label), *((c.cell_len if isinstance(c, Text) else len(c)) for c in cells)])

    def _fit(self, total: int) -> tuple[int, ...]:
        cols = self._shown(total)
        # room for the vertical scrollbar and the cell padding of every column
        room = max(0, total - 2 - 2 * self.cell_padding * len(cols))
        fixed = sum(c.width for c in cols if c.width is not None)
        flexible = [c for c in cols if c.width is None]
        low = {c.key: c.min_width for c in flexible}
        want = {c.key: max(c.min_width, min(self._longest(c), c.max_width or 10**6)) for c in flexible}
        width = dict(low)
        spare = room - fixed - sum(low.values())
        # first towards what each column's cells need, in equal steps, then what is left to the growing columns
        for targets, cap in ((flexible, want), ([c for c in flexible if c.grow], None)):
            while spare > 0:
                open_ = [c for c in targets if cap is None or width[c.key] < cap[c.key]]
                if not open_:
                    break
                weights = sum(max(1, c.grow) for c in open_)
                given = 0
                for c in open_:
                    part = max(1, spare * max(1, c.grow) // weights)
                    if cap is not None:
                        part = min(part, cap[c.key] - width[c.key])
                    part = min(part, spare - given)
                    width[c.key] += part
                    given += part
                spare -= given
                if not given:
                    break
        return tuple(c.width if c.width is not None else width[c.key] for c in cols)

    def _rebuild(self) -> None:
        keep = self.selected_key
        total = self._width()
        self.cols, self._widths = self._shown(total), self._fit(total)
        shown = [self.all_cols.index(c) for c in self.cols]
        self.clear(columns=True)
        for col, width in zip(self.cols, self._widths):
            label = Text(col.label, justify="right" if col.right else "left")
            self.add_column(label, width=width, key=col.key)
        for key, cells in self._rows:
            self.add_row(*(self._cut(cells[i], w, col.right, col.keep_tag)
                           for i, w, col in zip(shown, self._widths, self.cols)), key=key)
        if keep is not None:
            self.select_key(keep)

    @staticmethod
    def _cut(cell: Cell, width: int, right: bool, keep_tag: bool = False) -> Text:
        text = cell.copy() if isinstance(cell, Text) else Text(cell)
        if right:
            text.justify = "right"
        if text.cell_len > width:
            plain = text.plain
            name, colon, tag = plain.rpartition(":")
            if keep_tag and colon and len(tag) + 3 <= width:  # at least two characters of the name, and the …
                return Text(name[: width - len(tag) - 2] + "…:" + tag, style=text.style, justify=text.justify)
            text.truncate(width, overflow="ellipsis")
        return text
