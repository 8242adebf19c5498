"""Small inline SVG charts for the HTML report: drawn here as text, no library, no script, nothing fetched."""

from __future__ import annotations

import math
from html import escape
from typing import Any

WIDTH = 640
BAR = "#3b6ea5"
LINE = "#b5482a"
AXIS = "#555"
FONT = 'font-family="sans-serif" font-size="11"'


def _svg(height: int, body: list[str], title: str) -> str:
    return (f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}"><title>{escape(title)}</title>' + "".join(body) + "</svg>")


NICE_STEPS = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)


def nice_max(value: float) -> float:
    """The round number an axis ends at: the least of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten that is at
    least `value` (0.041 s ends at 0.05 s, 2,870 notes/s at 3,000)."""
    if value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    return next(float(f"{m * base:.12g}") for m in NICE_STEPS if m * base >= value * (1 - 1e-12))


def bars(items: list[tuple[str, int]], title: str) -> str:
    """Horizontal bars, one per label, with the count at the end."""
    row, left = 22, 200
    height = row * len(items) + 30
    top = max((v for _, v in items), default=0) or 1
    body = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 24 + i * row
        w = (WIDTH - left - 60) * value / top
        body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" {FONT}>{escape(label[:32])}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{BAR}"/>')
        body.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}" {FONT}>{value:,}</text>')
    return _svg(height, body, title)


def histogram(bins: list[dict[str, Any]], title: str, unit: str) -> str:
    """Vertical bars over equal-width bins; x axis in `unit`."""
    height, left, bottom, top_pad = 220, 50, 30, 22
    plot_w, plot_h = WIDTH - left - 10, height - bottom - top_pad
    peak = nice_max(max((b["n"] for b in bins), default=0))
    body = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>',
            f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="{AXIS}"/>',
            f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="{AXIS}"/>',
            f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end" {FONT}>{int(peak):,}</text>',
            f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" {FONT}>0</text>']
    w = plot_w / max(1, len(bins))
    for i, b in enumerate(bins):
        h = plot_h * b["n"] / peak
        body.append(f'<rect x="{left + i * w + 1:.1f}" y="{top_pad + plot_h - h:.1f}" width="{max(0.5, w - 2):.1f}" '
                    f'height="{h:.1f}" fill="{BAR}"><title>{b["from"]:g}–{b["to"]:g} {unit}: {b["n"]:,}</title></rect>')
    if bins:
        body.append(f'<text x="{left}" y="{height - 10}" {FONT}>{bins[0]["from"]:g}</text>')
        body.append(f'<text x="{left + plot_w}" y="{height - 10}" text-anchor="end" {FONT}>{bins[-1]["to"]:g} {unit}</text>')
    return _svg(height, body, title)


def line(points: list[tuple[float, float]], title: str, x_unit: str, y_unit: str) -> str:
    """One polyline; axes start at zero."""
    height, left, bottom, top_pad = 220, 50, 30, 22
    plot_w, plot_h = WIDTH - left - 10, height - bottom - top_pad
    x_max = nice_max(max((x for x, _ in points), default=0))
    y_max = nice_max(max((y for _, y in points), default=0))
    coords = " ".join(f"{left + plot_w * x / x_max:.1f},{top_pad + plot_h - plot_h * y / y_max:.1f}" for x, y in points)
    body = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>',
            f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="{AXIS}"/>',
            f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="{AXIS}"/>',
            f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end" {FONT}>{y_max:g}</text>',
            f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" {FONT}>0</text>',
            f'<text x="{left}" y="{height - 10}" {FONT}>0</text>',
            f'<text x="{left + plot_w}" y="{height - 10}" text-anchor="end" {FONT}>{x_max:g} {escape(x_unit)}</text>',
            f'<text x="{left + 4}" y="{top_pad + 8}" {FONT}>{escape(y_unit)}</text>']
    if points:
        body.append(f'<polyline points="{coords}" fill="none" stroke="{LINE}" stroke-width="1.5"/>')
    return _svg(height, body, title)
