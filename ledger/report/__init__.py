"""Every rendering the ledger makes: `terminal` (list, show, compare, eval, verify) and the audit report —
`build_report` (data.py) gathers it, `render` lays it out as Markdown, HTML (+ SVG), CSV or JSON — and the study
report: `ledger.study.study_report` plus `study_methods` (study_data.py), laid out by `render_study` (study_*.py)."""

from __future__ import annotations

from typing import Any

FORMATS = ("md", "html", "csv", "json")


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "md":
        from .markdown import to_markdown

        return to_markdown(report)
    if fmt == "html":
        from .html import to_html

        return to_html(report)
    if fmt == "csv":
        from .tabular import to_csv

        return to_csv(report)
    if fmt == "json":
        import json

        return json.dumps(report, indent=2, ensure_ascii=False, default=str)
    raise ValueError(fmt)


def render_study(study: dict[str, Any] | list[dict[str, Any]], fmt: str, notes_shown: int | None = None) -> str:
    """`study`: study_report's dict, or a list of them (the study against gold, then adjudicated): one report.
    `notes_shown`: the disagreements listed in md and html (None: all of them); csv is one row per cell (and
    reference)."""
    studies = study if isinstance(study, list) else [study]
    if fmt == "md":
        from .study_markdown import study_to_markdown

        return study_to_markdown(studies, notes_shown)
    if fmt == "html":
        from .study_html import study_to_html

        return study_to_html(studies, notes_shown)
    if fmt == "csv":
        from .study_csv import study_to_csv

        return study_to_csv(studies)
    raise ValueError(fmt)  # json is the data itself: the command prints it
