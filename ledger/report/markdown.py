"""The report as Markdown: reads well in a terminal (`less`) and renders on GitHub."""

from __future__ import annotations

import re
from typing import Any

from .layout import Block, head_line, sections


def cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def fence(lang: str, text: str) -> list[str]:
    # A fence longer than any run of backticks inside, so a prompt that quotes Markdown cannot end it early.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    mark = "`" * max(3, longest + 1)
    return [mark + lang, text.rstrip("\n"), mark]


def blocks_to_lines(blocks: list[Block]) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "p":
            lines.append(block[1])
        elif kind == "table":
            lines += table(block[1], block[2])
        elif kind == "code":
            lines += fence(block[1], block[2])
        lines.append("")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['title']}", ""]
    description = report["experiment"]["description"]
    if description:
        lines += [f"> {description}", ""]
    lines += [f"Generated {report['generated_at']} by notes-tui ledger report.", "", head_line(report), ""]
    for title, blocks in sections(report):
        lines += [f"## {title}", ""] + blocks_to_lines(blocks)
    return "\n".join(lines).rstrip() + "\n"
