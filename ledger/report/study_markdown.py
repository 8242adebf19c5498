"""The study report as Markdown: reads well in a terminal (`less`) and renders on GitHub."""

from __future__ import annotations

from typing import Any

from .markdown import blocks_to_lines
from .study_layout import intro, sections, title


def study_to_markdown(studies: list[dict[str, Any]], notes_shown: int | None = None) -> str:
    """`studies`: the study against each reference of the report (study_layout)."""
    lines = [f"# {title(studies)}", ""]
    for text in intro(studies):
        lines += [text, ""]
    for heading, blocks in sections(studies, notes_shown):
        lines += [f"## {heading}", ""] + blocks_to_lines(blocks)
    return "\n".join(lines).rstrip() + "\n"
