"""What the server job's authenticating proxy costs: throughput through the proxy against direct, and the proxy's CPU
per request, at 40 requests/s (a stand-in server with 8 slots at 200 ms per answer, kept full by a client like the
engine's: the official AsyncClient over the lean transport, structured-output chat requests, 10 in flight).

The stand-in, the proxy and the client run as three processes, so each one's CPU is measured apart. Direct and
proxied rounds alternate, to spread the noise of a shared machine over both.

    python -m bench.proxy                     # 2 rounds of 1,200 requests each way
    python -m bench.proxy --requests 600 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import ollama

from app.backends.transport import LeanTransport
from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench-token-not-a-secret"
SCHEMA = {"type": "object", "properties": {"response": {"type": "string", "enum": ["(1) Likely", "(2) Unlikely"]},
                                           "explanation": {"type": "string", "maxLength": 200}},
          "required": ["response", "explanation"]}
# as in a server job: with the idle tracker, which follows where each request and answer begins and ends
PROXY = """
import asyncio, sys
from app.cluster.idle import IdleTracker
from app.cluster.proxy import AuthProxy
async def main():
    tracker = IdleTracker(None)
    tracker.ready()
    proxy = AuthProxy(sys.argv[1], "127.0.0.1", int(sys.argv[2]), log=None, tracker=tracker)
    print(await proxy.start("127.0.0.1", 0), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, headers: dict[str, str], n: int, in_flight: int) -> float:
    client = ollama.AsyncClient(host=url, timeout=30, transport=LeanTransport(), headers=headers)
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            await client.chat(model="llama3", messages=[{"role": "user", "content": f"Note {i}: chest clear"}],
                              format=SCHEMA, options={"temperature": 0, "seed": 0, "num_ctx": 4096}, stream=False)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - t0
    await client._client.aclose()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--in-flight", type=int, default=10)
    a = ap.parse_args()
    capacity = a.slots / a.latency
    server = spawn_standin(latency=a.latency, slots=a.slots)
    port = int(server.url.rsplit(":", 1)[1])
    proxy = subprocess.Popen([sys.executable, "-c", PROXY, TOKEN, str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proxy.stdout is not None
        proxied = f"http://127.0.0.1:{int(proxy.stdout.readline())}"
        asyncio.run(load(proxied, {"Authorization": f"Bearer {TOKEN}"}, 50, a.in_flight))  # warm both paths
        asyncio.run(load(server.url, {}, 50, a.in_flight))
        rates: dict[str, list[float]] = {"direct": [], "proxy": []}
        client_cpu: dict[str, list[float]] = {"direct": [], "proxy": []}
        proxy_cpu: list[float] = []
        for _ in range(a.rounds):
            for mode in ("direct", "proxy"):
                url, headers = (server.url, {}) if mode == "direct" else (proxied, {"Authorization": f"Bearer {TOKEN}"})
                p0, c0 = cpu_s(proxy.pid), time.process_time()
                elapsed = asyncio.run(load(url, headers, a.requests, a.in_flight))
                p1, c1 = cpu_s(proxy.pid), time.process_time()
                rates[mode].append(a.requests / elapsed)
                client_cpu[mode].append((c1 - c0) / a.requests * 1000)
                if mode == "proxy":
                    proxy_cpu.append((p1 - p0) / a.requests * 1000)
                print(f"  {mode:6s} {a.requests / elapsed:6.2f} req/s  client CPU {client_cpu[mode][-1]:.2f} ms/req"
                      + (f"  proxy CPU {proxy_cpu[-1]:.3f} ms/req" if mode == "proxy" else ""), flush=True)
    finally:
        proxy.terminate()
        proxy.wait()
        server.proc.terminate()
        server.proc.wait()
    direct, proxied_rate = statistics.mean(rates["direct"]), statistics.mean(rates["proxy"])
    print(f"capacity {capacity:.0f} req/s (P={a.slots}, L={a.latency * 1000:.0f} ms), {a.in_flight} in flight, "
          f"{a.rounds} x {a.requests} requests each way")
    print(f"direct   {direct:6.2f} req/s  (efficiency {direct / capacity:.3f})")
    print(f"proxy    {proxied_rate:6.2f} req/s  (efficiency {proxied_rate / capacity:.3f})")
    print(f"throughput ratio proxy/direct: {proxied_rate / direct:.3f}  (target >= 0.97)")
    print(f"proxy CPU per request: {statistics.median(proxy_cpu):.3f} ms (median of {len(proxy_cpu)} rounds; "
          f"{statistics.median(proxy_cpu) * proxied_rate / 10:.1f}% of a core at that rate)")
    print(f"client CPU per request: direct {statistics.median(client_cpu['direct']):.2f} ms, "
          f"proxy {statistics.median(client_cpu['proxy']):.2f} ms")


if __name__ == "__main__":
    main()
