"""Is a server up? `/api/version` (with its round trip) and `/api/ps` (the models loaded now) for Ollama; an
OpenAI-compatible server (vLLM, SGLang, llama-server) is known by its `/v1/models` (the models it serves) when
`/api/version` is not there. Each with a short timeout, at most one request in flight per server: a dead or hung
server costs a timeout, never a frozen screen."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from app.backends.transport import client_transport
from app.cluster.tokens import auth_headers

PROBE_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 2.0
SLOW_MS = 500.0  # /api/version answers in milliseconds; half a second means the server or the network struggles


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size_vram: int
    expires_at: datetime | None


@dataclass(frozen=True)
class Health:
    state: str  # unknown (not asked yet) | up | slow | down
    reason: str = ""  # why it is down (or slow)
    version: str | None = None
    rtt_ms: float | None = None
    loaded: tuple[LoadedModel, ...] = ()
    checked_at: float = field(default=0.0, compare=False)
    kind: str | None = None  # ollama | openai-compatible, once it answered

    @property
    def kind_text(self) -> str:
        return {"ollama": "ollama", "openai-compatible": "openai"}.get(self.kind or "", "-")

    @property
    def answers(self) -> bool:
        return self.state in ("up", "slow")


UNKNOWN = Health(state="unknown", reason="not asked yet")


def down_reason(exc: BaseException, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """What a user can act on, in a few words."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection in {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in {timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__cause__ or exc.__context__
        text = str(exc).lower()
        if isinstance(cause, ConnectionRefusedError) or "refused" in text or f"errno {errno.ECONNREFUSED}" in text:
            return "refused"
        if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
            return "unknown host"
        return f"unreachable ({str(exc)[:60] or exc.__class__.__name__})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "dropped the connection"
    if isinstance(exc, httpx.TransportError):
        return f"transport error ({exc.__class__.__name__})"
    return f"{exc.__class__.__name__}: {str(exc)[:60]}"


class Prober:
    """Asks servers how they are; one keep-alive client per server."""

    def __init__(self, timeout_s: float = PROBE_TIMEOUT_S, clock: Callable[[], float] = time.perf_counter):
        self.timeout_s = timeout_s
        self.clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._kinds: dict[str, str] = {}  # a server's kind, once seen: later checks ask it the right way at once
        self._versions: dict[str, str | None] = {}

    def _client(self, url: str) -> httpx.AsyncClient:
        client = self._clients.get(url)
        if client is None:
            timeout = httpx.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s))
            client = httpx.AsyncClient(base_url=url, timeout=timeout, transport=client_transport(url),
                                       headers=auth_headers(url))  # a server job's token, if it is one
            self._clients[url] = client
        return client

    async def probe(self, url: str) -> Health:
        client = self._client(url)
        try:
            if self._kinds.get(url) == "openai-compatible":
                return await self._probe_openai(client, url)
            t0 = self.clock()
            resp = await client.get("/api/version")
            rtt_ms = (self.clock() - t0) * 1000
            version = _json(resp).get("version") if resp.status_code == 200 else None
            if not isinstance(version, str):
                openai = await self._probe_openai(client, url)
                if openai.answers or resp.status_code == 200:
                    return openai
                return Health("down", reason=f"HTTP {resp.status_code} on /api/version", checked_at=time.monotonic())
            self._kinds[url] = "ollama"
            ps = await client.get("/api/ps")
            loaded = _loaded(_json(ps)) if ps.status_code == 200 else ()
        except httpx.HTTPError as exc:
            await self._forget(url)  # a broken connection must not be reused by the next probe
            return Health("down", reason=down_reason(exc, self.timeout_s), checked_at=time.monotonic(),
                          kind=self._kinds.get(url))
        return _answered(version, rtt_ms, loaded, "ollama")

    async def _probe_openai(self, client: httpx.AsyncClient, url: str) -> Health:
        """An OpenAI-compatible server: `/v1/models` is its health and its round trip; the version where it tells
        (vLLM's `/version`, llama-server's `/props`), asked once."""
        t0 = self.clock()
        resp = await client.get("/v1/models")
        rtt_ms = (self.clock() - t0) * 1000
        data = _json(resp).get("data") if resp.status_code == 200 else None
        if not isinstance(data, list):
            if resp.status_code == 401:
                return Health("down", reason="wants an API key (HTTP 401)", checked_at=time.monotonic())
            return Health("down", reason="not an Ollama or OpenAI-compatible server", checked_at=time.monotonic())
        first_time = self._kinds.get(url) != "openai-compatible"
        self._kinds[url] = "openai-compatible"
        if first_time or url not in self._versions:
            self._versions[url] = await self._openai_version(client)
        served = tuple(LoadedModel(name=str(m.get("id")), size_vram=0, expires_at=None)
                       for m in data if isinstance(m, dict) and m.get("id"))
        return _answered(self._versions.get(url), rtt_ms, served, "openai-compatible")

    @staticmethod
    async def _openai_version(client: httpx.AsyncClient) -> str | None:
        for path, key in (("/version", "version"), ("/props", "build_info")):
            try:
                resp = await client.get(path)
            except httpx.HTTPError:
                return None
            value = _json(resp).get(key) if resp.status_code == 200 else None
            if isinstance(value, str) and value:
                return value if key == "version" else f"llama.cpp {value}"
        return None

    async def _forget(self, url: str) -> None:
        client = self._clients.pop(url, None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        for url in list(self._clients):
            await self._forget(url)


def _answered(version: str | None, rtt_ms: float, loaded: tuple[LoadedModel, ...], kind: str) -> Health:
    slow = rtt_ms > SLOW_MS
    return Health("slow" if slow else "up", reason=f"answers in {rtt_ms:.0f} ms" if slow else "", version=version,
                  rtt_ms=rtt_ms, loaded=loaded, checked_at=time.monotonic(), kind=kind)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _loaded(data: dict[str, Any]) -> tuple[LoadedModel, ...]:
    out = []
    for m in data.get("models") or []:
        if not isinstance(m, dict):
            continue
        expires = m.get("expires_at")
        try:
            when = datetime.fromisoformat(expires.replace("Z", "+00:00")) if isinstance(expires, str) else None
        except ValueError:
            when = None
        size = m.get("size_vram", m.get("size", 0))
        out.append(LoadedModel(name=str(m.get("name") or m.get("model") or "?"),
                               size_vram=size if isinstance(size, int) else 0, expires_at=when))
    return tuple(out)


async def probe_all(urls: Iterable[str], prober: Prober | None = None) -> dict[str, Health]:
    """Every server at once (for `server list`): the slowest costs one timeout, not the sum."""
    own = prober is None
    prober = prober or Prober()
    urls = list(urls)
    try:
        results = await asyncio.gather(*(prober.probe(u) for u in urls))
    finally:
        if own:
            await prober.aclose()
    return dict(zip(urls, results))


class HealthMonitor:
    """Keeps the latest Health of each server; `poll` starts a probe for each server that has none in flight."""

    def __init__(self, on_change: Callable[[str, Health], None], prober: Prober | None = None):
        self.on_change = on_change
        self.prober = prober or Prober()
        self.health: dict[str, Health] = {}
        self._inflight: dict[str, asyncio.Task] = {}

    def get(self, url: str) -> Health:
        return self.health.get(url, UNKNOWN)

    def poll(self, urls: Iterable[str]) -> None:
        for url in urls:
            if url not in self._inflight:
                self._inflight[url] = asyncio.create_task(self._probe(url), name=f"probe {url}")

    def in_flight(self) -> int:
        return len(self._inflight)

    async def _probe(self, url: str) -> None:
        try:
            health = await self.prober.probe(url)
        finally:
            self._inflight.pop(url, None)
        old = self.health.get(url)
        self.health[url] = health
        if old != health:
            self.on_change(url, health)

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.prober.aclose()
