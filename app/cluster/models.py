"""The models on one Ollama server: list, details, delete (pulls are in `pulls.py`). Every failure a user can meet
— the server down, a wrong name, a server-side error — is a `ServerError`: one line with the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import ollama

from app.backends.ollama import full_name
from app.backends.remote import cloud_tag, remote_host_of
from app.backends.transport import client_transport
from app.cluster.health import down_reason
from app.cluster.tokens import auth_headers
from app.errors import UserError

CALL_TIMEOUT_S = 15.0


class ServerError(UserError):
    """A call to a server failed in a way the user can act on."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    size: int
    parameter_size: str
    quantization: str
    family: str
    modified_at: datetime | None
    digest: str
    remote: str | None = None  # a cloud model: where its prompts go (Ollama 0.12+ lists them beside local ones)
    served: bool = False  # listed by an OpenAI-compatible server: what it serves, not a file it holds

    @property
    def short_digest(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    @property
    def cloud(self) -> bool:
        return self.remote is not None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "parameter_size": self.parameter_size,
                "quantization": self.quantization, "family": self.family, "digest": self.digest,
                "modified_at": self.modified_at.isoformat() if self.modified_at else None,
                "cloud": self.cloud, "remote_host": self.remote, "served": self.served}


@dataclass(frozen=True)
class ModelDetails:
    name: str
    context_length: int | None
    family: str
    parameter_size: str
    quantization: str
    capabilities: tuple[str, ...]
    template: str
    parameters: str
    license: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__, capabilities=list(self.capabilities))


def api_client(url: str, timeout_s: float = CALL_TIMEOUT_S) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=url, timeout=httpx.Timeout(timeout_s, connect=5.0), transport=client_transport(url),
                              headers=auth_headers(url))


def explain(exc: BaseException, url: str, name: str | None = None) -> ServerError:
    """One line for a failed call: what happened at which server, and what to do."""
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404 and name:
            return ServerError(f"{name!r} is not on {url} — see notes-tui models list --host {url}")
        status = f"HTTP {exc.status_code}: " if exc.status_code > 0 else ""
        return ServerError(f"{url} answered: {status}{str(exc.error)[:160]}")
    if isinstance(exc, ConnectionError) or (isinstance(exc, httpx.ConnectError) and down_reason(exc) == "refused"):
        # (ConnectionError: the official client's rewording of httpx.ConnectError)
        return ServerError(f"{url} does not answer (connection refused) — is the server job running? (squeue --me)")
    if isinstance(exc, httpx.HTTPError):
        return ServerError(f"{url} {down_reason(exc, CALL_TIMEOUT_S)} — is the server job running? (squeue --me)")
    if isinstance(exc, ValueError):  # pydantic or JSON: what answered is not Ollama
        return ServerError(f"{url} is not an Ollama server (unexpected answer: {exc.__class__.__name__})")
    return ServerError(f"{url}: {exc.__class__.__name__}: {str(exc)[:160]}")


OPENAI_NO_MANAGEMENT = ("an OpenAI-compatible server serves the model it was started with: there is nothing to pull or "
                        "delete here — change the model in the server job's profile (its command)")


async def list_models(url: str) -> list[ModelEntry]:
    """The models on an Ollama server (cloud ones marked), or what an OpenAI-compatible server serves. Read as plain
    JSON: the official client's types drop the fields that mark a cloud model (`remote_host`)."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(CALL_TIMEOUT_S, connect=5.0),
                                 transport=client_transport(url), headers=auth_headers(url)) as client:
        try:
            resp = await client.get("/api/tags")
            if resp.status_code == 404:
                return await _served(client, url)
            if resp.status_code != 200:
                raise ollama.ResponseError(_error(resp), resp.status_code)
            listing = resp.json()
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise explain(exc, url) from None
    out = []
    for m in listing.get("models") or [] if isinstance(listing, dict) else []:
        if not isinstance(m, dict):
            continue
        d = m.get("details") if isinstance(m.get("details"), dict) else {}
        out.append(ModelEntry(name=str(m.get("model") or m.get("name") or "?"), size=_size(m.get("size")),
                              parameter_size=str(d.get("parameter_size") or ""),
                              quantization=str(d.get("quantization_level") or ""), family=str(d.get("family") or ""),
                              modified_at=_when(m.get("modified_at")), digest=str(m.get("digest") or ""),
                              remote=remote_host_of(m) or ("ollama.com" if cloud_tag(str(m.get("model") or "")) else None)))
    return out


async def _served(client: httpx.AsyncClient, url: str) -> list[ModelEntry]:
    resp = await client.get("/v1/models")
    data = resp.json().get("data") if resp.status_code == 200 else None
    if not isinstance(data, list):
        raise ServerError(f"{url} is neither an Ollama nor an OpenAI-compatible server (HTTP {resp.status_code} on "
                          "/api/tags and /v1/models) — check the port")
    return [ModelEntry(name=str(m.get("id")), size=0, parameter_size="", quantization="", family="",
                       modified_at=_when(m.get("created")), digest="", served=True)
            for m in data if isinstance(m, dict) and m.get("id")]


def _error(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:160]
    return str(doc.get("error") if isinstance(doc, dict) else doc)[:160]


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _when(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value).astimezone()
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def show_model(url: str, name: str) -> ModelDetails:
    client = api_client(url)
    try:
        show = await client.show(name)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, url, name) from None
    finally:
        await client.close()
    info = dict(show.modelinfo or {})
    arch = info.get("general.architecture")
    ctx = info.get(f"{arch}.context_length") if arch else None
    d = show.details
    return ModelDetails(name=full_name(name), context_length=ctx if isinstance(ctx, int) else None,
                        family=(d.family if d else None) or "", parameter_size=(d.parameter_size if d else None) or "",
                        quantization=(d.quantization_level if d else None) or "",
                        capabilities=tuple(show.capabilities or ()), template=show.template or "",
                        parameters=show.parameters or "", license=show.license or "")


async def delete_model(url: str, name: str) -> None:
    client = api_client(url)
    try:
        await client.delete(name)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, url, name) from None
    finally:
        await client.close()
