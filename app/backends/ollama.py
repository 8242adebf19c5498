"""Ollama servers over their JSON API (`ollama_wire`), always with a timeout (the official client's default is none).

The run's path does not import the `ollama` package: its import alone (pydantic types, an SSL context for a
module-level client) cost ~0.2 s, a third of a short run. The requests are the same ones the official client sends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.backends.base import Backend, Busy, ModelInfo, Reply, Transient
from app.backends.lean_http import ConnectFailed, ConnectTimedOut, HTTPFailure, ReadTimedOut, Response
from app.backends.ollama_wire import Wire, error_text, failure_text, open_wire
from app.cluster.tokens import auth_headers
from app.config import DEFAULT_CONCURRENCY, Experiment
from app.errors import BackendError

PREPARE_TIMEOUT_S = 15.0


def full_name(name: str) -> str:
    """Ollama lists `llama3` as `llama3:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend(Backend):
    name = "ollama"
    default_concurrency = DEFAULT_CONCURRENCY

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
        # a server job's proxy wants its token (found by URL in the user's own 0600 job records)
        self.wires: dict[str, Wire] = {h: open_wire(h, self.timeout, tuple(auth_headers(h).items()))
                                       for h in self.hosts}

    async def prepare(self) -> ModelInfo:
        results = await asyncio.gather(*(self._probe(h) for h in self.hosts), return_exceptions=True)
        up: dict[str, tuple[str | None, dict[str, Any]]] = {}
        problems = []
        for host, res in zip(self.hosts, results):
            if isinstance(res, BackendError):
                raise res
            if isinstance(res, Exception):
                problems.append(f"{host} ({_short(res)})")
            else:
                up[host] = res
        if not up:
            raise BackendError(f"{self.exp.path}: model.hosts: no Ollama server answers: {', '.join(problems)} — "
                               "is the server job running (squeue --me)? check host and port")
        digests = {info[1].get("digest") for info in up.values()}
        if len(digests) > 1:
            raise BackendError(f"{self.exp.path}: model.name: {self.model} differs between hosts (digests "
                               f"{', '.join(sorted(d[:12] for d in digests if d))}) — pull the same version everywhere")
        self.hosts = tuple(up)
        version, details = next(iter(up.values()))
        return ModelInfo(model=full_name(self.model), digest=details.get("digest"), server_version=version,
                         hosts=self.hosts, details={"unreachable": problems, **details.get("details", {})})

    async def _probe(self, host: str) -> tuple[str | None, dict[str, Any]]:
        wire = self.wires[host]
        resp = await asyncio.wait_for(wire.call("GET", "/api/version", timeout=PREPARE_TIMEOUT_S), PREPARE_TIMEOUT_S)
        version = _doc(resp).get("version") if resp.status == 200 else None
        listing = await asyncio.wait_for(wire.call("GET", "/api/tags", timeout=PREPARE_TIMEOUT_S), PREPARE_TIMEOUT_S)
        if listing.status == 401:
            raise BackendError(self._no_token(host))
        if listing.status != 200:
            raise HTTPFailure(f"HTTP {listing.status} on /api/tags: {error_text(listing)}")
        models = [m for m in _doc(listing).get("models") or [] if isinstance(m, dict)]
        wanted = full_name(self.model)
        for m in models:
            if (m.get("model") or m.get("name")) == wanted:
                details = m.get("details") if isinstance(m.get("details"), dict) else {}
                return version, {"digest": m.get("digest"), "size": m.get("size"), "details": details}
        have = ", ".join(sorted(str(m.get("model") or m.get("name") or "?") for m in models)) or "none"
        raise BackendError(f"{self.exp.path}: model.name: {self.model!r} is not on {host} (it has: {have}) — "
                           f"pull it first: OLLAMA_HOST={host} ollama pull {self.model}")

    async def chat(self, host: str, system: str, user: str, schema: dict[str, Any]) -> Reply:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        payload = {"model": self.model, "messages": messages, "stream": False, "format": schema,
                   "options": self.options, "keep_alive": self.keep_alive}
        try:
            resp = await self.wires[host].call("POST", "/api/chat", payload)
        except (ConnectFailed, ConnectTimedOut) as exc:
            raise Transient(failure_text(exc), down=True) from None
        except ReadTimedOut:
            raise Transient(f"no answer within timeout_s = {self.timeout:g}") from None
        except HTTPFailure as exc:
            raise Transient(failure_text(exc)) from None
        if resp.status != 200:
            self._refused(host, resp)
        doc = _doc(resp)
        message = doc.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or \
                not isinstance(content, str | None):
            # a 200 whose body is not a chat response: a wrong server, or a proxy's page
            raise Transient("not an Ollama chat response" + ("" if doc else " (not JSON)"))
        tokens_in = _int(doc.get("prompt_eval_count"))
        total = _int(doc.get("total_duration"))
        return Reply(content=content or "", done_reason=doc.get("done_reason"), tokens_in=tokens_in,
                     tokens_out=_int(doc.get("eval_count")), truncated=bool(tokens_in and tokens_in >= self.num_ctx),
                     duration_ms=total / 1e6 if total else None)

    def _refused(self, host: str, resp: Response) -> None:
        """Raise what a non-200 answer means for the run."""
        msg, status = error_text(resp), resp.status
        if status in (503, 429):  # queue full / rate limited: lower the pressure and try again
            raise Busy(msg)
        if status == 404:
            raise BackendError(f"{self.exp.path}: model.name: {self.model!r} vanished from {host} during the run"
                               f" — pull it again: OLLAMA_HOST={host} ollama pull {self.model}")
        if status == 401:
            raise BackendError(self._no_token(host))
        if status >= 500:
            raise Transient(f"HTTP {status}: {msg}")
        raise BackendError(f"{self.exp.path}: {host} refused the request (HTTP {status}: {msg}) — "
                           "check the model options; structured outputs need Ollama ≥ 0.5")

    @staticmethod
    def _no_token(host: str) -> str:
        return (f"{host} refused us (HTTP 401): it is an owner-only server job and no token for it was found — "
                'use hosts = "auto", or run as the user who started the job')

    async def close(self) -> None:
        for wire in self.wires.values():
            await wire.aclose()


def _doc(resp: Response) -> dict[str, Any]:
    try:
        doc = resp.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(exc: BaseException) -> str:
    if isinstance(exc, HTTPFailure):
        return failure_text(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {PREPARE_TIMEOUT_S:g} s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]
