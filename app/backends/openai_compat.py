"""OpenAI-compatible servers: vLLM, SGLang, llama.cpp's llama-server, LM Studio, Ollama's own `/v1`.

One request per note to `/v1/chat/completions` with the answer's JSON schema as `response_format` (`json_schema`,
strict), through the same lean HTTP client as Ollama. What each kind of server says of itself is asked where it says
it: vLLM's `/version` and `max_model_len` in `/v1/models`, llama-server's `/props` (`n_ctx`, the model file, the
build, its slots), Ollama's `/api/version`. None of them gives a model digest; the run records that plainly.

`think` maps to what these servers take: a level to `reasoning_effort`, true/false to the chat template's
`enable_thinking` (`chat_template_kwargs`: vLLM, SGLang and llama-server pass it to templates that know it, and the
others ignore it). A reply whose content is empty beside `reasoning_content` is the thinking-only cause.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.backends.base import Backend, Busy, ModelInfo, PromptTooLong, Reply, Transient
from app.backends.jobproof import prove_jobs
from app.backends.lean_http import HTTPFailure, Response
from app.backends.ollama import too_long
from app.backends.ollama_wire import Wire, as_int, chat_messages, json_doc, open_wire, post_for_answer, probe_each
from app.backends.remote import refuse_remote_hosts
from app.cluster.tokens import auth_headers
from app.errors import BackendError
from app.experiment import Experiment

PREPARE_TIMEOUT_S = 15.0
# Where the run starts each server (app.engine.limit finds the rest): a llama-server at the slots it says it has,
# vLLM at 64 (it runs up to 256 sequences at once by default), Ollama's own /v1 at 3, any other at 16.
DEFAULT_IN_FLIGHT = 16
VLLM_IN_FLIGHT = 64
NO_DIGEST = "none: an OpenAI-compatible server gives no model digest"


class OpenAIBackend(Backend):
    name = "openai-compatible"
    default_concurrency = DEFAULT_IN_FLIGHT

    def __init__(self, exp: Experiment):
        self.exp = exp
        m = exp.spec.model
        assert m.name
        self.model = m.name
        self.hosts = exp.hosts
        self.timeout = m.timeout_s
        self.slots: dict[str, int | None] = {}  # how many to start each host at, where its kind tells
        o = m.options
        self.params: dict[str, Any] = {"temperature": o.temperature, "seed": o.seed, "max_tokens": o.num_predict}
        if o.top_p is not None:
            self.params["top_p"] = o.top_p
        if o.top_k is not None:
            self.params["top_k"] = o.top_k  # not OpenAI's, but vLLM, SGLang and llama-server take it
        if isinstance(m.think, str):
            self.params["reasoning_effort"] = m.think
        else:
            self.params["chat_template_kwargs"] = {"enable_thinking": m.think}
        key = exp.api_key.get_secret_value() if exp.api_key is not None else None
        self.wires: dict[str, Wire] = {h: open_wire(h, self.timeout, tuple(_auth(h, key).items())) for h in self.hosts}

    async def prepare(self) -> ModelInfo:
        await asyncio.to_thread(refuse_remote_hosts, self.exp, self.hosts)
        await prove_jobs(self.exp, self.hosts)  # before the job's token goes to whoever holds the port
        up, problems = await probe_each(self.hosts, self._probe, PREPARE_TIMEOUT_S, BackendError)
        if not up:
            raise BackendError(f"{self.exp.path}: model.hosts: no OpenAI-compatible server answers: "
                               f"{', '.join(problems)} — is the server job running? (squeue --me) check host and port")
        self.hosts = tuple(up)
        first = next(iter(up.values()))
        start = {"vllm": VLLM_IN_FLIGHT, "ollama": 3}  # Ollama's /v1 answers one at a time unless told otherwise
        self.slots = {h: i["slots"] or start.get(i["kind"]) for h, i in up.items()}
        server = {"kind": first["kind"], "version": first["version"], "context_length": first["context_length"],
                  "model_identity": first["identity"], "slots": first["slots"],
                  "think": self.exp.spec.model.think,
                  "think_sent": self.params.get("reasoning_effort", self.params.get("chat_template_kwargs")),
                  "digest": NO_DIGEST, "allow_remote": self.exp.spec.model.allow_remote}
        kinds = {h: i["kind"] for h, i in up.items()}
        if len(set(kinds.values())) > 1:
            server["kinds"] = kinds
        details = {"unreachable": problems}
        if first["identity"]:
            details["identity"] = first["identity"]
        return ModelInfo(model=self.model, digest=None, server_version=first["version"], hosts=self.hosts,
                         details=details, server=server)

    def initial_in_flight(self, host: str) -> int:
        return self.slots.get(host) or self.default_concurrency

    async def _get(self, host: str, path: str) -> Response | None:
        try:
            return await asyncio.wait_for(self.wires[host].call("GET", path, timeout=PREPARE_TIMEOUT_S),
                                          PREPARE_TIMEOUT_S)
        except HTTPFailure:
            return None

    async def _probe(self, host: str) -> dict[str, Any]:
        wire = self.wires[host]
        listing = await asyncio.wait_for(wire.call("GET", "/v1/models", timeout=PREPARE_TIMEOUT_S), PREPARE_TIMEOUT_S)
        if listing.status == 401:
            raise BackendError(self._unauthorized(host))
        if listing.status != 200:
            raise HTTPFailure(f"HTTP {listing.status} on /v1/models: {error_message(listing)}")
        models = [m for m in json_doc(listing).get("data") or [] if isinstance(m, dict)]
        entry = next((m for m in models if m.get("id") == self.model), None)
        props = await self._get(host, "/props")  # llama-server
        p = json_doc(props) if props is not None and props.status == 200 else {}
        if entry is None:
            if p and len(models) == 1:
                # llama-server serves its one model under any name (its id is the file's path unless started with
                # --alias): the name is kept as the experiment gave it, the model file recorded beside it
                entry = models[0]
            else:
                have = ", ".join(sorted(str(m.get("id")) for m in models)) or "none"
                raise BackendError(f"{self.exp.path}: model.name: {self.model!r} is not served by {host} (it serves: "
                                   f"{have}) — set name to the id the server lists")
        facts: dict[str, Any] = {"kind": "openai-compatible", "version": None, "identity": entry.get("root"),
                                 "context_length": as_int(entry.get("max_model_len")), "slots": None}
        if facts["context_length"] is not None:
            facts["kind"] = "vllm"
        version = await self._get(host, "/version")  # vLLM, SGLang
        if version is not None and version.status == 200 and isinstance(json_doc(version).get("version"), str):
            facts["version"] = json_doc(version)["version"]
        if p:
            settings = p.get("default_generation_settings") if isinstance(p.get("default_generation_settings"), dict) else {}
            facts.update(kind="llama-server", version=p.get("build_info") or facts["version"],
                         identity=p.get("model_path") or facts["identity"],
                         context_length=as_int(settings.get("n_ctx")) or facts["context_length"],
                         slots=as_int(p.get("total_slots")))
        if facts["kind"] == "openai-compatible":
            ollama = await self._get(host, "/api/version")  # Ollama's own /v1
            if ollama is not None and ollama.status == 200 and isinstance(json_doc(ollama).get("version"), str):
                facts.update(kind="ollama", version=json_doc(ollama)["version"])
        return facts

    async def chat(self, host: str, system: str, user: str, schema: dict[str, Any]) -> Reply:
        messages = chat_messages(system, user)
        payload = {"model": self.model, "messages": messages, "stream": False, **self.params,
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}}
        resp = await post_for_answer(self.wires[host], "/v1/chat/completions", payload, self.timeout)
        if resp.status != 200:
            self._refused(host, resp)
        doc = json_doc(resp)
        choices = doc.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        message = choice.get("message") if choice else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str | None):
            raise Transient("not an OpenAI chat completion" + ("" if doc else " (not JSON)"))
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        return Reply(content=message.get("content") or "", done_reason=choice.get("finish_reason"),
                     tokens_in=as_int(usage.get("prompt_tokens")), tokens_out=as_int(usage.get("completion_tokens")),
                     truncated=False,  # such a server refuses a prompt over its context (PromptTooLong), never cuts
                     thought=isinstance(reasoning, str) and bool(reasoning.strip()))

    def _refused(self, host: str, resp: Response) -> None:
        msg, status = error_message(resp), resp.status
        if status in (429, 503):  # rate limited / overloaded: lower the pressure and try again
            raise Busy(msg)
        if status in (400, 413) and too_long(msg):
            raise PromptTooLong(msg)
        if status == 401:
            raise BackendError(self._unauthorized(host))
        if status == 404:
            raise BackendError(f"{self.exp.path}: model.name: {host} does not serve {self.model!r} any more ({msg}) "
                               "— check the server job")
        if status >= 500:
            raise Transient(f"HTTP {status}: {msg}")
        raise BackendError(f"{self.exp.path}: {host} refused the request (HTTP {status}: {msg}) — check the model "
                           "options; structured outputs need a server that takes response_format json_schema")

    def _unauthorized(self, host: str) -> str:
        if self.exp.api_key is None:
            return (f"{self.exp.path}: model.api_key_env: {host} wants an API key (HTTP 401) — name the variable that "
                    'holds it: api_key_env = "VLLM_API_KEY" (or use hosts = "auto" for your server jobs)')
        return (f"{self.exp.path}: model.api_key_env: {host} refused the key in {self.exp.spec.model.api_key_env} "
                "(HTTP 401) — check its value")

    async def close(self) -> None:
        for wire in self.wires.values():
            await wire.aclose()


def _auth(host: str, key: str | None) -> dict[str, str]:
    """A server job's proxy token where the host is one of the user's server jobs, else the experiment's key."""
    return auth_headers(host) or ({"Authorization": f"Bearer {key}"} if key else {})


def error_message(resp: Response) -> str:
    """`{"error": {"message": …}}` (OpenAI, llama-server), `{"message": …}` (vLLM), `{"detail": …}` (FastAPI),
    `{"error": "…"}` (Ollama), or the start of the body."""
    doc = json_doc(resp)
    err = doc.get("error")
    for value in (err.get("message") if isinstance(err, dict) else err, doc.get("message"), doc.get("detail")):
        if isinstance(value, str) and value.strip():
            return value.strip()[:300]
    return resp.body[:200].decode("utf-8", "replace").strip() or f"HTTP {resp.status}"

