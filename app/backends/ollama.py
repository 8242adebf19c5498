"""Ollama servers through the official `ollama` AsyncClient, always with a timeout (its default is none)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import ollama

from app.backends.base import Backend, Busy, ModelInfo, Reply, Transient
from app.backends.transport import client_transport
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
        self.clients = {h: self._new_client(h) for h in self.hosts}

    def _new_client(self, host: str) -> ollama.AsyncClient:
        timeout = httpx.Timeout(self.timeout, connect=10.0)
        # the official client over a lean transport for http hosts: httpcore's pool cost more CPU than the rest of
        # the run
        return ollama.AsyncClient(host=host, timeout=timeout, transport=client_transport(host),
                                  headers=auth_headers(host))  # a server job's proxy wants its token

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
        client = self.clients[host]
        # the client has no call for the server version; ask the same connection pool directly
        resp = await asyncio.wait_for(client._client.get("/api/version"), PREPARE_TIMEOUT_S)
        version = resp.json().get("version") if resp.status_code == 200 else None
        listing = await asyncio.wait_for(client.list(), PREPARE_TIMEOUT_S)
        wanted = full_name(self.model)
        for m in listing.models:
            if m.model == wanted:
                details = m.details.model_dump() if m.details else {}
                return version, {"digest": m.digest, "size": m.size, "details": details}
        have = ", ".join(sorted(m.model or "?" for m in listing.models)) or "none"
        raise BackendError(f"{self.exp.path}: model.name: {self.model!r} is not on {host} (it has: {have}) — "
                           f"pull it first: OLLAMA_HOST={host} ollama pull {self.model}")

    async def chat(self, host: str, system: str, user: str, schema: dict[str, Any]) -> Reply:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        try:
            resp = await self.clients[host].chat(model=self.model, messages=messages, format=schema,
                                                 options=self.options, keep_alive=self.keep_alive, stream=False)
        except ollama.ResponseError as exc:
            if exc.status_code == 503:
                raise Busy(_short(exc)) from None
            if exc.status_code == 404:
                raise BackendError(f"{self.exp.path}: model.name: {self.model!r} vanished from {host} during the run"
                                   f" — pull it again: OLLAMA_HOST={host} ollama pull {self.model}") from None
            if exc.status_code == 401:
                raise BackendError(f"{host} refused us (HTTP 401): it is an owner-only server job and no token for it "
                                   "was found — use hosts = \"auto\", or run as the user who started the job") from None
            if exc.status_code == 429:
                raise Busy(_short(exc)) from None
            if exc.status_code >= 500 or exc.status_code == -1:
                raise Transient(f"HTTP {exc.status_code}: {_short(exc)}") from None
            raise BackendError(f"{self.exp.path}: {host} refused the request (HTTP {exc.status_code}: {_short(exc)}) — "
                               "check the model options; structured outputs need Ollama ≥ 0.5") from None
        except ConnectionError as exc:  # the client's rewording of httpx.ConnectError
            raise Transient(_short(exc), down=True) from None
        except httpx.ConnectTimeout as exc:
            raise Transient(_short(exc), down=True) from None
        except httpx.TimeoutException:
            raise Transient(f"no answer within timeout_s = {self.timeout:g}") from None
        except httpx.TransportError as exc:
            raise Transient(_short(exc)) from None
        except ValueError as exc:  # a 200 whose body is not a chat response (JSON or pydantic error): a wrong server
            raise Transient(f"not an Ollama chat response ({exc.__class__.__name__})") from None
        tokens_in = resp.prompt_eval_count
        duration = resp.total_duration / 1e6 if resp.total_duration else None
        return Reply(content=resp.message.content or "", done_reason=resp.done_reason, tokens_in=tokens_in,
                     tokens_out=resp.eval_count, truncated=bool(tokens_in and tokens_in >= self.num_ctx),
                     duration_ms=duration)

    async def close(self) -> None:
        for client in self.clients.values():
            await client._client.aclose()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]
