"""Disk use of a server's models against the quota (75 GB by default: the CRCD allowance for ~/.ollama)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from app.cluster import present

BAR_WIDTH = 24


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


class QuotaBar(Static):
    DEFAULT_CSS = """
    QuotaBar { height: 1; padding: 0 1; }
    """

    def show_usage(self, used: int | None, quota: int, pulling: int = 0) -> None:
        if used is None:
            self.update(Text(f"quota {'?' * 3} of {quota / 1e9:g} GB", style="dim"))
            return
        fraction = used / quota
        style = "bold red" if fraction > 1 else "yellow" if fraction > 0.9 else "green"
        text = Text("quota ")
        text.append(bar(fraction), style=style)
        text.append(f"  {present.size(used)} of {quota / 1e9:g} GB ({fraction:.0%})")
        if fraction > 1:
            text.append("  over quota", style="bold red")
        if pulling:
            text.append(f"  + {present.size(pulling)} being pulled", style="dim")
        self.update(text)
