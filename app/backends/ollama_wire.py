"""How a run talks to one Ollama server: JSON in, a `Response` out, failures as the `lean_http.HTTPFailure` kinds.
Plain-http hosts go through the lean client; https and proxied hosts through httpx, imported only then."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
