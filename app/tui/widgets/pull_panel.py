"""The pulls of one server: the running one with a bar, bytes, MB/s and ETA; the queue; what ended lately (in this
session, or while the app was closed: pulls outlive it); a pull whose process went without a word, as stopped."""

from __future__ import annotations

import time

from rich.text import Text

from app.cluster import present
from app.cluster.pulls import CANCELLED, DONE, FAILED, PULLING, QUEUED, STOPPED, Pull
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
        ended = [p for p in pulls if p.state in (DONE, FAILED, CANCELLED, STOPPED)][-SHOW_ENDED:]
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
            style = tone(self.app, {DONE: "ok", FAILED: "bad", CANCELLED: "warn", STOPPED: "bad"}[pull.state])
            line = stopped_line(pull) if pull.state == STOPPED else present.pull_line(pull)
            text.append("      " + line + "\n", style=style)
        text.rstrip()
        self.show(text)


def stopped_line(pull: Pull) -> str:
    """`llama3.1:8b  stopped at 14:03:05 CET at 45% (its process ended without a word) — pull again to resume`"""
    when = "-"
    if pull.stopped_at:
        local = time.localtime(pull.stopped_at)
        same_day = local[:3] == time.localtime()[:3]
        when = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", local) + f" {present.local_zone()}"
    done = f" at {pull.fraction:.0%}" if pull.fraction is not None else ""
    return f"{pull.name}  stopped at {when}{done} (its process ended without a word) — pull again to resume"
