"""Where HTTP/1.1 messages begin and end in a byte stream that passes through unchanged: the proxy of a server job
watches both directions of each connection this way, so it knows when a request starts and when its answer has
ended (the idle clock, app/cluster/idle.py) without copying or decoding what it forwards.

Heads are read; bodies are only counted (Content-Length), or walked chunk by chunk (Transfer-Encoding: chunked, as
Ollama streams an answer or a pull); an answer with neither ends when the connection closes. What cannot be followed
(an upgrade, a malformed length, a head past 64 KiB) makes the stream opaque: it is still forwarded, no longer
watched.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_HEAD = 64 * 1024
MAX_LINE = 4096

# what follows a head
NONE = "none"  # no body: the message ends with its head
CHUNKED = "chunked"
UNTIL_CLOSE = "until-close"
INTERIM = "interim"  # a 1xx answer: no body, and the real answer is still to come
OPAQUE = "opaque"  # stop watching this stream

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _CLOSE, _OPAQUE = range(8)

Framing = str | int  # one of the words above, or the body's length in bytes


_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")


def _headers(head: bytes) -> dict[bytes, bytes]:
    """The two headers that frame a body (repeated ones joined with commas); the rest are not looked at."""
    out: dict[bytes, bytes] = {}
    lower = head.lower()
    if b"content-length" not in lower and b"transfer-encoding" not in lower:
        return out
    for line in lower.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip()
        if sep and key in _FRAMING_HEADERS:
            out[key] = out[key] + b"," + value.strip() if key in out else value.strip()
    return out


def _body(headers: dict[bytes, bytes], otherwise: Framing) -> Framing:
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return CHUNKED
    length = headers.get(b"content-length")
    if length is None:
        return otherwise
    values = {v.strip() for v in length.split(b",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        return OPAQUE
    return int(next(iter(values)))


def request_line(head: bytes) -> tuple[bytes, bytes]:
    """(method, path without the query) of a request head; (b"", b"") when it is not one."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return b"", b""
    return parts[0].upper(), parts[1].split(b"?", 1)[0]


def request_framing(head: bytes) -> Framing:
    if not request_line(head)[0]:
        return OPAQUE
    return _body(_headers(head), NONE)  # a request without a length has no body


def response_framing(head: bytes, method: bytes) -> Framing:
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return OPAQUE
    status = int(parts[1])
    if 100 <= status < 200:
        return OPAQUE if status == 101 else INTERIM  # 101: the connection is something else from here on
    if method == b"HEAD" or status in (204, 304):
        return NONE
    return _body(_headers(head), UNTIL_CLOSE)


class MessageStream:
    """Feed it one direction of a connection, in order. `on_head(head)` is called with each message head (without
    its blank line) and returns the message's framing; `on_end()` when the message's last byte has gone by."""

    __slots__ = ("on_head", "on_end", "_state", "_buf", "_left")

    def __init__(self, on_head: Callable[[bytes], Framing], on_end: Callable[[], None]):
        self.on_head = on_head
        self.on_end = on_end
        self._state = _HEAD
        self._buf = bytearray()
        self._left = 0

    @property
    def opaque(self) -> bool:
        return self._state == _OPAQUE

    @property
    def between_messages(self) -> bool:
        return self._state == _HEAD and not self._buf

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state in (_BODY, _CHUNK_DATA, _CHUNK_END):
                take = min(self._left, n - i)
                i += take
                self._left -= take
                if self._left == 0:
                    if state == _BODY:
                        self._end()
                    elif state == _CHUNK_DATA:
                        self._state, self._left = _CHUNK_END, 2
                    else:
                        self._state = _CHUNK_SIZE
            elif state == _HEAD:
                if not self._buf:
                    while i < n and data[i] in b"\r\n":  # blank lines between messages are allowed
                        i += 1
                    if i == n:
                        return
                    end = data.find(b"\r\n\r\n", i)
                    if 0 <= end - i <= MAX_HEAD:  # the whole head in this chunk (the usual case): no copy
                        head, i = data[i:end], end + 4
                        self._head(head)
                        continue
                scanned = max(0, len(self._buf) - 3)
                self._buf += data[i:]
                end = self._buf.find(b"\r\n\r\n", scanned)
                if end < 0:
                    if len(self._buf) > MAX_HEAD:
                        self._opaque()
                    return
                head, rest = bytes(self._buf[:end]), bytes(self._buf[end + 4:])
                self._buf.clear()
                self._head(head)
                data, i, n = rest, 0, len(rest)
            elif state in (_CHUNK_SIZE, _TRAILER):
                j = data.find(b"\n", i)
                if j < 0:
                    self._buf += data[i:]
                    if len(self._buf) > MAX_LINE:
                        self._opaque()
                    return
                self._buf += data[i:j + 1]
                i = j + 1
                line = bytes(self._buf).strip()
                self._buf.clear()
                if state == _TRAILER:
                    if not line:
                        self._end()
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._opaque()
                    return
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._state, self._left = _CHUNK_DATA, size
            else:  # _CLOSE, _OPAQUE: everything until the connection ends
                return

    def _head(self, head: bytes) -> None:
        framing = self.on_head(head)
        if framing == NONE or framing == 0:
            self._end()
        elif framing == INTERIM:
            self._state = _HEAD
        elif framing == CHUNKED:
            self._state = _CHUNK_SIZE
        elif framing == UNTIL_CLOSE:
            self._state = _CLOSE
        elif isinstance(framing, int):
            self._state, self._left = _BODY, framing
        else:
            self._opaque()

    def _end(self) -> None:
        self._state = _HEAD
        self.on_end()

    def _opaque(self) -> None:
        self._state = _OPAQUE
        self._buf = bytearray()
