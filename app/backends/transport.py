"""A lean HTTP/1.1 keep-alive transport for httpx, used under the official `ollama` AsyncClient for plain-http hosts.

Why: httpcore's connection pool (anyio, h11, per-request pool bookkeeping) costs more CPU per request than the whole
rest of a run — measured 1.4 ms of 1.6 ms per note at 40 notes/s — and grows with the requests in flight
(encode/httpcore#1035). Ollama speaks plain HTTP/1.1 with Content-Length or chunked bodies; this transport does just
that over asyncio streams and raises the same httpx exceptions, so the client and our retry rules see no difference.
https hosts keep httpx's own transport.
"""

from __future__ import annotations

import asyncio

import httpx

_MAX_HEADER_LINES = 200


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


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle: int = 64):
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_idle = max_idle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = self._head(request, body)
        idle = self._idle.setdefault(key, [])
        while idle:
            conn = idle.pop()
            try:
                return await self._exchange(conn, key, head, body, timeouts, request, reused=True)
            except _Stale:
                continue
        conn = await self._connect(key, timeouts.get("connect"))
        try:
            return await self._exchange(conn, key, head, body, timeouts, request, reused=False)
        except _Stale as exc:  # a fresh connection closed before answering: the server dropped us
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request) from exc

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        target = request.url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1"]
        has_length = False
        for name, value in request.headers.raw:
            lname = name.lower()
            if lname == b"content-length":
                has_length = True
            if lname == b"transfer-encoding":
                continue  # the body is already read: always send it with a length
            lines.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*key), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {key[0]}:{key[1]} within {timeout} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or exc.__class__.__name__) from None
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, key: tuple[str, int], head: bytes, body: bytes, timeouts: dict,
                        request: httpx.Request, reused: bool) -> httpx.Response:
        ok = False
        try:
            conn.writer.writelines((head, body))  # one send for both
            if conn.writer.transport.get_write_buffer_size():  # only wait when the kernel did not take it all
                async with asyncio.timeout(timeouts.get("write")):
                    await conn.writer.drain()
            async with asyncio.timeout(timeouts.get("read")):  # a timer handle, not a task per request
                response, keep = await self._read_response(conn.reader, request)
            ok = True
        except TimeoutError:
            raise httpx.ReadTimeout("no answer within the read timeout", request=request) from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            if reused:
                raise _Stale() from exc
            raise httpx.ReadError(str(exc), request=request) from None
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _Stale() from exc
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                            request=request) from None
        finally:
            if not ok:
                conn.close()
        idle = self._idle.setdefault(key, [])
        if keep and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()
        return response

    async def _read_response(self, reader: asyncio.StreamReader,
                             request: httpx.Request) -> tuple[httpx.Response, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        try:
            version, code, *_ = status_line.decode("latin-1").split(" ", 2)
            status = int(code)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad status line {status_line[:60]!r}", request=request) from None
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
                continue  # httpx must not try to de-chunk what we already did
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
        elif status in (204, 304) or request.method == "HEAD":
            content = b""
        else:
            content = await reader.read()
            close = True
        return httpx.Response(status, headers=headers, content=content, request=request), not close

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def behind_proxy(host: str) -> bool:
    """httpx honours http_proxy/no_proxy; the lean transport does not, so a proxied host keeps httpx's transport."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    return "http" in getproxies() and not proxy_bypass(urlsplit(host).hostname or "")


def client_transport(host: str) -> LeanTransport | None:
    """The transport for a client of `host` that reads whole bodies: lean for plain http, httpx's own otherwise."""
    return LeanTransport() if host.startswith("http://") and not behind_proxy(host) else None
