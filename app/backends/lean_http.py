"""A lean HTTP/1.1 keep-alive client over asyncio streams, for plain-http Ollama servers (what a cluster's server jobs
are). Standard library only.

Why not httpx: httpcore's connection pool (anyio, h11, per-request pool bookkeeping) costs more CPU per request than
the whole rest of a run — measured 1.4 ms of 1.6 ms per note at 40 notes/s — and grows with the requests in flight
(encode/httpcore#1035). Why not even import it on a run's path: the `ollama` package and httpx take ~0.25 s to import
(pydantic types, an SSL context for a module-level client), half of a short run. Ollama speaks plain HTTP/1.1 with
Content-Length or chunked bodies; this does just that. https and proxied hosts go through httpx instead.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

_MAX_HEADER_LINES = 200


class HTTPFailure(Exception):
    """A request that got no complete answer. `down`: the server could not be reached at all."""

    down = False


class ConnectFailed(HTTPFailure):
    down = True


class ConnectTimedOut(HTTPFailure):
    down = True


class ReadTimedOut(HTTPFailure):
    pass


class Dropped(HTTPFailure):
    """The connection closed (or spoke garbage) before the answer was complete."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Timeouts:
    connect: float | None = 10.0
    read: float | None = None
    write: float | None = None


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a broken socket
            pass


class _Stale(Exception):
    """A kept-alive connection the server had already closed: retry once on a fresh one."""


class LeanPool:
    """Keep-alive connections per (host, port); one request per connection at a time."""

    def __init__(self, max_idle: int = 64):
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_idle = max_idle

    async def request(self, method: str, host: str, port: int, target: str, headers: list[tuple[str, str]],
                      body: bytes, timeouts: Timeouts) -> Response:
        key = (host, port)
        head = _head(method, target, headers, body)
        idle = self._idle.setdefault(key, [])
        while idle:
            conn = idle.pop()
            try:
                return await self._exchange(conn, key, head, body, method, timeouts, reused=True)
            except _Stale:
                continue
        conn = await self._connect(key, timeouts.connect)
        try:
            return await self._exchange(conn, key, head, body, method, timeouts, reused=False)
        except _Stale as exc:  # a fresh connection closed before answering: the server dropped us
            raise Dropped("Server disconnected without sending a response.") from exc

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*key), timeout)
        except TimeoutError:
            raise ConnectTimedOut(f"no connection to {key[0]}:{key[1]} within {timeout} s") from None
        except OSError as exc:
            raise ConnectFailed(str(exc) or exc.__class__.__name__) from exc
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, key: tuple[str, int], head: bytes, body: bytes, method: str,
                        timeouts: Timeouts, reused: bool) -> Response:
        ok = False
        try:
            conn.writer.writelines((head, body))  # one send for both
            if conn.writer.transport.get_write_buffer_size():  # only wait when the kernel did not take it all
                async with asyncio.timeout(timeouts.write):
                    await conn.writer.drain()
            async with asyncio.timeout(timeouts.read):  # a timer handle, not a task per request
                response, keep = await _read_response(conn.reader, method)
            ok = True
        except TimeoutError:
            raise ReadTimedOut("no answer within the read timeout") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            if reused:
                raise _Stale() from exc
            raise Dropped(str(exc) or exc.__class__.__name__) from None
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _Stale() from exc
            raise Dropped("peer closed connection without sending complete message body") from None
        finally:
            if not ok:
                conn.close()
        idle = self._idle.setdefault(key, [])
        if keep and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _head(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    has_length = False
    for name, value in headers:
        lname = name.lower()
        if lname == "content-length":
            has_length = True
        if lname == "transfer-encoding":
            continue  # the body is already read: always send it with a length
        lines.append(f"{name}: {value}")
    if not has_length and (body or method in ("POST", "PUT", "PATCH", "DELETE")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[Response, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise asyncio.IncompleteReadError(b"", None)
    try:
        version, code, *_ = status_line.decode("latin-1").split(" ", 2)
        status = int(code)
    except ValueError:
        raise Dropped(f"bad status line {status_line[:60]!r}") from None
    headers: list[tuple[bytes, bytes]] = []
    length = None
    chunked = False
    close = version == "HTTP/1.0"
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise asyncio.IncompleteReadError(b"x", None)
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        lname = name.lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
            continue  # the body is handed on de-chunked
        elif lname == b"connection":
            close = value.lower() == b"close"
        headers.append((name, value))
    if chunked:
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        content = b"".join(parts)
    elif length is not None:
        content = await reader.readexactly(length)
    elif status in (204, 304) or method == "HEAD":
        content = b""
    else:
        content = await reader.read()
        close = True
    return Response(status, headers, content), not close


def behind_proxy(host: str) -> bool:
    """httpx honours http_proxy/no_proxy; the lean client does not, so a proxied host keeps httpx's transport."""
    if not any(os.environ.get(v) for v in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")):
        return False  # the common case, without importing urllib.request
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    return "http" in getproxies() and not proxy_bypass(urlsplit(host).hostname or "")


def lean_ok(host: str) -> bool:
    """Plain http and no proxy in the way: the lean client can talk to it."""
    return host.startswith("http://") and not behind_proxy(host)
