"""The pulls of one server: the running one with a bar, bytes, MB/s and ETA; the queue; what ended this session."""

from __future__ import annotations

from rich.text import Text

from app.cluster import present
from app.cluster.pulls import CANCELLED, DONE, FAILED, PULLING, QUEUED, Pull
from app.tui.tones import tone
from app.tui.widgets.quota_bar import bar
from app.tui.widgets.shown import Shown

SHOW_ENDED = 3


class PullPanel(Shown):
    DEFAULT_CSS = """
    PullPanel { height: auto; max-height: 7; padding: 0 1; }
    """

    def show_pulls(self, pulls: list[Pull]) -> None:
        running = [p for p in pulls if p.state == PULLING]
        queued = [p for p in pulls if p.state == QUEUED]
        ended = [p for p in pulls if p.state in (DONE, FAILED, CANCELLED)][-SHOW_ENDED:]
        if not (running or queued or ended):
            self.display = False
            return
        self.display = True
        text = Text()
        for pull in running:
            text.append("pull  ", style="bold")
            if pull.fraction is not None:
                text.append(bar(pull.fraction, 16) + " ", style=tone(self.app, "accent"))
            text.append(present.pull_line(pull))
            if pull.over_quota:
                text.append(f"\n      over quota: {pull.over_quota}", style=tone(self.app, "bad"))
            text.append("\n")
        if queued:
            text.append("queue ", style="bold")
            text.append(", ".join(p.name for p in queued) + "\n", style=tone(self.app, "quiet"))
        for pull in reversed(ended):
            style = tone(self.app, {DONE: "ok", FAILED: "bad", CANCELLED: "warn"}[pull.state])
            text.append("      " + present.pull_line(pull) + "\n", style=style)
        text.rstrip()
        self.show(text)
