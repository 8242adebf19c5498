"""The study report as one self-contained HTML file, like the run report: inline CSS, one inline SVG chart (accuracy
per cell with its interval), no JavaScript, nothing fetched. Every text is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from .html import CSS, _block
from .study_layout import CELLS_SECTION, intro, sections, title
from .svg import AXIS, BAR, FONT, WIDTH

# A study's tables have a column per cell: figures never break inside a number (the table scrolls sideways instead)
EXTRA_CSS = "td { white-space: nowrap; } pre { max-height: 40em; overflow: auto; }\n"


def accuracy_chart(s: dict[str, Any]) -> str:
    """A forest plot: each cell's accuracy as a dot on its 95% interval, on one 0–1 axis."""
    cells = [c for c in s["cells"] if c["accuracy"] is not None]
    if not cells:
        return ""
    row, left, right, top = 20, 260, 70, 34
    plot_w = WIDTH - left - right
    height = top + row * len(cells) + 24
    name = "Accuracy per cell, with its 95% interval (Wilson)"

    def x(v: float) -> float:
        return left + plot_w * max(0.0, min(1.0, v))

    body = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(name)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        body.append(f'<line x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" y2="{height - 20}" stroke="#ddd"/>')
        body.append(f'<text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle" {FONT}>{tick:g}</text>')
    for i, c in enumerate(cells):
        y = top + i * row + row / 2
        low = c["accuracy_low"] if c["accuracy_low"] is not None else c["accuracy"]
        high = c["accuracy_high"] if c["accuracy_high"] is not None else c["accuracy"]
        label = c["cell"] if len(c["cell"]) <= 40 else c["cell"][:39] + "…"
        bold = ' font-weight="bold"' if c["cell"] == s["best_cell"] else ""
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" {FONT}{bold}>{escape(label)}</text>')
        body.append(f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" stroke="{AXIS}" stroke-width="2"/>')
        body.append(f'<circle cx="{x(c["accuracy"]):.1f}" cy="{y:.1f}" r="4" fill="{BAR}"><title>{escape(c["cell"])}: '
                    f'{c["accuracy"]:.3f} [{low:.3f}, {high:.3f}], n {c["n"]}</title></circle>')
        body.append(f'<text x="{WIDTH - right + 6}" y="{y + 4:.1f}" {FONT}>{c["accuracy"]:.3f}</text>')
    return (f'<svg role="img" aria-label="{escape(name)}" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}"><title>{escape(name)}</title>' + "".join(body) + "</svg>")


def study_to_html(studies: list[dict[str, Any]], notes_shown: int | None = None) -> str:
    """`studies`: the study against each reference of the report (study_layout)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(title(studies))}</title><style>{CSS}{EXTRA_CSS}</style></head><body>",
             f"<h1>{escape(title(studies))}</h1>"]
    parts += [f"<p>{escape(text)}</p>" for text in intro(studies)]
    charts = iter(studies)
    for heading, blocks in sections(studies, notes_shown):
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts += [_block(b) for b in blocks]
        if heading.startswith(CELLS_SECTION):  # one per reference, in the order of `studies`
            parts.append(accuracy_chart(next(charts)))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"
