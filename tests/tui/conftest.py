"""Fixtures of the TUI tests: a stand-in Ollama server the test owns, with pulls that take a moment."""

from __future__ import annotations

import pytest

from tests.standin.standin_ollama import StandinOllama


@pytest.fixture(autouse=True)
def no_slurm(request, monkeypatch):
    """The screens as on a laptop, whatever this machine has: tests of server jobs ask for `slurm` instead."""
    if "slurm" not in request.fixturenames:
        from app.cluster.slurm import Slurm

        monkeypatch.setattr(Slurm, "available", property(lambda self: False))


@pytest.fixture
def standin():
    with StandinOllama(models=("llama3", "qwen2.5:7b"), loaded=("llama3",), pull_seconds=1.0) as server:
        yield server
