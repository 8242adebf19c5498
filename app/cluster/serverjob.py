"""Inside a server job (`slurm/ollama-server.sbatch` runs `notes-tui server proxy`): start the server on 127.0.0.1
at a free port, wait until it answers, put the authenticating proxy on a free public port, write the job's token
record, publish `KIND:HOST:PORT` in the job's Comment (`ollama:` or `openai:`), and serve until Slurm ends the job.

Any server command gets the port: `{port}` in the command is replaced by it (`vllm serve MODEL --host 127.0.0.1
--port {port}`), and OLLAMA_HOST=127.0.0.1:PORT and PORT are set (`ollama serve` reads the first).

Until the Comment is set the job shows as "starting": a client never sees an address before the server answers
and the token is in place.

The job ends itself after its idle limit with no request in flight through the proxy (app/cluster/idle.py): the
proxy process returns, the job script exits, Slurm frees the GPU. Its GPU-hours, used and idle, go to its record in
the ledger dir (ledger/serverjobs.py). With `then_run` (`notes-tui submit EXP --with-server PROFILE`) the job
publishes no address, runs `notes-tui --run EXP` against its own server and ends with that run; TERM stops the run
first (it saves what was answered), then the server.
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
from app.cluster.idle import IdleTracker, watch
from app.cluster.proxy import AuthProxy
from app.cluster.slurm import COMMENT_PREFIXES, Slurm
from app.errors import UserError
from app.experiment.hosts import RUN_SERVER_ENV

READY_POLL_S = 0.5
STOP_WAIT_S = 10.0
RECORD_EVERY_S = 60.0  # the job's record in the ledger is at most this old if the job is killed outright


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


async def _ready_unless_stopped(port: int, child: asyncio.subprocess.Process, timeout_s: float, kind: str,
                                stop: asyncio.Event) -> bool:
    """True once the server answers; False when the job was told to stop first."""
    ready = asyncio.ensure_future(_ready(port, child, timeout_s, kind))
    woke = asyncio.ensure_future(stop.wait())
    await asyncio.wait({ready, woke}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        return False
    woke.cancel()
    ready.result()
    return True


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


def server_argv(command: str, port: int) -> list[str]:
    return [word.replace("{port}", str(port)) for word in shlex.split(command)]


def server_env(environ: dict[str, str], port: int) -> dict[str, str]:
    env = dict(environ, OLLAMA_HOST=f"127.0.0.1:{port}", PORT=str(port))
    env.setdefault("OLLAMA_NOPRUNE", "1")  # every job start is a server start: keep partly pulled blobs
    return env


async def serve_inner(unix_path: str, command: str, environ: dict[str, str], ready_timeout_s: float,
                      kind: str = "ollama") -> int:
    """Inside the job's own network namespace: the server on this namespace's loopback, bridged to `unix_path`;
    prints READY once it answers, then serves until TERM."""
    from app.cluster import isolate

    isolate.loopback_up()
    port = free_port("127.0.0.1")
    argv = server_argv(command, port)
    try:
        # the server's own output goes to the job's log (stderr): our stdout says READY to the outside, nothing else
        child = await asyncio.create_subprocess_exec(*argv, env=server_env(environ, port), start_new_session=True,
                                                     stdout=sys.stderr.fileno())
    except OSError as exc:
        raise UserError(f"cannot start the server command {argv[0]!r} ({exc.strerror or exc}) — "
                        "check the profile's command") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    bridge = None
    try:
        if not await _ready_unless_stopped(port, child, ready_timeout_s, kind, stop):
            return 0
        bridge = await isolate.bridge(unix_path, port)
        print("READY", flush=True)
        child_done = asyncio.ensure_future(child.wait())
        woke = asyncio.ensure_future(stop.wait())
        await asyncio.wait({child_done, woke}, return_when=asyncio.FIRST_COMPLETED)
        woke.cancel()
        return 1 if child_done.done() else 0
    finally:
        if bridge is not None:
            bridge.close()
        await _stop(child)


async def _start_isolated(job_id: str, command: str, environ: dict[str, str], ready_timeout_s: float, kind: str,
                          stop: asyncio.Event) -> tuple[asyncio.subprocess.Process | None, str]:
    """The server in a network namespace of its own (isolate.py): the inner process, and its Unix socket once the
    server answers (None for the process when a stop came first)."""
    import tempfile

    from app.cluster import isolate

    folder = tempfile.mkdtemp(prefix=f"notes-tui-job-{job_id}-")  # 0700: only the owner reaches the socket
    sock = os.path.join(folder, "server.sock")
    argv = isolate.isolated_command([sys.executable, "-m", "app", "server", "inner", "--unix", sock, "--command",
                                     command, "--kind", kind, "--ready-timeout", f"{ready_timeout_s:g}"])
    child = await asyncio.create_subprocess_exec(*argv, env=environ, start_new_session=True,
                                                 stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    line = asyncio.ensure_future(child.stdout.readline())
    woke = asyncio.ensure_future(stop.wait())
    await asyncio.wait({line, woke}, return_when=asyncio.FIRST_COMPLETED)
    if not line.done():
        line.cancel()
        await _stop(child)
        return None, sock
    woke.cancel()
    if line.result().strip() != b"READY":
        code = await child.wait()
        raise UserError(f"the server did not start in its own network namespace (exit status {code}) — see the "
                        "lines above in this job's output")
    return child, sock


class _Book:
    """The job's record in the ledger dir (ledger/serverjobs.py): GPU-hours used and idle. A ledger dir that cannot
    be written costs one line in the job's output, never the server."""

    def __init__(self, environ: dict[str, str], tracker: IdleTracker, job_id: str, cluster: str | None, node: str,
                 kind: str, with_run: str | None):
        from ledger.clock import utc_now_iso
        from ledger.paths import ENV_VAR, resolve_ledger_dir

        self.tracker = tracker
        self.ledger_dir = resolve_ledger_dir(environ.get(ENV_VAR) or None)  # the submitter's (submit sets it)
        self.base = {"type": "server_job", "job_id": job_id, "cluster": cluster, "name": environ.get("SLURM_JOB_NAME"),
                     "node": node, "partition": environ.get("SLURM_JOB_PARTITION"), "gpus": _gpus(environ),
                     "kind": kind, "idle_limit_s": tracker.limit_s, "with_run": with_run}
        self.started_at = utc_now_iso()
        self.ready_at: str | None = None
        self._warned = False

    def ready(self) -> None:
        from ledger.clock import utc_now_iso

        self.ready_at = utc_now_iso()
        self.write()

    def write(self, ended_by: str | None = None) -> None:
        from ledger.clock import utc_now_iso
        from ledger.serverjobs import gpu_hours, write_record

        now = utc_now_iso()
        seconds = self.tracker.seconds()
        record = dict(self.base, started_at=self.started_at, ready_at=self.ready_at, updated_at=now,
                      ended_at=now if ended_by else None, status="ended" if ended_by else "running", ended_by=ended_by,
                      requests=self.tracker.requests, **seconds, gpu_hours=gpu_hours(self.base["gpus"], seconds))
        try:
            write_record(self.ledger_dir, record)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                say(f"cannot write the job's GPU-hours to {self.ledger_dir} ({exc.strerror or exc}); the server "
                    "goes on")

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(RECORD_EVERY_S)
            await asyncio.to_thread(self.write)


def idle_words(limit_s: float | None) -> str:
    from ledger.clock import format_duration

    return "never (idle = 0)" if limit_s is None else format_duration(limit_s)


async def serve(command: str, environ: dict[str, str], ready_timeout_s: float, slurm: Slurm | None = None,
                kind: str = "ollama", isolated: bool = True, idle_s: float | None = None,
                then_run: str | None = None) -> int:
    """The server job: `idle_s` seconds with no request in flight end it (None: never); `then_run`, an experiment
    file, makes it a job for that one run."""
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
    if isolated:
        from app.cluster.isolate import unavailable

        why = unavailable()
        if why is not None:
            raise UserError(f"cannot keep the server to you on this node: {why} — ask the site to allow them, or set "
                            'isolate = false in the profile with extra = ["--exclusive"] (a node to yourself)')
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    record = tokens.record_path(job_id, cluster, environ)
    tracker = IdleTracker(None if then_run else idle_s)  # a job for one run ends with the run, never for idleness
    book = _Book(environ, tracker, job_id, cluster, node, kind, then_run)
    keeping: asyncio.Future | None = None
    ended_by = "did not start"
    proxy: AuthProxy | None = None
    child: asyncio.subprocess.Process | None = None
    workdir: str | None = None
    try:
        if isolated:
            say(f"job {job_id}: starting {shlex.split(command)[0]} in a network namespace of its own; waiting for it "
                "to answer")
            child, sock = await _start_isolated(job_id, command, environ, ready_timeout_s, kind, stop)
            workdir = os.path.dirname(sock)
            if child is None:
                ended_by = "stopped"
                return 0
            proxy = AuthProxy(tokens.new_token(), "127.0.0.1", 0, upstream_unix=sock, tracker=tracker)
            say(f"job {job_id}: the server answers only through {sock} (0700): no port of it is open on the node")
        else:
            port = free_port("127.0.0.1")
            argv = server_argv(command, port)
            try:
                child = await asyncio.create_subprocess_exec(*argv, env=server_env(environ, port),
                                                             start_new_session=True)
            except OSError as exc:
                raise UserError(f"cannot start the server command {argv[0]!r} ({exc.strerror or exc}) — "
                                "check the profile's command") from None
            say(f"job {job_id}: started {argv[0]} (pid {child.pid}) on 127.0.0.1:{port} (isolate = false: other "
                "users of this node can reach that port); waiting for it to answer")
            if not await _ready_unless_stopped(port, child, ready_timeout_s, kind, stop):
                ended_by = "stopped"
                return 0
            proxy = AuthProxy(tokens.new_token(), "127.0.0.1", port, tracker=tracker)
        public = await proxy.start("0.0.0.0", 0)
        url = f"http://{node}:{public}"
        tokens.write_record(record, {"job_id": job_id, "cluster": cluster, "url": url, "node": node,
                                     "gpus": _gpus(environ), "partition": environ.get("SLURM_JOB_PARTITION"),
                                     "kind": kind, "num_parallel": _int_or_none(environ.get("NOTES_TUI_NUM_PARALLEL")),
                                     "idle_limit_s": tracker.limit_s, "with_run": then_run,
                                     "models_dir": environ.get("OLLAMA_MODELS") if kind == "ollama" else None,
                                     "token": proxy.token.decode("ascii")})
        tracker.ready()
        book.ready()
        ended_by = "failed"
        keeping = asyncio.ensure_future(book.keep())
        if then_run is None:
            prefix = next(p for p, k in COMMENT_PREFIXES.items() if k == kind)
            (slurm or Slurm()).set_comment(job_id, f"{prefix}{node}:{public}")
            say(f"job {job_id}: serving at {url} (token in {record}, owner-only); ends itself after "
                f"{idle_words(tracker.limit_s)} with no request")
        else:
            say(f"job {job_id}: serving at {url} for the run of {then_run} alone (no address published); the job "
                "ends with the run")
        code, ended_by = await _serve_until(job_id, child, stop, tracker, then_run, url, environ)
        return code
    finally:
        if keeping is not None:
            keeping.cancel()
        written = tokens.read_record(record)
        record.unlink(missing_ok=True)
        if written is not None:
            tokens.record_ended(written, environ)
        if proxy is not None:
            await proxy.close()
            say(f"job {job_id}: stopped; {proxy.stats.connections} connections, "
                f"{proxy.stats.refused} refused without the token, {tracker.requests} requests that used the server")
        if child is not None:
            await _stop(child)
        if workdir is not None:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        book.write(ended_by)


async def _serve_until(job_id: str, child: asyncio.subprocess.Process, stop: asyncio.Event, tracker: IdleTracker,
                       then_run: str | None, url: str, environ: dict[str, str]) -> tuple[int, str]:
    """Serve until TERM, the server's exit, the idle limit, or (with `then_run`) the run's end: (exit status, what
    ended the job)."""
    server_done = asyncio.ensure_future(child.wait())
    woke = asyncio.ensure_future(stop.wait())
    idle = asyncio.ensure_future(watch(tracker))
    waits = {server_done, woke, idle}
    run: asyncio.subprocess.Process | None = None
    run_done: asyncio.Future | None = None
    try:
        if then_run is not None:
            run = await _start_run(then_run, url, environ)
            run_done = asyncio.ensure_future(run.wait())
            waits.add(run_done)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if run is not None and run_done is not None and run_done.done():
            code = _status(run.returncode)
            say(f"job {job_id}: the run ended (exit status {code}); stopping the server")
            return code, "run ended"
        if server_done.done():
            say(f"job {job_id}: the server exited with status {child.returncode}")
            if run is not None:
                await _stop_run(job_id, run)
            return 1, "server exited"
        if woke.done():
            if run is not None:
                say(f"job {job_id}: told to stop: the run stops first (it saves what was answered), then the server")
                return await _stop_run(job_id, run), "stopped"
            return 0, "stopped"
        from ledger.clock import format_duration

        say(f"job {job_id}: no request for {format_duration(idle.result())} (idle = {idle_words(tracker.limit_s)}): "
            "ending the job, which frees its GPU")
        return 0, "idle"
    finally:
        for waiting in waits:
            if not waiting.done():
                waiting.cancel()
        if run is not None and run.returncode is None:  # only when this was cut short: never leave the run behind
            try:
                run.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass


async def _start_run(file: str, url: str, environ: dict[str, str]) -> asyncio.subprocess.Process:
    """`notes-tui --run FILE` against this job's server; its lines go to the job's output."""
    env = dict(environ, **{RUN_SERVER_ENV: url})
    say(f"starting the run: notes-tui --run {file}")
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "--run", file, env=env)


async def _stop_run(job_id: str, run: asyncio.subprocess.Process) -> int:
    """TERM the run once (it stops sending, waits for the notes in flight, saves, ends interrupted) and wait for it:
    the server stays up meanwhile. Slurm's own kill at the limit is the only deadline."""
    if run.returncode is None:
        try:
            run.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    code = _status(await run.wait())
    say(f"job {job_id}: the run stopped (exit status {code})")
    return code


def _status(returncode: int | None) -> int:
    """A process's exit status as a shell reports it (killed by signal N: 128 + N)."""
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def _gpus(environ: dict[str, str]) -> int:
    text = environ.get("SLURM_GPUS_ON_NODE", "")
    if text.isdigit():
        return int(text)
    visible = environ.get("CUDA_VISIBLE_DEVICES", "")
    return len([d for d in visible.split(",") if d.strip()]) if visible and visible != "NoDevFiles" else 0
