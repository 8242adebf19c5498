"""The stand-in Ollama server, exercised through the real ``ollama`` client (sync and async).

Run the throughput benchmark with ``python -m tests.test_standin_ollama --bench`` (see ``bench_throughput``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import ollama
import pytest
from pydantic import BaseModel, Field, ValidationError

from tests.standin.standin_ollama import BUSY_MESSAGE, TOO_LONG_MESSAGE, StandinOllama, _ver, spawn_standin


class Medication(BaseModel):
    name: str = Field(max_length=24)
    route: Literal["oral", "iv", "topical"]
    dose_mg: float = Field(gt=0, le=1000)


class Finding(BaseModel):
    smoker: Literal["current", "former", "never", "unknown"]
    diabetic: bool
    age: int = Field(ge=0, le=120)
    summary: str = Field(min_length=3, max_length=40)
    medications: list[Medication] = Field(min_length=1, max_length=3)
    severity: Literal["mild", "moderate", "severe"] | None = None


class Node(BaseModel):  # recursive: $defs + $ref to itself
    label: Literal["a", "b"]
    children: list[Node] = []


SCHEMA = Finding.model_json_schema()
NOTE = "62 y/o man, ex-smoker, type 2 diabetes on metformin 500 mg PO BID. No chest pain."


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "Extract the fields."}, {"role": "user", "content": text}]


def run(coro):
    return asyncio.run(coro)


# ----------------------------------------------------------------------------------------------------------------
# protocol
# ----------------------------------------------------------------------------------------------------------------


def test_chat_answer_validates_and_is_deterministic():
    async def main(url):
        client = ollama.AsyncClient(host=url, timeout=5)
        first = await client.chat("llama3", messages=user(NOTE), format=SCHEMA, options={"temperature": 0})
        again = await client.chat("llama3:latest", messages=user(NOTE), format=SCHEMA)
        others = [
            (await client.chat("llama3", messages=user(f"note number {i}"), format=SCHEMA)).message.content
            for i in range(20)
        ]
        return first, again, others

    with StandinOllama() as srv:
        first, again, others = run(main(srv.url))
    assert first.done and first.done_reason == "stop" and first.message.role == "assistant"
    Finding.model_validate_json(first.message.content)
    assert again.message.content == first.message.content
    for content in others:
        Finding.model_validate_json(content)
    assert len({json.loads(c)["smoker"] for c in others}) > 1  # different notes, different answers
    assert first.prompt_eval_count == max(1, (len("Extract the fields.") + len(NOTE)) // 4)
    assert first.eval_count == len(first.message.content) // 4
    assert first.total_duration >= first.eval_duration > 0 and first.created_at.endswith("Z")


def test_recursive_defs_and_json_and_free_text():
    with StandinOllama() as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        tree = client.chat("llama3", messages=user("tree"), format=Node.model_json_schema())
        Node.model_validate_json(tree.message.content)
        as_json = client.chat("llama3", messages=user("x"), format="json")
        assert isinstance(json.loads(as_json.message.content), dict)
        free = client.chat("llama3", messages=user("x"))
        assert free.message.content and free.done_reason == "stop"


def test_stream_true_concatenates_to_the_same_answer():
    with StandinOllama() as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        parts = list(client.chat("llama3", messages=user(NOTE), format=SCHEMA, stream=True))
        whole = client.chat("llama3", messages=user(NOTE), format=SCHEMA)
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count
    assert not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_tags_show_ps_version():
    with StandinOllama(models=("llama3", "qwen2.5:7b"), version="0.11.4") as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        tags = client.list()
        names = [m.model for m in tags.models]
        assert names == ["llama3:latest", "qwen2.5:7b"]
        for m in tags.models:
            assert m.digest == hashlib.sha256(m.model.encode()).hexdigest()
            assert m.size > 0 and m.modified_at is not None
            assert m.details.format == "gguf" and m.details.quantization_level == "Q4_0"
        assert tags.models[1].details.parameter_size == "7.0B"
        raw_tags = httpx.get(srv.url + "/api/tags").json()["models"][0]
        assert raw_tags["name"] == "llama3:latest" and len(raw_tags["digest"]) == 64

        show = client.show("llama3")
        assert show.details.family == "llama" and show.modelinfo["general.architecture"] == "llama"
        assert show.template and show.parameters
        raw_show = httpx.post(srv.url + "/api/show", json={"model": "llama3"}).json()
        assert "digest" not in raw_show and {"details", "model_info", "parameters", "template"} <= raw_show.keys()

        ps = client.ps()
        assert [m.model for m in ps.models] == names and ps.models[0].expires_at is not None

        assert httpx.get(srv.url + "/api/version").json() == {"version": "0.11.4"}
        srv.configure(version="0.12.0", models=("mistral",))
        assert httpx.get(srv.url + "/api/version").json() == {"version": "0.12.0"}
        assert [m.model for m in client.list().models] == ["mistral:latest"]
        assert httpx.get(srv.url + "/").text == "Ollama is running"


def test_unknown_model_is_404():
    with StandinOllama() as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        with pytest.raises(ollama.ResponseError) as chat_err:
            client.chat("llama9", messages=user("x"), format=SCHEMA)
        assert chat_err.value.status_code == 404
        assert chat_err.value.error == 'model "llama9" not found, try pulling it first'
        with pytest.raises(ollama.ResponseError) as show_err:
            client.show("llama9")
        assert show_err.value.status_code == 404 and show_err.value.error == "model 'llama9' not found"

        async def main():
            with pytest.raises(ollama.ResponseError) as e:
                await ollama.AsyncClient(host=srv.url, timeout=5).chat("llama9", messages=user("x"))
            return e.value.status_code

        assert run(main()) == 404
        assert srv.stats()["not_found_404"] == 3


# ----------------------------------------------------------------------------------------------------------------
# slots, queue, timing
# ----------------------------------------------------------------------------------------------------------------


def test_slots_and_queue_give_503_beyond_the_queue():
    async def main(url):
        client = ollama.AsyncClient(host=url, timeout=5)
        return await asyncio.gather(
            *(client.chat("llama3", messages=user(f"n{i}"), format=SCHEMA) for i in range(6)),
            return_exceptions=True,
        )

    with StandinOllama(latency=0.3, slots=2, queue=1) as srv:
        results = run(main(srv.url))
        stats = srv.stats()
    busy = [r for r in results if isinstance(r, ollama.ResponseError)]
    ok = [r for r in results if isinstance(r, ollama.ChatResponse)]
    assert len(busy) == 3 and len(ok) == 3, results
    assert all(e.status_code == 503 and e.error == BUSY_MESSAGE for e in busy)
    assert stats["max_active"] == 2 and stats["max_queued"] == 1
    assert stats["busy_503"] == 3 and stats["served"] == 3 and stats["chat"] == 6


def test_eight_requests_on_four_slots_take_two_latencies():
    async def main(url):
        client = ollama.AsyncClient(host=url, timeout=5)
        t0 = time.perf_counter()
        await asyncio.gather(*(client.chat("llama3", messages=user(f"n{i}"), format=SCHEMA) for i in range(8)))
        return time.perf_counter() - t0

    with StandinOllama(latency=0.2, slots=4) as srv:
        elapsed = run(main(srv.url))
        assert srv.stats()["max_active"] == 4
    assert 0.35 <= elapsed <= 1.0, elapsed


def test_queue_is_fifo():
    async def main(url):
        client = ollama.AsyncClient(host=url, timeout=5)
        done: list[int] = []

        async def one(i):
            await asyncio.sleep(0.03 * i)
            await client.chat("llama3", messages=user(f"n{i}"))
            done.append(i)

        await asyncio.gather(*(one(i) for i in range(5)))
        return done

    with StandinOllama(latency=0.1, slots=1, queue=8) as srv:
        assert run(main(srv.url)) == [0, 1, 2, 3, 4]
        assert srv.stats()["max_queued"] >= 2


def test_many_concurrent_connections():
    # 10 clients x 15 requests: one AsyncClient with 150 requests in flight spends seconds of CPU in httpcore's
    # connection pool (O(connections x queued requests) per event, httpcore 1.0.9), which is not what we test here.
    async def main(url):
        clients = [ollama.AsyncClient(host=url, timeout=10) for _ in range(10)]
        return await asyncio.gather(*(clients[i % 10].chat("llama3", messages=user(f"n{i}")) for i in range(150)))

    with StandinOllama(latency=0.2, slots=200) as srv:
        results = run(main(srv.url))
        stats = srv.stats()
    assert len(results) == 150 and stats["served"] == 150
    assert stats["max_active"] >= 100  # 150 connections open at once


def test_configure_live_and_control_endpoint():
    with StandinOllama(slots=1, queue=0) as srv:
        srv.configure(latency=0.2)
        client = ollama.Client(host=srv.url, timeout=5)
        t0 = time.perf_counter()
        client.chat("llama3", messages=user("x"))
        assert time.perf_counter() - t0 >= 0.18
        cfg = httpx.post(srv.url + "/_control", json={"latency": 0, "slots": 3}).json()
        assert cfg["latency"] == 0 and cfg["slots"] == 3 and srv.config()["slots"] == 3
        assert httpx.post(srv.url + "/_control", json={"nope": 1}).status_code == 400
        with pytest.raises(ValueError):
            srv.configure(nope=1)
        with pytest.raises(ValueError):
            srv.configure(error_rate=2)
        stats = httpx.get(srv.url + "/_stats").json()
        assert stats["chat"] == 1 and stats["requests"] == 1  # control endpoints are not counted
        httpx.post(srv.url + "/_reset_stats")
        assert srv.stats()["chat"] == 0


# ----------------------------------------------------------------------------------------------------------------
# wrong, broken and failing answers
# ----------------------------------------------------------------------------------------------------------------


def test_invalid_rate_alternates_broken_json_and_wrong_enum():
    with StandinOllama(invalid_rate=1) as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        contents = [client.chat("llama3", messages=user(NOTE), format=SCHEMA).message.content for _ in range(4)]
        assert srv.stats()["invalid"] == 4
    for content in contents:
        with pytest.raises(ValidationError):
            Finding.model_validate_json(content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(contents[0])
    wrong = json.loads(contents[1])  # valid JSON, an enum value that is not allowed
    assert wrong["smoker"] not in ("current", "former", "never", "unknown")


def test_cutoff_rate_and_num_predict_give_done_reason_length():
    with StandinOllama(cutoff_rate=1) as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        cut = client.chat("llama3", messages=user(NOTE), format=SCHEMA)
        assert cut.done_reason == "length"
        with pytest.raises(ValidationError):
            Finding.model_validate_json(cut.message.content)
        srv.configure(cutoff_rate=0)
        short = client.chat("llama3", messages=user(NOTE), format=SCHEMA, options={"num_predict": 5})
        assert short.done_reason == "length" and len(short.message.content) == 20 and short.eval_count == 5
        assert srv.stats()["cutoff"] == 2


def test_error_rate_gives_500():
    with StandinOllama(error_rate=1) as srv:
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=srv.url, timeout=5).chat("llama3", messages=user(NOTE), format=SCHEMA)
        assert e.value.status_code == 500 and e.value.error
        assert srv.stats()["errors_500"] == 1 and srv.stats()["active"] == 0


def test_prompt_eval_count_is_capped_at_num_ctx():
    long_note = "x" * 100_000
    with StandinOllama() as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        capped = client.chat("llama3", messages=user(long_note), format=SCHEMA, options={"num_ctx": 4096})
        default = client.chat("llama3", messages=user(long_note), format=SCHEMA)
        roomy = client.chat("llama3", messages=user(long_note), format=SCHEMA, options={"num_ctx": 32768})
        assert srv.stats()["truncated"] == 2
    assert capped.prompt_eval_count == 4096
    assert default.prompt_eval_count == 2048
    assert roomy.prompt_eval_count == (100_000 + len("Extract the fields.")) // 4


def test_hang_until_client_timeout_then_slot_is_freed():
    async def main(url):
        client = ollama.AsyncClient(host=url, timeout=0.5)
        t0 = time.perf_counter()
        with pytest.raises(httpx.TimeoutException):  # httpx.ReadTimeout, not wrapped by ollama
            await client.chat("llama3", messages=user(NOTE), format=SCHEMA)
        return time.perf_counter() - t0

    with StandinOllama(hang_rate=1, slots=1) as srv:
        elapsed = run(main(srv.url))
        assert 0.45 <= elapsed < 2.0
        deadline = time.monotonic() + 2
        while srv.stats()["active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = srv.stats()
        assert stats["hung"] == 1 and stats["active"] == 0 and stats["cancelled"] == 1


def test_drop_rate_closes_the_connection_mid_answer():
    with StandinOllama(drop_rate=1) as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        for _ in range(2):  # first without a byte, then after half a response
            with pytest.raises(httpx.RemoteProtocolError):
                client.chat("llama3", messages=user(NOTE), format=SCHEMA)
        srv.configure(drop_rate=0)
        assert client.chat("llama3", messages=user(NOTE), format=SCHEMA).done  # the client recovers
        assert srv.stats()["dropped"] == 2


# ----------------------------------------------------------------------------------------------------------------
# subprocess
# ----------------------------------------------------------------------------------------------------------------


def test_spawned_server_can_be_sigkilled():
    proc = spawn_standin(latency=0.0, slots=2, models=("llama3", "phi3:mini"))
    try:
        assert proc.url.startswith("http://127.0.0.1:") and proc.pid > 0
        client = ollama.Client(host=proc.url, timeout=5)
        Finding.model_validate_json(client.chat("phi3:mini", messages=user(NOTE), format=SCHEMA).message.content)
        proc.configure(version="9.9.9", error_rate=1)
        assert httpx.get(proc.url + "/api/version").json() == {"version": "9.9.9"}
        with pytest.raises(ollama.ResponseError):
            client.chat("llama3", messages=user(NOTE))
        stats = proc.stats()
        assert (
            stats["chat"] == 2
            and stats["errors_500"] == 1
            and stats["by_model"]
            == {
                "phi3:mini": 1,
                "llama3:latest": 1,
            }
        )
        assert proc.cpu_seconds() > 0
        proc.kill()
        assert proc.proc.returncode == -9
        with pytest.raises(ConnectionError):  # ollama wraps httpx.ConnectError in the builtin ConnectionError
            client.chat("llama3", messages=user(NOTE))
    finally:
        proc.stop()


def test_spawned_server_sigkilled_mid_request():
    async def main(proc):
        client = ollama.AsyncClient(host=proc.url, timeout=5)
        asyncio.get_running_loop().call_later(0.2, proc.kill)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.chat("llama3", messages=user(NOTE))

    with spawn_standin(latency=2) as proc:
        run(main(proc))


def test_refused_connection_raises_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionError):
        ollama.Client(host=f"http://127.0.0.1:{port}", timeout=2).list()


# ----------------------------------------------------------------------------------------------------------------
# versions: thinking, truncate, cloud models
# ----------------------------------------------------------------------------------------------------------------


def chat_body(model: str, text: str = NOTE, **extra) -> dict:
    return {"model": model, "messages": user(text), "stream": False, **extra}


def test_versions_compare_numerically():
    assert _ver("0.12.10") > _ver("0.12.6") > _ver("0.12.4") > _ver("0.11.10") > _ver("0.9")
    assert _ver("v0.13.1-rc2") == (0, 13, 1) and _ver("0.12") == (0, 12, 0)


def test_thinking_model_with_a_format_answers_only_thinking_from_0_12_4():
    with StandinOllama(models=("qwen3:8b", "llama3"), version="0.13.1") as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        caps = httpx.post(srv.url + "/api/show", json={"model": "qwen3:8b"}).json()["capabilities"]
        assert caps == ["completion", "tools", "thinking"]
        assert httpx.post(srv.url + "/api/show", json={"model": "llama3"}).json()["capabilities"] == ["completion", "tools"]
        raw = httpx.post(srv.url + "/api/chat", json=chat_body("qwen3:8b", format=SCHEMA)).json()
        assert raw["message"]["content"] == "" and raw["message"]["thinking"].startswith("Let me consider the note.")
        assert raw["done_reason"] == "stop"
        gen = httpx.post(srv.url + "/api/generate", json={"model": "qwen3:8b", "prompt": NOTE, "format": "json",
                                                          "stream": False}).json()
        assert gen["response"] == "" and gen["thinking"]
        free = client.chat("qwen3:8b", messages=user(NOTE))  # no format: thinking and content
        assert free.message.content.startswith("Stand-in answer") and free.message.thinking
        plain = client.chat("llama3", messages=user(NOTE), format=SCHEMA)  # a model that cannot think
        Finding.model_validate_json(plain.message.content)
        assert plain.message.thinking is None
        stats = srv.stats()
        assert stats["thinking_only"] == 2 and stats["think_sent"] == 0

        srv.configure(version="0.11.10")  # before 0.12.4 thinking needs think: true
        old = httpx.post(srv.url + "/api/chat", json=chat_body("qwen3:8b", format=SCHEMA)).json()
        assert "thinking" not in old["message"]
        Finding.model_validate_json(old["message"]["content"])
        srv.configure(version="0.12.10")  # numerically after 0.12.4 (a string compare says before)
        assert httpx.post(srv.url + "/api/chat", json=chat_body("qwen3:8b", format=SCHEMA)).json()["message"]["content"] == ""


def test_think_false_answers_normally_and_think_true_asks_for_it():
    with StandinOllama(models=("qwen3:8b", "deepseek-r1:7b"), version="0.13.1") as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        off = client.chat("qwen3:8b", messages=user(NOTE), format=SCHEMA, think=False)
        Finding.model_validate_json(off.message.content)
        assert off.message.thinking is None
        raw = httpx.post(srv.url + "/api/chat", json=chat_body("deepseek-r1:7b", format=SCHEMA, think=False)).json()
        assert "thinking" not in raw["message"]
        srv.configure(version="0.11.10")
        on = client.chat("qwen3:8b", messages=user(NOTE), format=SCHEMA, think=True)
        assert on.message.content == "" and on.message.thinking
        parts = list(client.chat("qwen3:8b", messages=user(NOTE), think=True, stream=True))
        assert "".join(p.message.thinking or "" for p in parts) == on.message.thinking
        assert "".join(p.message.content for p in parts).startswith("Stand-in answer") and parts[-1].done
        short = client.chat("qwen3:8b", messages=user(NOTE), think=True, options={"num_predict": 8})
        assert short.done_reason == "length" and short.message.content == "" and len(short.message.thinking) == 32
        stats = srv.stats()
        assert stats["think_sent"] == 5 and stats["thinking_only"] == 2 and stats["cutoff"] == 1


def test_think_on_a_model_that_cannot_think_is_400():
    with StandinOllama(models=("llama3", "qwen2.5:7b"), version="0.13.1") as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        with pytest.raises(ollama.ResponseError) as e:
            client.chat("llama3", messages=user(NOTE), think=True)
        assert e.value.status_code == 400 and e.value.error == '"llama3" does not support thinking'
        r = httpx.post(srv.url + "/api/generate", json={"model": "qwen2.5:7b", "prompt": "x", "think": True})
        assert r.status_code == 400 and r.json() == {"error": '"qwen2.5:7b" does not support thinking'}
        assert client.chat("llama3", messages=user(NOTE), think=False).message.content  # false is fine from 0.12.5
        srv.configure(version="0.12.4")  # ... but 0.12.4 refused any think field
        r = httpx.post(srv.url + "/api/chat", json=chat_body("llama3", think=False))
        assert r.status_code == 400
        assert r.json() == {"error": "registry.ollama.ai/library/llama3:latest does not support thinking"}
        srv.configure(version="0.11.10")
        r = httpx.post(srv.url + "/api/chat", json=chat_body("llama3", think=True))
        assert r.json() == {"error": "registry.ollama.ai/library/llama3:latest does not support thinking"}
        assert httpx.post(srv.url + "/api/chat", json=chat_body("llama3", think=False)).status_code == 200
        srv.configure(version="0.8.0")  # think is an unknown field before 0.9
        assert httpx.post(srv.url + "/api/chat", json=chat_body("llama3", think=True)).status_code == 200
        stats = srv.stats()
        assert stats["bad_request_400"] == 4 and stats["think_sent"] == 7 and stats["served"] == 3


def test_think_levels_only_for_gpt_oss():
    with StandinOllama(models=("gpt-oss:20b", "qwen3:8b", "llama3"), version="0.13.1") as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        high = client.chat("gpt-oss:20b", messages=user(NOTE), format=SCHEMA, think="high")
        assert high.message.content == "" and high.message.thinking
        low = client.chat("gpt-oss:20b", messages=user(NOTE), think="low")
        assert low.message.content and low.message.thinking
        stubborn = client.chat("gpt-oss:20b", messages=user(NOTE), format=SCHEMA, think=False)  # harmony always reasons
        assert stubborn.message.content == "" and stubborn.message.thinking
        for model, level, error in (
            ("qwen3:8b", "high", 'think value "high" is not supported for this model'),
            ("llama3", "low", '"llama3" does not support thinking'),
            ("qwen3:8b", "max", 'invalid think value: "max" (must be "high", "medium", "low", true, or false)'),
            ("qwen3:8b", 1, 'think must be a boolean or string ("high", "medium", "low", true, or false)'),
        ):
            r = httpx.post(srv.url + "/api/chat", json=chat_body(model, think=level))
            assert (r.status_code, r.json()) == (400, {"error": error}), (model, level)
        r = httpx.post(srv.url + "/api/generate", json={"model": "llama3", "prompt": "x", "think": "low", "stream": False})
        assert r.json() == {"error": 'think value "low" is not supported for this model'}  # generate checks the level first
        srv.configure(version="0.10.1")  # think was a bool then
        r = httpx.post(srv.url + "/api/chat", json=chat_body("gpt-oss:20b", think="high"))
        assert r.json() == {"error": "json: cannot unmarshal string into Go struct field ChatRequest.think of type bool"}
        assert srv.stats()["bad_request_400"] == 6


def test_truncate_false_is_400_from_0_12_6_and_clipped_before():
    long_note = "x" * 20_000  # ~5000 tokens
    with StandinOllama(version="0.13.1", latency=0.5) as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        t0 = time.perf_counter()
        r = httpx.post(srv.url + "/api/chat", json=chat_body("llama3", long_note, truncate=False, options={"num_ctx": 4096}))
        assert (r.status_code, r.json()) == (400, {"error": TOO_LONG_MESSAGE})
        assert time.perf_counter() - t0 < 0.4  # refused before it took a slot
        fits = httpx.post(srv.url + "/api/chat", json=chat_body("llama3", long_note, truncate=False, options={"num_ctx": 8192}))
        assert fits.status_code == 200 and fits.json()["prompt_eval_count"] == (20_000 + len("Extract the fields.")) // 4
        clipped = client.chat("llama3", messages=user(long_note), options={"num_ctx": 4096})  # truncate defaults to true
        assert clipped.prompt_eval_count == 4096
        stats = srv.stats()
        assert stats["too_long_400"] == 1 and stats["truncated"] == 1 and stats["bad_request_400"] == 0
        srv.configure(version="0.11.10", latency=0)  # the field is unknown there: clipped as always
        old = httpx.post(srv.url + "/api/chat", json=chat_body("llama3", long_note, truncate=False, options={"num_ctx": 4096}))
        assert old.status_code == 200 and old.json()["prompt_eval_count"] == 4096
        assert srv.stats()["truncated"] == 2


def test_cloud_models_are_listed_from_0_12_and_their_chats_counted():
    with StandinOllama(models=("llama3",), cloud_models=("gpt-oss:120b-cloud", "glm-4.6:cloud"), version="0.13.1") as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        tags = httpx.get(srv.url + "/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["llama3:latest", "gpt-oss:120b-cloud", "glm-4.6:cloud"]
        assert "remote_host" not in tags[0]
        assert tags[1]["remote_model"] == "gpt-oss:120b" and tags[1]["remote_host"] == "https://ollama.com:443"
        assert tags[1]["size"] == 384 and tags[2]["remote_model"] == "glm-4.6"
        show = httpx.post(srv.url + "/api/show", json={"model": "gpt-oss:120b-cloud"}).json()
        assert show["remote_model"] == "gpt-oss:120b" and show["remote_host"] == "https://ollama.com:443"
        assert "thinking" in show["capabilities"]
        assert [m.model for m in client.ps().models] == ["llama3:latest"]  # they do not run here
        answer = httpx.post(srv.url + "/api/chat", json=chat_body("glm-4.6:cloud", format=SCHEMA)).json()
        Finding.model_validate_json(answer["message"]["content"])
        assert answer["remote_model"] == "glm-4.6" and answer["remote_host"] == "https://ollama.com:443"
        client.chat("llama3", messages=user(NOTE))
        assert srv.stats()["remote_chat"] == 1
        client.delete("glm-4.6:cloud")
        assert [m.model for m in client.list().models] == ["llama3:latest", "gpt-oss:120b-cloud"]

        srv.configure(version="0.11.10")  # no cloud models before 0.12
        assert [m.model for m in client.list().models] == ["llama3:latest"]
        with pytest.raises(ollama.ResponseError) as e:
            client.chat("gpt-oss:120b-cloud", messages=user(NOTE))
        assert e.value.status_code == 404
        assert srv.stats()["remote_chat"] == 1


def test_ps_reports_the_num_ctx_of_the_last_chat():
    with StandinOllama(models=("llama3", "mistral"), context_length=4096) as srv:
        client = ollama.Client(host=srv.url, timeout=5)
        assert {m.model: m.context_length for m in client.ps().models} == {"llama3:latest": 4096, "mistral:latest": 4096}
        client.chat("llama3", messages=user(NOTE), options={"num_ctx": 16384})
        assert {m.model: m.context_length for m in client.ps().models} == {"llama3:latest": 16384, "mistral:latest": 4096}
        client.chat("llama3", messages=user(NOTE))  # reloaded with the default
        assert client.ps().models[0].context_length == 4096


# ----------------------------------------------------------------------------------------------------------------
# the OpenAI-compatible API and the other servers
# ----------------------------------------------------------------------------------------------------------------


def oai_body(model: str, text: str = NOTE, schema: dict | None = SCHEMA, **extra) -> dict:
    body = {"model": model, "messages": user(text), "temperature": 0, "seed": 1, "top_p": 1, **extra}
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "finding", "schema": schema, "strict": True}}
    return body


def test_openai_api_on_ollama():
    with StandinOllama(models=("llama3", "qwen3:8b"), version="0.13.1", context_length=4096) as srv:
        models = httpx.get(srv.url + "/v1/models").json()
        assert models["object"] == "list"
        assert [(m["id"], m["object"], m["owned_by"]) for m in models["data"]] == [
            ("llama3:latest", "model", "library"), ("qwen3:8b", "model", "library")]
        assert all(isinstance(m["created"], int) for m in models["data"])

        r = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3"))
        doc = r.json()
        assert r.status_code == 200 and doc["id"].startswith("chatcmpl-") and doc["object"] == "chat.completion"
        assert doc["model"] == "llama3" and isinstance(doc["created"], int)
        choice = doc["choices"][0]
        assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
        Finding.model_validate_json(choice["message"]["content"])
        native = ollama.Client(host=srv.url, timeout=5).chat("llama3", messages=user(NOTE), format=SCHEMA)
        assert choice["message"]["content"] == native.message.content  # the same answer by either API
        usage = doc["usage"]
        assert usage["prompt_tokens"] == (len("Extract the fields.") + len(NOTE)) // 4
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        as_json = httpx.post(srv.url + "/v1/chat/completions",
                             json=oai_body("llama3", schema=None, response_format={"type": "json_object"})).json()
        assert isinstance(json.loads(as_json["choices"][0]["message"]["content"]), dict)

        cut = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3", max_tokens=5)).json()
        assert cut["choices"][0]["finish_reason"] == "length" and len(cut["choices"][0]["message"]["content"]) == 20

        thinking = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("qwen3:8b")).json()["choices"][0]["message"]
        assert thinking["content"] == "" and thinking["reasoning"].startswith("Let me consider")
        off = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("qwen3:8b", reasoning_effort="none")).json()
        Finding.model_validate_json(off["choices"][0]["message"]["content"])
        ignored = httpx.post(srv.url + "/v1/chat/completions",  # Ollama does not read chat_template_kwargs
                             json=oai_body("qwen3:8b", chat_template_kwargs={"enable_thinking": False})).json()
        assert ignored["choices"][0]["message"]["content"] == ""

        long = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3", "x" * 40_000)).json()
        assert long["usage"]["prompt_tokens"] == 4096  # clipped silently, as Ollama does

        missing = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama9"))
        assert missing.status_code == 404 and missing.json() == {"error": {
            "message": 'model "llama9" not found, try pulling it first', "type": "api_error", "param": None, "code": None}}
        level = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("qwen3:8b", reasoning_effort="high"))
        assert level.status_code == 400 and level.json()["error"]["message"] == (
            'think value "high" is not supported for this model')
        bad = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("qwen3:8b", reasoning_effort="max"))
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3", stream=True)).status_code == 400
        stats = srv.stats()
    assert stats["openai_chat"] == 11 and stats["chat"] == 1 and stats["thinking_only"] == 2
    assert stats["truncated"] == 1 and stats["not_found_404"] == 1 and stats["cutoff"] == 1


def test_vllm_flavor():
    with StandinOllama(flavor="vllm", models=("Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"), context_length=4096) as srv:
        health = httpx.get(srv.url + "/health")
        assert health.status_code == 200 and health.content == b""
        assert httpx.get(srv.url + "/version").json() == {"version": "0.11.2"}
        for path in ("/api/tags", "/api/version", "/"):
            r = httpx.get(srv.url + path)
            assert (r.status_code, r.json()) == (404, {"detail": "Not Found"}), path
        assert httpx.post(srv.url + "/api/chat", json=chat_body("Qwen/Qwen3-8B")).status_code == 404
        models = httpx.get(srv.url + "/v1/models").json()["data"]
        assert [(m["id"], m["root"], m["max_model_len"], m["owned_by"]) for m in models] == [
            ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B", 4096, "vllm"),
            ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", 4096, "vllm")]

        llama = "meta-llama/Llama-3.1-8B-Instruct"
        doc = httpx.post(srv.url + "/v1/chat/completions", json=oai_body(llama, max_tokens=1000)).json()
        message = doc["choices"][0]["message"]
        Finding.model_validate_json(message["content"])
        assert message["reasoning_content"] is None and doc["choices"][0]["finish_reason"] == "stop" and doc["model"] == llama
        cut = httpx.post(srv.url + "/v1/chat/completions", json=oai_body(llama, max_tokens=5)).json()["choices"][0]
        assert cut["finish_reason"] == "length" and len(cut["message"]["content"]) == 20

        # a thinking model: structured output after the reasoning; the content is lost only when max_tokens runs out
        qwen = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("Qwen/Qwen3-8B")).json()["choices"][0]["message"]
        Finding.model_validate_json(qwen["content"])
        assert qwen["reasoning_content"].startswith("Let me consider")
        starved = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("Qwen/Qwen3-8B", max_tokens=10)).json()
        assert starved["choices"][0]["finish_reason"] == "length" and starved["choices"][0]["message"]["content"] is None
        off = httpx.post(srv.url + "/v1/chat/completions",
                         json=oai_body("Qwen/Qwen3-8B", chat_template_kwargs={"enable_thinking": False})).json()
        assert off["choices"][0]["message"]["reasoning_content"] is None

        missing = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3"))
        assert missing.status_code == 404 and missing.json() == {"error": {
            "message": "The model `llama3` does not exist.", "type": "NotFoundError", "param": None, "code": 404}}
        prompt = (len("Extract the fields.") + 20_000) // 4
        over = httpx.post(srv.url + "/v1/chat/completions", json=oai_body(llama, "x" * 20_000))
        assert over.status_code == 400 and over.json() == {"error": {
            "message": f"This model's maximum context length is 4096 tokens. However, your request has {prompt} input "
                       "tokens. Please reduce the length of the input messages.",
            "type": "BadRequestError", "param": None, "code": 400}}
        prompt = (len("Extract the fields.") + 8_000) // 4
        budget = httpx.post(srv.url + "/v1/chat/completions", json=oai_body(llama, "x" * 8_000, max_tokens=3000))
        assert budget.status_code == 400 and budget.json()["error"]["message"] == (
            f"'max_tokens' or 'max_completion_tokens' is too large: 3000. This model's maximum context length is 4096 "
            f"tokens and your request has {prompt} input tokens (3000 > 4096 - {prompt}).")
        stats = srv.stats()
    assert stats["too_long_400"] == 2 and stats["openai_chat"] == 8 and stats["thinking_only"] == 1


def test_llama_server_flavor():
    with StandinOllama(flavor="llama-server", models=("qwen2.5-7b-instruct",), context_length=4096, slots=3) as srv:
        assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
        props = httpx.get(srv.url + "/props").json()
        assert props["default_generation_settings"]["n_ctx"] == 4096 and props["total_slots"] == 3
        assert props["model_path"] == "/models/qwen2.5-7b-instruct.gguf" and props["build_info"] == "b6000-standin"
        models = httpx.get(srv.url + "/v1/models").json()["data"]
        assert [(m["id"], m["owned_by"], m["meta"]["n_ctx_train"]) for m in models] == [
            ("qwen2.5-7b-instruct", "llamacpp", 4096)]
        for path in ("/api/tags", "/api/version"):
            r = httpx.get(srv.url + path)
            assert (r.status_code, r.json()["error"]["type"]) == (404, "not_found_error"), path

        doc = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("anything")).json()  # the name is not checked
        Finding.model_validate_json(doc["choices"][0]["message"]["content"])
        assert doc["choices"][0]["finish_reason"] == "stop" and doc["model"] == "anything" and doc["timings"]
        cut = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("anything", max_tokens=5)).json()
        assert cut["choices"][0]["finish_reason"] == "length"
        prompt = (len("Extract the fields.") + 20_000) // 4
        over = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("anything", "x" * 20_000))
        assert over.status_code == 400 and over.json() == {"error": {
            "code": 400, "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": 4096}}
        stats = srv.stats()
    assert stats["too_long_400"] == 1 and stats["served"] == 2 and stats["by_model"] == {"anything": 3}


def test_busy_status_429_on_both_apis():
    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            native = [client.post("/api/chat", json=chat_body("llama3", f"n{i}")) for i in range(2)]
            oai = [client.post("/v1/chat/completions", json=oai_body("llama3", f"o{i}")) for i in range(2)]
            return await asyncio.gather(*native, *oai)

    with StandinOllama(latency=0.5, slots=1, queue=0, busy_status=429) as srv:
        results = run(main(srv.url))
        stats = srv.stats()
    assert sorted(r.status_code for r in results) == [200, 429, 429, 429]
    busy = [r.json() for r in results if r.status_code == 429]
    assert {"error": BUSY_MESSAGE} in busy
    assert {"error": {"message": BUSY_MESSAGE, "type": "api_error", "param": None, "code": None}} in busy
    assert stats["busy_429"] == 3 and stats["busy_503"] == 0


def test_api_key():
    with StandinOllama(api_key="sekrit") as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3"))
        assert r.status_code == 401
        assert r.json() == {"error": {"message": "Invalid API key", "type": "AuthenticationError", "code": 401}}
        r = httpx.get(srv.url + "/api/tags", headers={"Authorization": "Bearer wrong"})
        assert (r.status_code, r.json()) == (401, {"error": "unauthorized"})
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=srv.url, timeout=5).chat("llama3", messages=user(NOTE))
        assert e.value.status_code == 401
        client = ollama.Client(host=srv.url, timeout=5, headers={"Authorization": "Bearer sekrit"})
        assert client.chat("llama3", messages=user(NOTE)).message.content
        ok = httpx.post(srv.url + "/v1/chat/completions", json=oai_body("llama3"), headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 404  # let in, but Ollama has no /health
        assert srv.stats()["unauthorized_401"] == 3  # the control endpoints need no key
        srv.configure(flavor="vllm", models=("m",))
        assert httpx.get(srv.url + "/v1/models").json() == {"error": "Unauthorized"}
        assert httpx.get(srv.url + "/health").status_code == 200 and httpx.get(srv.url + "/version").status_code == 200
        srv.configure(flavor="llama-server")
        assert httpx.get(srv.url + "/v1/models").status_code == 200  # public on llama-server
        r = httpx.get(srv.url + "/props")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert srv.stats()["unauthorized_401"] == 5


def test_new_knobs_through_control_and_a_spawned_server():
    with StandinOllama() as srv:
        cfg = httpx.post(srv.url + "/_control", json={"flavor": "llama-server", "busy_status": 429,
                                                      "thinking_models": ["phi4-reasoning"], "cloud_models": "a:cloud"}).json()
        assert (cfg["flavor"], cfg["busy_status"], cfg["thinking_models"], cfg["cloud_models"]) == (
            "llama-server", 429, ["phi4-reasoning"], ["a:cloud"])
        assert httpx.post(srv.url + "/_control", json={"flavor": "tgi"}).status_code == 400
        assert httpx.post(srv.url + "/_control", json={"busy_status": 200}).status_code == 400

    proc = spawn_standin(flavor="vllm", version="0.13.1", cloud_models=("gpt-oss:120b-cloud",), busy_status=429,
                         api_key="k", models=("llama3",), slots=1, queue=0, latency=1.0)
    try:
        cfg = proc.config()
        assert (cfg["flavor"], cfg["version"], cfg["cloud_models"], cfg["busy_status"], cfg["api_key"]) == (
            "vllm", "0.13.1", ["gpt-oss:120b-cloud"], 429, "k")
        assert httpx.get(proc.url + "/version").json() == {"version": "0.11.2"}
        key = {"Authorization": "Bearer k"}
        assert httpx.post(proc.url + "/v1/chat/completions", json=oai_body("llama3")).status_code == 401
        with ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(lambda i: httpx.post(proc.url + "/v1/chat/completions", headers=key,
                                                         json=oai_body("llama3", f"n{i}")).status_code, range(2)))
        assert codes == [200, 429]
        proc.configure(flavor="ollama", api_key="")
        tags = httpx.get(proc.url + "/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["llama3:latest", "gpt-oss:120b-cloud"]
    finally:
        proc.stop()


# ----------------------------------------------------------------------------------------------------------------
# benchmark (not a test): python -m tests.test_standin_ollama --bench
# ----------------------------------------------------------------------------------------------------------------


def bench_throughput(*, n: int = 4000, clients: int = 32, slots: int = 64, in_process: bool = False) -> dict:
    """requests/s of small structured chats at latency 0 from a thread pool of ``ollama.Client``."""
    srv = StandinOllama(slots=slots).start() if in_process else spawn_standin(slots=slots)
    try:
        local = threading.local()

        def one(i: int) -> None:
            if not hasattr(local, "c"):
                local.c = ollama.Client(host=srv.url, timeout=10)
            local.c.chat("llama3", messages=user(f"note {i}"), format=SCHEMA)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(200)))  # warm up: connections, imports
            srv.configure(latency=0)
            srv.reset_stats()
            cpu0 = None if in_process else srv.cpu_seconds()
            c0 = os.times()
            t0 = time.perf_counter()
            list(pool.map(one, range(n)))
            wall = time.perf_counter() - t0
            c1 = os.times()
            cpu1 = None if in_process else srv.cpu_seconds()
        stats = srv.stats()
        out = {
            "mode": "in-process" if in_process else "subprocess",
            "requests": n,
            "clients": clients,
            "wall_s": round(wall, 3),
            "rps": round(n / wall, 1),
            "client_cpu_ms_per_req": round((c1.user + c1.system - c0.user - c0.system) / n * 1000, 3),
            "served": stats["served"],
            "max_active": stats["max_active"],
        }
        if cpu0 is not None:
            out["server_cpu_ms_per_req"] = round((cpu1 - cpu0) / n * 1000, 3)
            out["server_cpu_share"] = round((cpu1 - cpu0) / wall, 2)
        return out
    finally:
        srv.stop()


if __name__ == "__main__" and "--bench" in sys.argv:
    for mode in (False, True):
        print(json.dumps(bench_throughput(in_process=mode)), flush=True)
