"""Pulls that outlive the app, measured (app.cluster.detached_pull): what following them costs the app, how soon a
progress line reaches it, how soon a pull process starts, and what the pull process itself costs.

    python -m bench.pull_follow                 # 4 pulls on 4 stand-in servers, 20 s each
    python -m bench.pull_follow --pulls 1 --seconds 30

Latency is from the moment the pull process wrote a line (its `at`) to the app's read that returned it (the screen is
drawn in the same step), on one host (one clock). A line is written within 0.25 s of the progress Ollama sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from app.cluster.detached_pull import DetachedPulls
from tests.standin.standin_ollama import spawn_standin


def child_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(pulls: int, seconds: float) -> None:
    servers = [spawn_standin(models="llama3", pull_seconds=seconds) for _ in range(pulls)]
    latencies: list[float] = []
    first_line: dict[str, float] = {}
    added: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        follower: DetachedPulls

        def update(pull) -> None:
            record = follower._followed[str(pull.id)].tail.record or {}
            if pull.state == "pulling" and pull.total:
                latencies.append(time.time() - record["at"])
                first_line.setdefault(str(pull.id), time.monotonic())
            pid = record.get("pid")
            if pid and pull.active:
                try:
                    cpu[str(pull.id)] = child_cpu(pid)
                except OSError:
                    pass

        follower = DetachedPulls(Path(tmp), update)
        follower.start()
        try:
            for server in servers:
                pull = follower.add(server.url, "llama3.1:8b")
                added[str(pull.id)] = time.monotonic()
            t0, polls0, cpu0 = time.monotonic(), follower.polls, follower.poll_s
            while follower.active():
                await asyncio.sleep(0.1)
            wall = time.monotonic() - t0
            polls, poll_s = follower.polls - polls0, follower.poll_s - cpu0
        finally:
            await follower.aclose()
            for server in servers:
                server.stop()
        states = [p.state for p in follower.pulls]
    starts = [first_line[i] - added[i] for i in first_line]
    print(f"{pulls} pull{'s' if pulls > 1 else ''} of {seconds:g} s each, ended {states}")
    print(f"app: {polls} reads in {wall:.1f} s, {poll_s / max(polls, 1) * 1e3:.3f} ms CPU a read "
          f"({poll_s / wall * 100:.3f} % of a core), reader thread only")
    print(f"line written -> app: median {statistics.median(latencies) * 1e3:.0f} ms, "
          f"p90 {statistics.quantiles(latencies, n=10)[-1] * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms "
          f"({len(latencies)} updates)")
    print(f"p -> first progress on screen (process start, import, /api/tags for the quota, first line): "
          f"median {statistics.median(starts):.2f} s, max {max(starts):.2f} s")
    print(f"a pull process's CPU (the whole pull, start-up included): "
          f"{', '.join(f'{c:.2f} s' for c in cpu.values())}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pulls", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args()
    asyncio.run(measure(a.pulls, a.seconds))


if __name__ == "__main__":
    main()
