"""Disk use of a server's models against the quota (75 GB by default: the CRCD allowance for ~/.ollama)."""

from __future__ import annotations

from rich.text import Text

from app.cluster import present
from app.tui.tones import tone
from app.tui.widgets.shown import Shown

BAR_WIDTH = 24


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


class QuotaBar(Shown):
    DEFAULT_CSS = """
    QuotaBar { height: 1; padding: 0 1; }
    """

    def show_usage(self, used: int | None, quota: int, pulling: int = 0, last_known: bool = False,
                   unknown: str | None = None) -> None:
        if used is None:
            why = unknown or "the list is loading"
            self.show(Text(f"quota of {quota / 1e9:g} GB: use unknown ({why})", style=tone(self.app, "quiet")))
            return
        fraction = used / quota
        style = tone(self.app, "bad" if fraction > 1 else "warn" if fraction > 0.9 else "ok")
        text = Text("quota ")
        text.append(bar(fraction), style=style)
        text.append(f"  {present.size(used)} of {quota / 1e9:g} GB ({fraction:.0%})")
        if fraction > 1:
            text.append("  over quota", style=tone(self.app, "bad"))
        if pulling:
            text.append(f"  + {present.size(pulling)} being pulled", style=tone(self.app, "quiet"))
        if last_known:
            text.append("  (last known)", style=tone(self.app, "quiet"))
        self.show(text)
