"""Every rendering the ledger makes: `terminal` (list, show, compare, eval, verify) and the audit report —
`build_report` (data.py) gathers it, `render` lays it out as Markdown, HTML (+ SVG), CSV or JSON."""

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
