"""How a run talks to one server (Ollama's API or an OpenAI-compatible one): JSON in, a `Response` out, failures as the
`lean_http.HTTPFailure` kinds. Plain-http hosts go through the lean client; https and proxied hosts through httpx,
imported only then. Also what both backends read from answers the same way: JSON bodies, integers, one-line
failures, and a check of every host at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from app.backends.lean_http import (
    ConnectFailed,
    ConnectTimedOut,
    Dropped,
    HTTPFailure,
    LeanPool,
    ReadTimedOut,
    Response,
    Timeouts,
    lean_ok,
)

CONNECT_TIMEOUT_S = 10.0
JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"), ("User-Agent", "notes-tui"))


class Wire(Protocol):
    async def call(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Response: ...

    async def aclose(self) -> None: ...


class LeanWire:
    def __init__(self, url: str, timeout_s: float, headers: Sequence[tuple[str, str]] = ()):
        parts = urlsplit(url)
        self.host, self.port, self.timeout_s = parts.hostname or "", parts.port or 80, timeout_s
        self.headers = [("Host", parts.netloc), *JSON_HEADERS, *headers]
        self.pool = LeanPool()

    async def call(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Response:
        body = b"" if payload is None else json.dumps(payload).encode()
        t = self.timeout_s if timeout is None else timeout
        return await self.pool.request(method, self.host, self.port, path, self.headers, body,
                                       Timeouts(connect=min(CONNECT_TIMEOUT_S, t), read=t, write=t))

    async def aclose(self) -> None:
        await self.pool.aclose()


class HttpxWire:
    """TLS, proxies (http_proxy/no_proxy honoured): what the lean client does not speak."""

    def __init__(self, url: str, timeout_s: float, headers: Sequence[tuple[str, str]] = ()):
        import httpx

        self.httpx = httpx
        self.timeout_s = timeout_s
        self.client = httpx.AsyncClient(base_url=url, headers=[*JSON_HEADERS, *headers],
                                        timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))

    async def call(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Response:
        httpx = self.httpx
        body = None if payload is None else json.dumps(payload).encode()
        t = httpx.Timeout(self.timeout_s if timeout is None else timeout, connect=CONNECT_TIMEOUT_S)
        try:
            r = await self.client.request(method, path, content=body, timeout=t)
        except httpx.ConnectTimeout as exc:
            raise ConnectTimedOut(str(exc)) from None
        except httpx.ConnectError as exc:
            raise ConnectFailed(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise ReadTimedOut(str(exc)) from None
        except httpx.TransportError as exc:
            raise Dropped(str(exc) or exc.__class__.__name__) from None
        return Response(r.status_code, list(r.headers.raw), r.content)

    async def aclose(self) -> None:
        await self.client.aclose()


def open_wire(url: str, timeout_s: float, headers: Sequence[tuple[str, str]] = ()) -> Wire:
    return LeanWire(url, timeout_s, headers) if lean_ok(url) else HttpxWire(url, timeout_s, headers)


def failure_text(exc: HTTPFailure) -> str:
    text = str(exc)
    if isinstance(exc, ConnectFailed) and ("refused" in text.lower() or "errno 111" in text.lower()):
        return "connection refused"
    return (text.strip().splitlines() or [exc.__class__.__name__])[0][:200]


def error_text(resp: Response) -> str:
    """Ollama's `{"error": "..."}`, or the start of whatever else the server said."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"][:200]
    return resp.body[:200].decode("utf-8", "replace").strip() or f"HTTP {resp.status}"


def json_doc(resp: Response) -> dict[str, Any]:
    """The body as a JSON object, or {} for anything else."""
    try:
        doc = resp.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def short_failure(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, HTTPFailure):
        return failure_text(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]


async def probe_each(hosts: Sequence[str], probe: Callable[[str], Awaitable[dict[str, Any]]], timeout_s: float,
                     user_error: type[Exception]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every host at once: (what each host that answered said, "host (why)" for each that did not). A user error
    (model missing, key refused) from any host is raised: it is the user's to fix, not a host being down."""
    results = await asyncio.gather(*(probe(h) for h in hosts), return_exceptions=True)
    up: dict[str, dict[str, Any]] = {}
    problems = []
    for host, res in zip(hosts, results):
        if isinstance(res, user_error):
            raise res
        if isinstance(res, BaseException):
            problems.append(f"{host} ({short_failure(res, timeout_s)})")
        else:
            up[host] = res
    return up, problems


def chat_messages(system: str, user: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


async def post_for_answer(wire: Wire, path: str, payload: Any, timeout_s: float) -> Response:
    """One request for an answer; a failure in transport is `Transient` (down when nothing could be reached)."""
    from app.backends.base import Transient

    try:
        return await wire.call("POST", path, payload)
    except (ConnectFailed, ConnectTimedOut) as exc:
        raise Transient(failure_text(exc), down=True) from None
    except ReadTimedOut:
        raise Transient(f"no answer within timeout_s = {timeout_s:g}") from None
    except HTTPFailure as exc:
        raise Transient(failure_text(exc)) from None
