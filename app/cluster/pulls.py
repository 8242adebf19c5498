"""Pulls through Ollama's streaming `/api/pull`: queued, one at a time per server (a pull saturates the server's
disk and network; a second one at once only slows both), cancellable, flagged as soon as they would pass the quota.

A pull's progress is seen only on the connection that started it (Ollama has no status endpoint, ollama#1246), and
Ollama stops a pull when that connection closes, so a pull belongs to the process that drives it: `models pull` on
the command line, or for the TUI a process of its own that outlives the app (app.cluster.detached_pull).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import ollama

from app.backends.ollama import full_name
from app.cluster.models import ServerError, explain, list_models
from app.cluster.tokens import auth_headers

PULL_READ_TIMEOUT_S = 120.0  # Ollama sends progress many times a second while it downloads
RATE_WINDOW_S = 5.0
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(:[A-Za-z0-9][A-Za-z0-9._-]*)?$")

QUEUED, PULLING, DONE, FAILED, CANCELLED = "queued", "pulling", "done", "failed", "cancelled"
STOPPED = "stopped"  # a detached pull whose process is gone without saying done, failed or cancelled (killed)


def check_model_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or not MODEL_NAME.match(name):
        raise ServerError(f"{name!r} is not a model name — write it as Ollama does, e.g. llama3.1:8b or qwen2.5:7b")
    return name


@dataclass
class Pull:
    id: int | str  # a PullQueue's count, or a detached pull's id (the name of its progress file)
    url: str
    name: str
    state: str = QUEUED
    phase: str = ""  # Ollama's last status line: "pulling manifest", "pulling 6a0746a1ec1a", "verifying sha256 digest"
    done: int = 0
    total: int = 0
    rate: float | None = None  # bytes/s over the last few seconds
    error: str | None = None
    wrong_name: bool = False  # the registry has no such model: the user's mistake, not the server's
    over_quota: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stopped_at: float | None = None  # STOPPED: when its process was last heard of (time.time())
    job_id: str | None = None  # a pull job's (`models pull --profile`): it pulls into models_dir, not through a server
    models_dir: str | None = None
    job_cluster: str | None = None  # the job's cluster (-M), for scancel
    _layers: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    _samples: collections.deque = field(default_factory=collections.deque, repr=False)

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, PULLING)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    @property
    def eta_s(self) -> float | None:
        if not self.rate or not self.total:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def _progress(self, part: ollama.ProgressResponse, now: float) -> None:
        self.phase = part.status or self.phase
        if part.digest and part.total:
            self._layers[part.digest] = (part.total, part.completed or 0)
            self.total = sum(t for t, _ in self._layers.values())
            self.done = sum(min(c, t) for t, c in self._layers.values())
            self._samples.append((now, self.done))
            while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
                self._samples.popleft()
            (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
            if t1 - t0 >= 0.2:
                self.rate = (d1 - d0) / (t1 - t0)


class PullQueue:
    """Pulls for any number of servers; `on_update(pull)` is called on the event loop at every change."""

    def __init__(self, on_update: Callable[[Pull], None], quota_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.on_update = on_update
        self.quota_bytes = quota_bytes
        self.clock = clock
        self.pulls: list[Pull] = []
        self._ids = itertools.count(1)
        self._waiting: dict[str, collections.deque[Pull]] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self._current: dict[str, tuple[Pull, asyncio.Task]] = {}

    def add(self, url: str, name: str) -> Pull:
        name = check_model_name(name)
        for other in self.pulls:
            if other.active and other.url == url and full_name(other.name) == full_name(name):
                raise ServerError(f"{name} is already {other.state} on {url}")
        pull = Pull(id=next(self._ids), url=url, name=name)
        self.pulls.append(pull)
        self._waiting.setdefault(url, collections.deque()).append(pull)
        if url not in self._workers:
            self._workers[url] = asyncio.create_task(self._serve(url), name=f"pulls {url}")
        self.on_update(pull)
        return pull

    def active(self) -> list[Pull]:
        return [p for p in self.pulls if p.active]

    def cancel(self, pull: Pull) -> bool:
        if pull.state == QUEUED:
            self._waiting[pull.url].remove(pull)
            self._finish(pull, CANCELLED)
            return True
        current = self._current.get(pull.url)
        if current and current[0] is pull:
            current[1].cancel()
            return True
        return False

    def cancel_all(self) -> None:
        for pull in self.active():
            self.cancel(pull)

    async def wait(self) -> None:
        """Until every queued pull has ended (for the command line)."""
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _serve(self, url: str) -> None:
        try:
            queue = self._waiting[url]
            while queue:
                pull = queue.popleft()
                task = asyncio.create_task(self._pull(pull))
                self._current[url] = (pull, task)
                try:
                    await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # we ourselves are being cancelled
                    self._finish(pull, CANCELLED)
                finally:
                    self._current.pop(url, None)
        finally:
            self._workers.pop(url, None)

    async def _pull(self, pull: Pull) -> None:
        pull.state, pull.started_at = PULLING, self.clock()
        pull.phase = "starting"
        self.on_update(pull)
        used = await self._usage(pull)
        client = ollama.AsyncClient(host=pull.url, timeout=httpx.Timeout(PULL_READ_TIMEOUT_S, connect=5.0),
                                    headers=auth_headers(pull.url))
        try:
            async for part in await client.pull(pull.name, stream=True):
                pull._progress(part, self.clock())
                if used is not None and pull.over_quota is None:
                    self._check_quota(pull, used)
                self.on_update(pull)
            self._finish(pull, DONE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is one line on the pull
            pull.error, pull.wrong_name = _pull_error(exc, pull)
            self._finish(pull, FAILED)
        finally:
            await client.close()

    async def _usage(self, pull: Pull) -> int | None:
        """Bytes the server's models take now, not counting an older copy of the model being pulled."""
        if self.quota_bytes is None:
            return None
        try:
            models = await list_models(pull.url)
        except ServerError:
            return None  # the pull itself will say what is wrong with the server
        return sum(m.size for m in models if m.name != full_name(pull.name))

    def _check_quota(self, pull: Pull, used: int) -> None:
        assert self.quota_bytes is not None
        if pull.total and used + pull.total > self.quota_bytes:
            pull.over_quota = (f"{(used + pull.total) / 1e9:.1f} GB with this model, over the "
                               f"{self.quota_bytes / 1e9:g} GB quota")

    def _finish(self, pull: Pull, state: str) -> None:
        pull.state, pull.finished_at = state, self.clock()
        pull.rate = None
        self.on_update(pull)


def _pull_error(exc: BaseException, pull: Pull) -> tuple[str, bool]:
    """The one line for a failed pull, and whether the name was wrong."""
    if isinstance(exc, ollama.ResponseError) and exc.status_code == -1:
        text = str(exc.error)
        if "file does not exist" in text or ("manifest" in text and "not found" in text):
            return f"{pull.name!r} is not in the registry ({text}) — check the name at ollama.com/library", True
        return f"{pull.url} stopped the pull: {text[:160]}", False
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return (f"{pull.url} closed the connection during the pull — is the server job still running? "
                "(squeue --me); pull again to resume"), False
    return str(explain(exc, pull.url, pull.name)), False
