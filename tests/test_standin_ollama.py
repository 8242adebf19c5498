"""The stand-in Ollama server, exercised through the real ``ollama`` client (sync and async).

Run the throughput benchmark with ``python tests/test_standin_ollama.py --bench`` (see ``bench_throughput``).
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

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # the conftest normally does this; keep the file runnable on its own
    sys.path.insert(0, _HERE)

from standin_ollama import BUSY_MESSAGE, StandinOllama, spawn_standin  # noqa: E402


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
# benchmark (not a test): python tests/test_standin_ollama.py --bench
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
