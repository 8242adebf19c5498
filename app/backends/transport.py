"""The lean HTTP/1.1 client (`lean_http`) as an httpx transport, for the official `ollama` client where the app uses
it (model lists, details, deletes) and for plain-http health probes: same speed, the same httpx exceptions."""

from __future__ import annotations

import httpx

from app.backends.lean_http import ConnectFailed, ConnectTimedOut, Dropped, LeanPool, ReadTimedOut, Timeouts, lean_ok


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle: int = 64):
        self.pool = LeanPool(max_idle)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        t = request.extensions.get("timeout", {})
        body = await request.aread()
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw]
        try:
            resp = await self.pool.request(request.method, url.host, url.port or 80, url.raw_path.decode("ascii"),
                                           headers, body, Timeouts(t.get("connect"), t.get("read"), t.get("write")))
        except ConnectTimedOut as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from None
        except ConnectFailed as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc.__cause__
        except ReadTimedOut as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from None
        except Dropped as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        return httpx.Response(resp.status, headers=resp.headers, content=resp.body, request=request)

    async def aclose(self) -> None:
        await self.pool.aclose()


def client_transport(host: str) -> LeanTransport | None:
    """The transport for a client of `host` that reads whole bodies: lean for plain http, httpx's own otherwise."""
    return LeanTransport() if lean_ok(host) else None
