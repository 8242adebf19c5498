"""Ollama servers over their JSON API (`ollama_wire`), always with a timeout (the official client's default is none).

The run's path does not import the `ollama` package: its import alone (pydantic types, an SSL context for a
module-level client) cost ~0.2 s, a third of a short run. The requests are the same ones the official client sends.

What current servers (0.12 and later) do differently, and what is done about it:
- reasoning models think by default, and with a JSON schema the answer can come back empty: `think` is sent
  explicitly to every model whose `/api/show` lists the `thinking` capability, and never to one without it (Ollama
  answers 400 "does not support thinking");
- cloud models forward every prompt to ollama.com: refused before the first note unless `allow_remote`;
- an over-long prompt is cut from the front unless the request says `truncate: false` (0.12.6+), which makes it an
  error: sent, and the refusal counted as truncated. Older servers still cut from the front and report it only in
  `prompt_eval_count`, which is checked as before.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from app.backends.base import Backend, Busy, ModelInfo, PromptTooLong, Reply, Transient
from app.backends.jobproof import prove_jobs
from app.backends.kvcache import kv_shape
from app.backends.lean_http import HTTPFailure, Response
from app.backends.ollama_wire import (
    Wire,
    as_int,
    chat_messages,
    error_text,
    json_doc,
    open_wire,
    post_for_answer,
    probe_each,
)
from app.backends.remote import ALLOW_FIX, cloud_tag, refuse_remote_hosts, remote_host_of
from app.cluster.tokens import auth_headers
from app.errors import BackendError
from app.experiment import Experiment

PREPARE_TIMEOUT_S = 15.0
PS_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 600.0  # a model loaded before the first note: minutes from a shared filesystem for a 70B
TRUNCATE_FLAG_SINCE = (0, 12, 6)  # `truncate` in /api/chat; before it, over-long prompts are only ever cut
# Ollama: "the input length exceeds the context length"; llama-server: "the request exceeds the available context
# size"; vLLM: "This model's maximum context length is N tokens. However, your request has …"
TOO_LONG = re.compile(r"exceeds? (the )?(available |maximum )?context (length|size|window)|maximum context length is|"
                      r"context length exceeded", re.I)


def full_name(name: str) -> str:
    """Ollama lists `llama3` as `llama3:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def version_tuple(text: str | None) -> tuple[int, ...]:
    """`0.12.6` -> (0, 12, 6); `0.13.0-rc1` -> (0, 13, 0); anything else -> ()."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def too_long(message: str) -> bool:
    return bool(TOO_LONG.search(message))


class OllamaBackend(Backend):
    name = "ollama"
    # Ollama answers one request at a time unless OLLAMA_NUM_PARALLEL says otherwise: three to start with keeps at
    # most two waiting on such a server, and fills a four-slot one after a round (app.engine.limit)
    default_concurrency = 3

    def __init__(self, exp: Experiment):
        self.exp = exp
        m = exp.spec.model
        assert m.name
        self.model = m.name
        self.hosts = exp.hosts
        self.options = m.options.as_dict()
        self.num_ctx = m.options.num_ctx
        self.keep_alive = m.keep_alive
        self.timeout = m.timeout_s
        self.think: bool | str = m.think
        self.send_think = False  # set by prepare: only to a model that lists the thinking capability
        self.truncate_flag: set[str] = set()  # hosts that take `truncate: false`
        self.loaded_ctx: dict[str, int] = {}  # the context each host loaded the model with (/api/ps)
        self._ps_tasks: dict[str, asyncio.Task] = {}
        self.cold: tuple[str, ...] = ()  # hosts whose /api/ps did not list the model at prepare
        # a server job's proxy wants its token (found by URL in the user's own 0600 job records)
        self.wires: dict[str, Wire] = {h: open_wire(h, self.timeout, tuple(auth_headers(h).items()))
                                       for h in self.hosts}

    def initial_in_flight(self, host: str) -> int:
        """A server job started from a profile with num_parallel answers that many at once; others start at one."""
        from app.cluster.tokens import job_slots

        return job_slots(host) or self.default_concurrency

    async def prepare(self) -> ModelInfo:
        m = self.exp.spec.model
        if cloud_tag(self.model) and not m.allow_remote:
            raise BackendError(self._cloud(self.model, "its tag says it runs on ollama.com"))
        await asyncio.to_thread(refuse_remote_hosts, self.exp, self.hosts)
        await prove_jobs(self.exp, self.hosts)  # before the job's token goes to whoever holds the port
        up, problems = await probe_each(self.hosts, self._probe, PREPARE_TIMEOUT_S, BackendError)
        if not up:
            raise BackendError(f"{self.exp.path}: model.hosts: no Ollama server answers: {', '.join(problems)} — "
                               "is the server job running? (squeue --me) check host and port")
        digests = {info["entry"].get("digest") for info in up.values()}
        if len(digests) > 1:
            raise BackendError(f"{self.exp.path}: model.name: {self.model} differs between hosts (digests "
                               f"{', '.join(sorted(d[:12] for d in digests if d))}) — pull the same version everywhere")
        remote = next((r for r in (remote_host_of(i["entry"]) or remote_host_of(i["show"]) for i in up.values()) if r),
                      None)
        if remote and not m.allow_remote:
            raise BackendError(self._cloud(self.model, f"the server lists it with remote host {remote}"))
        first = next(iter(up.values()))
        capabilities = first["show"].get("capabilities")
        capabilities = [str(c) for c in capabilities] if isinstance(capabilities, list) else None
        thinks = capabilities is not None and "thinking" in capabilities
        if self.think is not False and capabilities is not None and not thinks:
            raise BackendError(f"{self.exp.path}: model.think: {self.model} does not think (its capabilities: "
                               f"{', '.join(capabilities) or 'none listed'}) — remove think, or set think = false")
        # a server too old to list capabilities: send think only when the experiment asks for it
        self.send_think = thinks or (capabilities is None and self.think is not False)
        self.truncate_flag = {h for h, i in up.items() if version_tuple(i["version"]) >= TRUNCATE_FLAG_SINCE}
        # a cloud model runs on ollama.com and is never in /api/ps: nothing to load here
        self.cold = () if remote else tuple(h for h, i in up.items() if _ps_entry(i["ps"], full_name(self.model)) is None)
        self.hosts = tuple(up)
        versions = {h: i["version"] for h, i in up.items()}
        entry = first["entry"]
        details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
        server = {
            "kind": "ollama",
            "version": first["version"],
            **({"versions": versions} if len(set(versions.values())) > 1 else {}),
            "capabilities": capabilities,
            "think": self.think,
            "think_sent": self.think if self.send_think else None,  # None: the field is left out of every request
            "truncate_sent": False if self.truncate_flag == set(up) else ("on some hosts" if self.truncate_flag else None),
            "context_length": _loaded_context(first["ps"], full_name(self.model)),
            "remote": remote,
            "allow_remote": m.allow_remote,
        }
        shape = kv_shape(first["show"].get("model_info"))
        if shape is not None:  # what num_ctx costs on the GPU (check says it; the run's record keeps it)
            server["kv_cache"] = {"bytes_per_token": shape.bytes_per_token, "shape": shape.words()}
        if as_int(entry.get("size")):
            server["model_bytes"] = as_int(entry.get("size"))
        return ModelInfo(model=full_name(self.model), digest=entry.get("digest"), server_version=first["version"],
                         hosts=self.hosts, details={"unreachable": problems, **details}, server=server)

    def _cloud(self, name: str, why: str) -> str:
        return (f"{self.exp.path}: model.name: {name} is a cloud model ({why}): its prompts would leave the cluster, "
                f"so no note is sent — use a model that runs on your server, or {ALLOW_FIX}")

    async def _call(self, host: str, method: str, path: str, payload: Any = None) -> Response:
        return await asyncio.wait_for(self.wires[host].call(method, path, payload, timeout=PREPARE_TIMEOUT_S),
                                      PREPARE_TIMEOUT_S)

    async def _probe(self, host: str) -> dict[str, Any]:
        resp = await self._call(host, "GET", "/api/version")
        version = json_doc(resp).get("version") if resp.status == 200 else None
        listing = await self._call(host, "GET", "/api/tags")
        if listing.status == 401:
            raise BackendError(self._no_token(host))
        if listing.status != 200:
            raise HTTPFailure(f"HTTP {listing.status} on /api/tags: {error_text(listing)}")
        models = [m for m in json_doc(listing).get("models") or [] if isinstance(m, dict)]
        wanted = full_name(self.model)
        entry = next((m for m in models if (m.get("model") or m.get("name")) == wanted), None)
        if entry is None:
            have = ", ".join(sorted(str(m.get("model") or m.get("name") or "?") for m in models)) or "none"
            raise BackendError(f"{self.exp.path}: model.name: {self.model!r} is not on {host} (it has: {have}) — "
                               f"pull it first: OLLAMA_HOST={host} ollama pull {self.model}")
        show = await self._call(host, "POST", "/api/show", {"model": self.model})
        ps = await self._call(host, "GET", "/api/ps")
        return {"version": version if isinstance(version, str) else None, "entry": entry,
                "show": json_doc(show) if show.status == 200 else {}, "ps": json_doc(ps) if ps.status == 200 else {}}

    def cold_hosts(self) -> tuple[str, ...]:
        return self.cold

    async def load(self, host: str) -> None:
        """Ollama's own way to load a model: a chat with no messages. With the run's options (num_ctx) and
        keep_alive, so the first note's request finds the model as it wants it and does not load it again."""
        payload = {"model": self.model, "messages": [], "stream": False, "options": self.options,
                   "keep_alive": self.keep_alive}
        timeout = max(self.timeout, LOAD_TIMEOUT_S)  # a note's timeout need not allow for a 70B model's load
        resp = await asyncio.wait_for(self.wires[host].call("POST", "/api/chat", payload, timeout=timeout), timeout)
        if resp.status != 200:
            raise BackendError(f"HTTP {resp.status} loading {self.model} on {host}: {error_text(resp)}")

    async def chat(self, host: str, system: str, user: str, schema: dict[str, Any]) -> Reply:
        messages = chat_messages(system, user)
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "stream": False, "format": schema,
                                   "options": self.options, "keep_alive": self.keep_alive}
        if self.send_think:
            payload["think"] = self.think
        if host in self.truncate_flag:
            payload["truncate"] = False
        resp = await post_for_answer(self.wires[host], "/api/chat", payload, self.timeout)
        if resp.status != 200:
            self._refused(host, resp)
        doc = json_doc(resp)
        message = doc.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or \
                not isinstance(content, str | None):
            # a 200 whose body is not a chat response: a wrong server, or a proxy's page
            raise Transient("not an Ollama chat response" + ("" if doc else " (not JSON)"))
        if host not in self._ps_tasks:  # the model is loaded now: ask once which context it got
            self._ps_tasks[host] = asyncio.create_task(self._learn_context(host))
        thinking = message.get("thinking")
        tokens_in = as_int(doc.get("prompt_eval_count"))
        total = as_int(doc.get("total_duration"))
        limit = min(self.num_ctx, self.loaded_ctx.get(host, self.num_ctx))
        return Reply(content=content or "", done_reason=doc.get("done_reason"), tokens_in=tokens_in,
                     tokens_out=as_int(doc.get("eval_count")), truncated=bool(tokens_in and tokens_in >= limit),
                     duration_ms=total / 1e6 if total else None,
                     thought=isinstance(thinking, str) and bool(thinking.strip()))

    async def _learn_context(self, host: str) -> None:
        try:
            resp = await asyncio.wait_for(self.wires[host].call("GET", "/api/ps", timeout=PS_TIMEOUT_S), PS_TIMEOUT_S)
        except (HTTPFailure, TimeoutError):
            return
        ctx = _loaded_context(json_doc(resp), full_name(self.model)) if resp.status == 200 else None
        if ctx:
            self.loaded_ctx[host] = ctx

    async def facts(self) -> dict[str, Any]:
        pending = [t for t in self._ps_tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=PS_TIMEOUT_S)
        return {"context_length": dict(self.loaded_ctx)} if self.loaded_ctx else {}

    def _refused(self, host: str, resp: Response) -> None:
        """Raise what a non-200 answer means for the run."""
        msg, status = error_text(resp), resp.status
        if status in (503, 429):  # queue full / rate limited: lower the pressure and try again
            raise Busy(msg)
        if status in (400, 413, 500) and too_long(msg):
            raise PromptTooLong(msg)
        if status == 404:
            raise BackendError(f"{self.exp.path}: model.name: {self.model!r} vanished from {host} during the run"
                               f" — pull it again: OLLAMA_HOST={host} ollama pull {self.model}")
        if status == 401:
            raise BackendError(self._no_token(host))
        if status == 400 and "thinking" in msg.lower():
            raise BackendError(f"{self.exp.path}: model.think: {host} refused think = {self.think!r} ({msg}) — "
                               "set think = false, or true instead of a level")
        if status >= 500:
            raise Transient(f"HTTP {status}: {msg}")
        raise BackendError(f"{self.exp.path}: {host} refused the request (HTTP {status}: {msg}) — "
                           "check the model options; structured outputs need Ollama ≥ 0.5")

    @staticmethod
    def _no_token(host: str) -> str:
        return (f"{host} refused us (HTTP 401): it is an owner-only server job and no token for it was found — "
                'use hosts = "auto", or run as the user who started the job')

    async def close(self) -> None:
        for task in self._ps_tasks.values():
            task.cancel()
        for wire in self.wires.values():
            await wire.aclose()


def _ps_entry(ps: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The model's entry in /api/ps: None when it is not in memory."""
    return next((m for m in ps.get("models") or [] if isinstance(m, dict) and (m.get("model") or m.get("name")) == name),
                None)


def _loaded_context(ps: dict[str, Any], name: str) -> int | None:
    entry = _ps_entry(ps, name)
    return None if entry is None else as_int(entry.get("context_length"))

