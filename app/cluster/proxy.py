"""The authenticating proxy in front of an Ollama server job: Ollama listens on 127.0.0.1 only, the proxy on the
node's public port, and a connection whose first request lacks `Authorization: Bearer <the job's token>` gets 401
and is closed (and counted).

After that first request the connection is spliced byte for byte in both directions, so streamed answers and pull
progress pass through as Ollama sends them, and a kept-alive connection costs no parsing per request. The token
is checked once per connection: a TCP connection is one client's, and every later request on it comes from the
peer that proved it holds the token. Protocols rather than streams: one callback per chunk, no task per request.

With an idle tracker (app/cluster/idle.py) the proxy also follows where each request and each answer begins and
ends in the spliced bytes (app/cluster/framing.py: heads read, bodies counted), so it knows what is in flight and
when the last request ended; `GET /_notes-tui/idle` with the token answers that as JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
from collections import deque

from app.cluster.framing import Framing, MessageStream, request_framing, request_line, response_framing
from app.cluster.idle import IDLE_PATH, IdleTracker, counts_as_use

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT_S = 30.0
HIGH_WATER = 1 << 20



def _response(status: str, error: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode() + body


_UNAUTHORIZED = _response("401 Unauthorized", "this Ollama server job needs its token (notes-tui sends it for you)",
                          "WWW-Authenticate: Bearer\r\n")
_TOO_LARGE = _response("431 Request Header Fields Too Large", "request head too large")
_BAD_GATEWAY = _response("502 Bad Gateway", "the Ollama server behind the proxy is down")


PROOF_PATH = b"/_notes-tui/proof"


def proof_of(token: bytes, nonce: bytes) -> str:
    """What only the holder of the job's token can answer to `nonce`."""
    return hmac.new(token, b"notes-tui proof " + nonce, "sha256").hexdigest()


def _proof_response(head: bytes, token: bytes) -> bytes | None:
    """`GET /_notes-tui/proof?nonce=HEX` answered without the token: the client checks that the server it is about
    to send notes to is the job it holds the token for (a port can be taken by another user's process once a job has
    ended). The nonce is the client's, fresh each time, so an answer is worth nothing to anyone else."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[1].startswith(PROOF_PATH + b"?nonce="):
        return None
    nonce = parts[1][len(PROOF_PATH) + 7:]
    if not 16 <= len(nonce) <= 128 or any(c not in b"0123456789abcdef" for c in nonce):
        return _response("400 Bad Request", "the nonce is 16 to 128 hex digits")
    body = json.dumps({"proof": proof_of(token, nonce)}).encode()
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def authorized(head: bytes, expected: bytes) -> bool:
    """Does the request head carry `Authorization: Bearer <token>`? Constant-time on the token."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected):
                return True
    return False


def _idle_response(head: bytes, tracker: IdleTracker | None) -> bytes | None:
    """`GET /_notes-tui/idle` (after the token was checked): what the tracker says, and the connection closed."""
    method, path = request_line(head)
    if path != IDLE_PATH:
        return None
    if method != b"GET" or tracker is None:
        return _response("404 Not Found", "no idle state here")
    body = json.dumps(tracker.snapshot()).encode()
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class _Exchanges:
    """One connection's requests and answers, as the idle tracker needs them: each request that uses the server is
    in flight from its head until the end of its answer, or until the connection closes. HTTP/1.1 answers come in
    the order of the requests, so a queue of the requests still unanswered pairs them."""

    __slots__ = ("tracker", "waiting", "requests", "answers", "settled")

    def __init__(self, tracker: IdleTracker):
        self.tracker = tracker
        self.waiting: deque[tuple[bytes, bool]] = deque()  # (method, counts as use) of each request not answered
        self.requests = MessageStream(self._request, _nothing)
        self.answers = MessageStream(self._answer_head, self._answered)
        self.settled = False

    def _request(self, head: bytes) -> Framing:
        method, path = request_line(head)
        use = counts_as_use(path)
        self.waiting.append((method, use))
        if use:
            self.tracker.begin()
        return request_framing(head)

    def _answer_head(self, head: bytes) -> Framing:
        return response_framing(head, self.waiting[0][0] if self.waiting else b"GET")

    def _answered(self) -> None:
        if self.waiting and self.waiting.popleft()[1]:
            self.tracker.end()

    def close(self) -> None:
        """The connection is gone: whatever was still waiting for its answer has ended."""
        if self.settled:
            return
        self.settled = True
        for _, use in self.waiting:
            if use:
                self.tracker.end()
        self.waiting.clear()


def _nothing() -> None:
    pass


class ProxyStats:
    __slots__ = ("connections", "refused", "upstream_errors")

    def __init__(self) -> None:
        self.connections = 0
        self.refused = 0
        self.upstream_errors = 0


class _Peer(asyncio.Protocol):
    """One side of a spliced pair; what it receives it writes to the other side, with back-pressure."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _Peer | None = None
        self.got_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def forward(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.transport.write(data)

    def pause_writing(self) -> None:  # our outgoing buffer is full: stop reading the side that fills it
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self.got_eof = True
        other = self.other
        if other is None or other.got_eof:  # both ways done: close, or the pair stays open for ever (an fd each)
            return None
        if other.transport is not None and other.transport.can_write_eof():
            other.transport.write_eof()
            return True  # half-close: keep reading the answer
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.close()


class _Upstream(_Peer):
    def __init__(self) -> None:
        super().__init__()
        self.exchanges: _Exchanges | None = None

    def data_received(self, data: bytes) -> None:
        if self.exchanges is not None:
            self.exchanges.answers.feed(data)
        self.forward(data)


class _Client(_Peer):
    def __init__(self, proxy: AuthProxy):
        super().__init__()
        self.proxy = proxy
        self.head = bytearray()
        self.buffered: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.state = "head"  # head -> connecting -> spliced | closed
        self.exchanges: _Exchanges | None = None  # with an idle tracker: what is in flight on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy.stats.connections += 1
        self.timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, self._reject, b"")

    def data_received(self, data: bytes) -> None:
        if self.state == "spliced":
            if self.exchanges is not None:
                self.exchanges.requests.feed(data)
            self.forward(data)
            return
        if self.state == "connecting":
            if self.exchanges is not None:
                self.exchanges.requests.feed(data)
            self.buffered.append(data)
            return
        if self.state != "head":
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self._reject(_TOO_LARGE)
            return
        if self.timer is not None:
            self.timer.cancel()
        proof = _proof_response(bytes(self.head[:end]), self.proxy.token)
        if proof is not None:
            self._reject(proof)
            return
        if not authorized(bytes(self.head[:end]), self.proxy.token):
            self.proxy.refuse()
            self._reject(_UNAUTHORIZED)
            return
        idle = _idle_response(bytes(self.head[:end]), self.proxy.tracker)
        if idle is not None:
            self._reject(idle)
            return
        self.state = "connecting"
        self.buffered.append(bytes(self.head))
        if self.proxy.tracker is not None:
            self.exchanges = _Exchanges(self.proxy.tracker)
            self.exchanges.requests.feed(bytes(self.head))
        self.head = bytearray()
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.proxy.upstream_unix is not None:  # a server in a network namespace of its own (isolate.py)
                _, upstream = await loop.create_unix_connection(_Upstream, self.proxy.upstream_unix)
            else:
                _, upstream = await loop.create_connection(_Upstream, self.proxy.upstream_host,
                                                           self.proxy.upstream_port)
        except OSError:
            self.proxy.stats.upstream_errors += 1
            self._reject(_BAD_GATEWAY)
            return
        assert upstream.transport is not None
        if self.transport is None or self.transport.is_closing():  # the client left while we connected
            upstream.transport.close()
            return
        upstream.other, self.other = self, upstream
        upstream.exchanges = self.exchanges
        upstream.transport.write(b"".join(self.buffered))
        self.buffered = []
        self.state = "spliced"

    def _reject(self, response: bytes) -> None:
        self.state = "closed"
        if self.exchanges is not None:
            self.exchanges.close()
        if self.transport is not None and not self.transport.is_closing():
            if response:
                self.transport.write(response)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.exchanges is not None:
            self.exchanges.close()
        super().connection_lost(exc)


class AuthProxy:
    """Listens on (host, port) and forwards authenticated connections to the upstream Ollama."""

    def __init__(self, token: str, upstream_host: str, upstream_port: int, log=sys.stderr,
                 upstream_unix: str | None = None, tracker: IdleTracker | None = None):
        self.token = token.encode("ascii")
        self.tracker = tracker  # requests in flight and the idle clock (None: splice without looking)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_unix = upstream_unix  # a Unix socket path instead of host and port
        self.stats = ProxyStats()
        self.server: asyncio.Server | None = None
        self._log = log
        self._refusal_logged_at = 0.0

    async def start(self, host: str, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Client(self), host, port, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    def refuse(self) -> None:
        self.stats.refused += 1
        now = asyncio.get_running_loop().time()
        if self._log is not None and now - self._refusal_logged_at >= 60.0:  # one line a minute, however many come
            self._refusal_logged_at = now
            print(f"notes-tui proxy: refused a request without the job's token ({self.stats.refused} so far)",
                  file=self._log, flush=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
