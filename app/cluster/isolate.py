"""A server job's server where no other user of the node can reach it.

The proxy listens on the node's public port and wants the job's token; the server behind it listened on
127.0.0.1, and loopback is shared by every user of a GPU node: anyone could read the port from /proc/net/tcp and
use or delete the owner's models. So the server runs in a network namespace of its own (an unprivileged user
namespace, `unshare --user --map-current-user --net --keep-caps`), where its loopback is its alone, and the proxy
reaches it through a Unix socket in a 0700 directory: no port of the job but the proxy's answers anyone.

Inside (`notes-tui server inner`): bring the namespace's loopback up, start the server command on 127.0.0.1, wait
until it answers, and bridge the Unix socket to it. What a site must allow: unprivileged user namespaces
(`/proc/sys/user/max_user_namespaces` above 0, as on RHEL 8 and later). The cost: the server has no network, so a
model is pulled before (or by a job with `isolate = false`), not through the isolated job.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys

UNSHARE = ["unshare", "--user", "--map-current-user", "--net", "--keep-caps"]
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def unavailable() -> str | None:
    """Why the server cannot be isolated here, or None when it can."""
    if shutil.which("unshare") is None:
        return "there is no unshare command (util-linux)"
    try:
        done = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare does not run ({exc})"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"unprivileged user namespaces are not allowed here ({said})"
    return None


def isolated_command(argv: list[str]) -> list[str]:
    return [*UNSHARE, "--", *argv]


def loopback_up() -> None:
    """`ip link set lo up`, without needing `ip`: the namespace starts with its loopback down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


async def bridge(path: str, port: int) -> asyncio.Server:
    """Serve the Unix socket at `path` (0600), each connection spliced to 127.0.0.1:port."""
    from app.cluster.proxy import _Peer, _Upstream

    loop = asyncio.get_running_loop()

    class _Side(_Peer):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            assert self.transport is not None
            self.transport.pause_reading()  # until the server side is there
            asyncio.ensure_future(self._connect())

        async def _connect(self) -> None:
            try:
                _, upstream = await loop.create_connection(_Upstream, "127.0.0.1", port)
            except OSError:
                if self.transport is not None:
                    self.transport.close()
                return
            upstream.other, self.other = self, upstream
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

        def data_received(self, data: bytes) -> None:
            self.forward(data)

    server = await loop.create_unix_server(_Side, path)
    os.chmod(path, 0o600)
    return server


def say(text: str) -> None:
    print(f"notes-tui server job (inside): {text}", file=sys.stderr, flush=True)
