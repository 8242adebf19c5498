"""The models on one Ollama server: list, details, delete (pulls are in `pulls.py`). Every failure a user can meet
— the server down, a wrong name, a server-side error — is a `ServerError`: one line with the fix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import ollama

from app.backends.ollama import full_name
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

    @property
    def short_digest(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "parameter_size": self.parameter_size,
                "quantization": self.quantization, "family": self.family, "digest": self.digest,
                "modified_at": self.modified_at.isoformat() if self.modified_at else None}


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
    if isinstance(exc, ConnectionError):  # the client's rewording of httpx.ConnectError
        return ServerError(f"{url} does not answer (connection refused) — is the server job running? (squeue --me)")
    if isinstance(exc, httpx.HTTPError):
        return ServerError(f"{url} {down_reason(exc, CALL_TIMEOUT_S)} — is the server job running? (squeue --me)")
    if isinstance(exc, ValueError):  # pydantic or JSON: what answered is not Ollama
        return ServerError(f"{url} is not an Ollama server (unexpected answer: {exc.__class__.__name__})")
    return ServerError(f"{url}: {exc.__class__.__name__}: {str(exc)[:160]}")


async def list_models(url: str) -> list[ModelEntry]:
    client = api_client(url)
    try:
        listing = await client.list()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        raise explain(exc, url) from None
    finally:
        await client.close()
    out = []
    for m in listing.models:
        d = m.details
        out.append(ModelEntry(name=m.model or "?", size=int(m.size or 0),
                              parameter_size=(d.parameter_size if d else None) or "",
                              quantization=(d.quantization_level if d else None) or "",
                              family=(d.family if d else None) or "", modified_at=m.modified_at,
                              digest=m.digest or ""))
    return out


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
