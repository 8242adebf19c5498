"""The report as one self-contained HTML file: inline CSS and SVG charts, no JavaScript, nothing fetched, so it
opens offline years later and can go into a supplement as it is."""

from __future__ import annotations

from html import escape
from typing import Any

from ..clock import parse_iso
from .layout import Block, head_line, label_text, sections
from .svg import bars, histogram, line

THROUGHPUT_BUCKETS = 40

CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; white-space: pre-wrap; overflow-wrap: anywhere; }
.head { font-family: monospace; overflow-wrap: anywhere; }
p { overflow-wrap: anywhere; }
table { display: block; max-width: 100%; overflow-x: auto; }
svg { max-width: 100%; height: auto; }
@media print { body { max-width: none; } table { display: table; } }
"""


def _block(block: Block) -> str:
    kind = block[0]
    if kind == "p":
        return f"<p>{escape(block[1])}</p>"
    if kind == "table":
        head = "".join(f"<th>{escape(str(h))}</th>" for h in block[1])
        body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in block[2])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if kind == "code":
        return f"<pre><code>{escape(block[2])}</code></pre>"
    raise ValueError(kind)


def _done_at(points: list[tuple[float, int]], t: float) -> float:
    """Units done by time t (seconds since the run's start), linear between the recorded points."""
    if not points or t <= points[0][0]:
        return 0.0
    for (t0, d0), (t1, d1) in zip(points, points[1:]):
        if t <= t1:
            return d0 + (d1 - d0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return float(points[-1][1])


def throughput_series(report: dict[str, Any]) -> list[tuple[float, float]]:
    """Notes per second of all the runs together, in equal time buckets from the first start to the last record."""
    starts = [parse_iso(t["started_at"]) for t in report["timeline"]]
    known = [s for s in starts if s is not None]
    if not known:
        return []
    origin = min(known)
    runs = [((start - origin).total_seconds(), series["points"]) for series, start in zip(report["timeline"], starts)
            if start is not None and series["points"]]
    end = max((offset + points[-1][0] for offset, points in runs), default=0.0)
    if end <= 0:
        return []
    width = end / THROUGHPUT_BUCKETS

    def done(t: float) -> float:
        return sum(_done_at(points, t - offset) for offset, points in runs)

    return [(round((i + 0.5) * width, 3), round((done((i + 1) * width) - done(i * width)) / width, 3))
            for i in range(THROUGHPUT_BUCKETS)]


def _charts(title: str, report: dict[str, Any]) -> list[str]:
    if title == "Answers":
        return [bars([(label_text(x["label"]), x["n"]) for x in d["labels"]] +
                     [(f"({k})", n) for k, n in d["without_label"].items() if n],
                     f"Labels of {d['field']}") for d in report["distributions"]]
    if title == "Latency and throughput":
        out = []
        if report["latency_ms"].get("histogram"):
            out.append(histogram(report["latency_ms"]["histogram"], "Latency per note", "ms"))
        series = throughput_series(report)
        if series:
            out.append(line(series, "Throughput over time (all runs together)", "s", "notes/s"))
        return out
    return []


def to_html(report: dict[str, Any]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(report['title'])}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(report['title'])}</h1>"]
    if report["experiment"]["description"]:
        parts.append(f"<p><em>{escape(report['experiment']['description'])}</em></p>")
    parts.append(f"<p>Generated {escape(report['generated_at'])} by notes-tui ledger report.</p>")
    parts.append(f'<p class="head">{escape(head_line(report))}</p>')
    for title, blocks in sections(report):
        parts.append(f"<h2>{escape(title)}</h2>")
        parts += [_block(b) for b in blocks]
        parts += _charts(title, report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
