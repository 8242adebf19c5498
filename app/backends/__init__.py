"""Backends by name. Optional ones (llama.cpp) are imported only when an experiment asks for them."""

from __future__ import annotations

from app.backends.base import Backend, Busy, ModelInfo, Reply, Transient
from app.config import Experiment

__all__ = ["make_backend", "Backend", "Busy", "ModelInfo", "Reply", "Transient"]


def make_backend(exp: Experiment) -> Backend:
    if exp.spec.model.backend == "ollama":
        from app.backends.ollama import OllamaBackend

        return OllamaBackend(exp)
    from app.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(exp)
