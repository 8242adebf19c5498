"""Backends by name, each imported only when an experiment asks for it (llama.cpp is an optional install)."""

from __future__ import annotations

from app.backends.base import Backend, Busy, ModelInfo, Reply, Transient
from app.experiment import Experiment

__all__ = ["make_backend", "Backend", "Busy", "ModelInfo", "Reply", "Transient"]


def make_backend(exp: Experiment) -> Backend:
    if exp.spec.model.backend == "ollama":
        from app.backends.ollama import OllamaBackend

        return OllamaBackend(exp)
    if exp.spec.model.backend == "openai-compatible":
        from app.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(exp)
    from app.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(exp)
