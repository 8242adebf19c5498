"""Inside a server job (`slurm/ollama-server.sbatch` runs `notes-tui server proxy`): start the server on 127.0.0.1
at a free port, wait until it answers, put the authenticating proxy on a free public port, write the job's token
record, publish `KIND:HOST:PORT` in the job's Comment (`ollama:` or `openai:`), and serve until Slurm ends the job.

Any server command gets the port: `{port}` in the command is replaced by it (`vllm serve MODEL --host 127.0.0.1
--port {port}`), and OLLAMA_HOST=127.0.0.1:PORT and PORT are set (`ollama serve` reads the first).

Until the Comment is set the job shows as "starting": a client never sees an address before the server answers
and the token is in place.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import sys
import time

import httpx

from app.cluster import tokens
from app.cluster.proxy import AuthProxy
from app.cluster.slurm import COMMENT_PREFIXES, Slurm
from app.errors import UserError

READY_POLL_S = 0.5
STOP_WAIT_S = 10.0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def say(text: str) -> None:
    print(f"notes-tui server job: {text}", file=sys.stderr, flush=True)


READY_PATHS = {"ollama": ("/api/version",), "openai-compatible": ("/health", "/v1/models")}


async def _ready(port: int, child: asyncio.subprocess.Process, timeout_s: float, kind: str = "ollama") -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
        while True:
            if child.returncode is not None:
                raise UserError(f"the server command exited with status {child.returncode} before it answered — "
                                "see the lines above in this job's output")
            try:
                # a server that loads its model before it listens (vLLM) answers /health only once it can serve
                for path in READY_PATHS[kind]:
                    if (await client.get(path)).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise UserError(f"the server did not answer on 127.0.0.1:{port} within {timeout_s:g} s — "
                                "check the profile's command")
            await asyncio.sleep(READY_POLL_S)


async def _stop(child: asyncio.subprocess.Process) -> None:
    if child.returncode is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(child.wait(), STOP_WAIT_S)
    except TimeoutError:
        os.killpg(child.pid, signal.SIGKILL)
        await child.wait()


async def serve(command: str, environ: dict[str, str], ready_timeout_s: float, slurm: Slurm | None = None,
                kind: str = "ollama") -> int:
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        raise UserError("notes-tui server proxy runs inside a server job — start one with: "
                        "notes-tui server start --profile NAME")
    if kind not in READY_PATHS:
        raise UserError(f"--kind {kind!r}: use one of {', '.join(READY_PATHS)}")
    if not shlex.split(command):
        raise UserError("the server command is empty — set command in the profile, e.g. \"ollama serve\"")
    cluster = environ.get("NOTES_TUI_CLUSTER") or None
    node = environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    port = free_port("127.0.0.1")
    argv = [word.replace("{port}", str(port)) for word in shlex.split(command)]
    env = dict(environ, OLLAMA_HOST=f"127.0.0.1:{port}", PORT=str(port))
    env.setdefault("OLLAMA_NOPRUNE", "1")  # every job start is a server start: keep partly pulled blobs
    try:
        child = await asyncio.create_subprocess_exec(*argv, env=env, start_new_session=True)
    except OSError as exc:
        raise UserError(f"cannot start the server command {argv[0]!r} ({exc.strerror or exc}) — "
                        "check the profile's command") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    record = tokens.record_path(job_id, cluster, environ)
    proxy: AuthProxy | None = None
    try:
        say(f"job {job_id}: started {argv[0]} (pid {child.pid}) on 127.0.0.1:{port}; waiting for it to answer")
        ready = asyncio.ensure_future(_ready(port, child, ready_timeout_s, kind))
        woke = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, woke}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            return 0
        woke.cancel()
        ready.result()
        proxy = AuthProxy(tokens.new_token(), "127.0.0.1", port)
        public = await proxy.start("0.0.0.0", 0)
        url = f"http://{node}:{public}"
        tokens.write_record(record, {"job_id": job_id, "cluster": cluster, "url": url, "node": node,
                                     "gpus": _gpus(environ), "partition": environ.get("SLURM_JOB_PARTITION"),
                                     "kind": kind, "num_parallel": _int_or_none(environ.get("NOTES_TUI_NUM_PARALLEL")),
                                     "token": proxy.token.decode("ascii")})
        prefix = next(p for p, k in COMMENT_PREFIXES.items() if k == kind)
        (slurm or Slurm()).set_comment(job_id, f"{prefix}{node}:{public}")
        say(f"job {job_id}: serving at {url} (token in {record}, owner-only)")
        child_done = asyncio.ensure_future(child.wait())
        woke = asyncio.ensure_future(stop.wait())
        await asyncio.wait({child_done, woke}, return_when=asyncio.FIRST_COMPLETED)
        woke.cancel()
        if child_done.done():
            say(f"job {job_id}: the server exited with status {child.returncode}")
            return 1
        return 0
    finally:
        written = tokens.read_record(record)
        record.unlink(missing_ok=True)
        if written is not None:
            tokens.record_ended(written, environ)
        if proxy is not None:
            await proxy.close()
            say(f"job {job_id}: stopped; {proxy.stats.connections} connections, "
                f"{proxy.stats.refused} refused without the token")
        await _stop(child)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def _gpus(environ: dict[str, str]) -> int:
    text = environ.get("SLURM_GPUS_ON_NODE", "")
    if text.isdigit():
        return int(text)
    visible = environ.get("CUDA_VISIBLE_DEVICES", "")
    return len([d for d in visible.split(",") if d.strip()]) if visible and visible != "NoDevFiles" else 0
