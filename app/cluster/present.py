"""How servers, models and pulls read for people: the same words in the TUI and in the `server`/`models` commands."""

from __future__ import annotations

import statistics
from collections import deque
from datetime import datetime

from app.cluster.health import Health, LoadedModel
from app.cluster.pulls import CANCELLED, DONE, FAILED, QUEUED, Pull
from ledger.clock import format_duration


def size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


CLOUD_NOTE = "runs on ollama.com: a run sends it no note unless the experiment sets allow_remote = true"


def model_size(model) -> str:
    """A model's size as a list shows it: a cloud model's few hundred bytes are a pointer, not a model."""
    return "cloud" if getattr(model, "cloud", False) else "-" if getattr(model, "served", False) else size(model.size)


def rtt(health: Health) -> str:
    return "-" if health.rtt_ms is None else f"{health.rtt_ms:.0f} ms"


RTT_WINDOW = 5  # checks: 25 s at the 5 s health check
RTT_NEWS_MS, RTT_NEWS_SHARE = 5.0, 0.5  # 3 ms against 7 ms is noise; 40 ms against 200 ms is news


class SteadyRtt:
    """The round trip as a screen shows it: the median of the last few checks, changed only when it moves by more
    than 5 ms and by half. A single check jitters by milliseconds (it is timed inside an event loop that also draws
    the screen); jitter is not news and must redraw nothing."""

    def __init__(self) -> None:
        self._recent: dict[str, deque[tuple[float, float]]] = {}
        self._shown: dict[str, float] = {}

    def ms(self, url: str, health: Health) -> float | None:
        if health.rtt_ms is None:
            self._shown.pop(url, None)
            self._recent.pop(url, None)  # a server back from down starts afresh
            return None
        recent = self._recent.setdefault(url, deque(maxlen=RTT_WINDOW))
        if not recent or recent[-1][0] != health.checked_at:  # one sample per check, however often it is drawn
            recent.append((health.checked_at, health.rtt_ms))
        median = statistics.median(ms for _, ms in recent)
        shown = self._shown.get(url)
        if shown is None or abs(median - shown) >= max(RTT_NEWS_MS, RTT_NEWS_SHARE * shown):
            self._shown[url] = shown = median
        return shown

    def text(self, url: str, health: Health) -> str:
        ms = self.ms(url, health)
        return "-" if ms is None else f"{ms:.0f} ms"


def state(health: Health) -> str:
    if health.state == "unknown":
        return "…"
    if health.state == "down":
        return f"down: {health.reason}"
    return health.state


def advice(health: Health) -> str:
    """What to do about a server that is down, in one sentence."""
    reason = health.reason
    if reason == "refused":
        return "nothing listens at that address: is the server job running? (squeue --me)"
    if reason.startswith(("no answer", "no connection")):
        return "the server or its node does not respond: is the job still running, is the node up?"
    if reason == "unknown host":
        return "no such host name: check the spelling, or use the node's full name"
    if reason == "not an Ollama or OpenAI-compatible server":
        return "something else listens at that port: check the port (squeue --me shows the job's)"
    if reason.startswith("wants an API key"):
        return "an OpenAI-compatible server with its own key: name it in the experiment (api_key_env)"
    return "check the server job's log"


def until(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return ""
    local = when.astimezone()
    now = now or datetime.now().astimezone()
    if local.year > now.year + 100:
        return "for good"  # keep_alive = -1: Ollama says year 2318
    return f"until {local:%H:%M}" if local.date() == now.date() else f"until {local:%Y-%m-%d %H:%M}"


def loaded(model: LoadedModel, now: datetime | None = None) -> str:
    """`llama3:latest 4.7 GB until 14:05`; an OpenAI-compatible server's served model is its name alone."""
    vram = size(model.size_vram) if model.size_vram else ""
    return " ".join(p for p in (model.name, vram, until(model.expires_at, now)) if p)


def loaded_summary(health: Health) -> str:
    if not health.loaded:
        return "-" if health.answers else ""
    return ", ".join(m.name for m in health.loaded)


def modified(when: datetime | None) -> str:
    return f"{when.astimezone():%Y-%m-%d}" if when else "-"


def _finishing(phase: str) -> str:
    if phase.startswith("writing"):
        return "writing the manifest"
    return "verifying" if phase.startswith("verifying") or phase.startswith("pulling") or not phase else phase


def pull_line(pull: Pull) -> str:
    """`llama3.1:8b  2.1 GB / 4.7 GB  45%  38.2 MB/s  ETA 1m05s` and the like."""
    if pull.state == QUEUED:
        return f"{pull.name}  queued"
    if pull.state == DONE:
        took = format_duration(pull.finished_at - pull.started_at) if pull.started_at and pull.finished_at else "-"
        return f"{pull.name}  pulled, {size(pull.total)} in {took}"
    if pull.state == FAILED:
        return f"{pull.name}  failed: {pull.error}"
    if pull.state == CANCELLED:
        return f"{pull.name}  cancelled" + (f" at {pull.fraction:.0%}" if pull.fraction is not None else "")
    if not pull.total:
        return f"{pull.name}  {pull.phase}"
    if pull.done >= pull.total or not pull.phase.startswith("pulling"):
        # every byte is in: Ollama checks the digest and writes the manifest, which takes seconds on a big model and
        # showed as "0.0 MB/s ETA 0s" as if it had stalled
        return f"{pull.name}  {size(pull.total)}  100%  {_finishing(pull.phase)}"
    rate = f"{pull.rate / 1e6:.1f} MB/s" if pull.rate else "- MB/s"
    return (f"{pull.name}  {size(pull.done)} / {size(pull.total)}  {pull.fraction or 0:.0%}  {rate}  "
            f"ETA {format_duration(pull.eta_s)}")


def local_time(value: str | datetime | None, seconds: bool = False) -> str:
    """A ledger time (ISO UTC, `…Z`) as local time, `2026-12-06 14:03`: the TUI's one convention; the zone is said
    once where the times are (a column header, a line), see `local_zone`."""
    if not value:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def local_zone() -> str:
    return datetime.now().astimezone().tzname() or "local"
