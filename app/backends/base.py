"""Who answers: a backend sends one rendered prompt with the answer's JSON schema and returns the raw reply.

Backends raise `Busy` (the server's queue is full: lower the pressure, try again), `Transient` (a transport error or a
5xx: try again, maybe elsewhere), `PromptTooLong` (the server refused the prompt because it does not fit the context:
retrying cannot help) or `BackendError` (the user must act: model not pulled, server unreachable at start).
Validation of the reply is the engine's job, not the backend's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reply:
    content: str
    done_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    truncated: bool  # the prompt filled the whole context: the model did not see all of the note
    duration_ms: float | None = None
    thought: bool = False  # the reply carried thinking (a reasoning model): an empty answer beside it means it never
    #                        got past its thinking, which is a cause of its own, not "not JSON"


@dataclass(frozen=True)
class ModelInfo:
    """What the ledger records about who answered."""

    model: str
    digest: str | None
    server_version: str | None
    hosts: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)
    # what each server says of itself and what the run sends it, as the run header records them: kind, version,
    # context length, whether `think` and `truncate` are sent, a remote model allowed by the experiment
    server: dict[str, Any] = field(default_factory=dict)


class Busy(Exception):
    """HTTP 503: the server's queue is full."""


class PromptTooLong(Exception):
    """The server refused a prompt longer than its context (Ollama with `truncate: false`, an OpenAI server's 400)."""


class Transient(Exception):
    """A request failed in transport or with a 5xx; `down` when the server could not be reached at all."""

    def __init__(self, message: str, down: bool = False):
        super().__init__(message)
        self.down = down


class Backend(ABC):
    name: str
    #: requests in flight per host at the start, before the run finds each server's own (app.engine.limit)
    default_concurrency: int = 1
    #: never more in flight per host than this, whatever the server takes (the experiment's concurrency caps lower)
    max_in_flight: int = 256

    hosts: tuple[str, ...] = ("local",)

    @abstractmethod
    async def prepare(self) -> ModelInfo:
        """Check the model is there before any note is sent; raise BackendError with the fix when not."""

    def initial_in_flight(self, host: str) -> int:
        """How many requests `host` gets at the start (what the server said of its slots, or a safe guess)."""
        return self.default_concurrency

    def cold_hosts(self) -> tuple[str, ...]:
        """The hosts (of those prepare found) that do not hold the model in memory: the first answer there would
        wait for it to load. Only a server that loads on demand (Ollama) has any."""
        return ()

    async def load(self, host: str) -> None:
        """Load the model on `host` before any note is sent there (raise BackendError when the server refuses)."""
        return None

    @abstractmethod
    async def chat(self, host: str, system: str, user: str, schema: dict[str, Any]) -> Reply: ...

    async def facts(self) -> dict[str, Any]:
        """What the servers told us during the run (e.g. the context the model was loaded with), for the close
        record; empty when there is nothing beyond the header."""
        return {}

    async def close(self) -> None:
        return None
