"""`backend = "openai-compatible"` against stand-ins shaped like vLLM, llama-server and Ollama's /v1: what a real
server cannot be made to do on demand (429 storms, a prompt over the context, a key, a reasoning model). The real
llama.cpp server runs the demo notes in test_llama_server.py."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.helpers.runhelp import cli, journal_records, ledger_runs
from tests.helpers.support import PNEUMONIA_ANSWER
from tests.standin.standin_ollama import StandinOllama

N = 20
SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


def make_db(path, n=N, long_ids=()):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)",
                     [(i, ("CT. " + "many words of findings " * 400) if i in long_ids else f"CXR {i}: clear.")
                      for i in range(n)])
    conn.commit()
    conn.close()


def write_exp(tmp_path, hosts, model="llama3", extra="", run=""):
    exp = tmp_path / "exp.toml"
    exp.write_text(f"""
name = "oai-test"
[model]
backend = "openai-compatible"
name = "{model}"
hosts = {json.dumps(hosts)}
timeout_s = 10
{extra}
[model.options]
temperature = 0.0
seed = 7
num_ctx = 2048
num_predict = 200
[prompt]
system = "You are a medical analysis assistant."
user = "Does this note suggest pneumonia? Note: {{note}}"
{PNEUMONIA_ANSWER}
[source]
{SOURCE}
[results]
table = "pna_results"
batch_size = 10
[run]
grace_s = 5
{run}
""")
    return exp


def rows(tmp_path):
    conn = sqlite3.connect(tmp_path / "notes.db")
    out = conn.execute("SELECT note_id, valid, truncated, response FROM pna_results ORDER BY note_id").fetchall()
    conn.close()
    return out


def header(ledger_dir):
    return next(r["header"] for r in journal_records(ledger_dir) if r["type"] == "header")


@pytest.mark.parametrize("flavor,kind,version,model", [("vllm", "vllm", "0.11.2", "llama3"),
                                                       ("llama-server", "llama-server", "b6000-standin", "llama3"),
                                                       ("ollama", "ollama", "0.13.1", "llama3:latest")])
def test_each_kind_of_server_runs_the_notes_and_says_what_it_is(tmp_path, capsys, private_ledger, flavor, kind, version,
                                                                model):
    make_db(tmp_path / "notes.db")
    with StandinOllama(latency=0.01, slots=8, flavor=flavor, version="0.13.1", context_length=4096) as server:
        host = server.url + "/v1" if flavor == "vllm" else server.url  # with or without /v1
        code, out, err = cli(capsys, "--run", str(write_exp(tmp_path, [host], model=model)))
        stats = server.stats()
    assert code == 0, err
    assert stats["openai_chat"] == N and [r[1] for r in rows(tmp_path)] == [1] * N
    h = header(private_ledger)
    assert h["backend"] == "openai-compatible" and h["hosts"] == [server.url]
    assert h["server"]["kind"] == kind and h["server"]["version"] == version
    assert h["model_digest"] is None and h["server"]["digest"].startswith("none: an OpenAI-compatible server")
    if kind in ("vllm", "llama-server"):
        assert h["server"]["context_length"] == 4096
    shown = cli(capsys, "ledger", "show", ledger_runs(private_ledger)[0]["run_id"])[1]
    assert "none: an OpenAI-compatible server gives no model digest" in shown


def test_structured_output_options_and_think_are_sent_as_openai_servers_take_them(tmp_path, capsys):
    """The request carries the answer schema as response_format json_schema (strict), the options mapped, and
    think as chat_template_kwargs (true/false) or reasoning_effort (a level)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _json(self, doc, status=200):
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._json({"data": [{"id": "m"}]} if self.path == "/v1/models" else {"detail": "Not Found"},
                       200 if self.path == "/v1/models" else 404)

        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            answer = json.dumps({"response": "(2) Unlikely", "explanation": "clear"})
            self._json({"choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 30, "completion_tokens": 9}})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        make_db(tmp_path / "notes.db", n=2)
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert cli(capsys, "--run", str(write_exp(tmp_path, [url], model="m")))[0] == 0
        (tmp_path / "notes.db").unlink()
        make_db(tmp_path / "notes.db", n=1)
        assert cli(capsys, "--run", str(write_exp(tmp_path, [url], model="m", extra='think = "high"')))[0] == 0
    finally:
        srv.shutdown()
    first, last = seen[0], seen[-1]
    fmt = first["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"response", "explanation"}
    assert (first["temperature"], first["seed"], first["max_tokens"], first["model"]) == (0.0, 7, 200, "m")
    assert first["chat_template_kwargs"] == {"enable_thinking": False} and "reasoning_effort" not in first
    assert last["reasoning_effort"] == "high" and "chat_template_kwargs" not in last
    assert [m["role"] for m in first["messages"]] == ["system", "user"]


def test_429_storm_backs_off_and_every_note_is_answered(tmp_path, capsys, private_ledger):
    make_db(tmp_path / "notes.db", n=60)
    with StandinOllama(latency=0.02, slots=2, queue=1, flavor="vllm", busy_status=429) as server:
        code, out, err = cli(capsys, "--run", str(write_exp(tmp_path, [server.url], run="concurrency = 8")))
        stats = server.stats()
    assert code == 0, err
    assert stats["busy_429"] > 0 and len(rows(tmp_path)) == 60 and all(r[1] == 1 for r in rows(tmp_path))


@pytest.mark.parametrize("flavor", ["vllm", "llama-server"])
def test_a_prompt_over_the_servers_context_counts_as_truncated(tmp_path, capsys, private_ledger, flavor):
    make_db(tmp_path / "notes.db", long_ids=(3, 11))
    with StandinOllama(latency=0.0, flavor=flavor, context_length=2048) as server:
        code, out, err = cli(capsys, "--run", str(write_exp(tmp_path, [server.url])))
        stats = server.stats()
    assert code == 0, err
    assert stats["too_long_400"] == 2
    assert [(r[0], r[1], r[2]) for r in rows(tmp_path) if r[2]] == [(3, 0, 1), (11, 0, 1)]
    run = ledger_runs(private_ledger)[0]
    assert run["counts"]["truncated"] == 2 and run["counts"]["valid"] == N - 2
    assert "too_long 2 — the notes did not fit the model's context" in cli(capsys, "ledger", "show", run["run_id"])[1]


def test_an_api_key_is_read_from_the_environment_sent_and_never_written(tmp_path, capsys, private_ledger, monkeypatch):
    make_db(tmp_path / "notes.db", n=5)
    secret = "sk-test-9f8e7d6c5b4a"
    with StandinOllama(latency=0.0, flavor="vllm", api_key=secret) as server:
        exp = write_exp(tmp_path, [server.url], extra='api_key_env = "VLLM_KEY"')
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 2 and "VLLM_KEY is not set" in err and len(err.strip().splitlines()) == 1
        monkeypatch.setenv("VLLM_KEY", "wrong")
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 2 and "refused the key in VLLM_KEY (HTTP 401)" in err
        monkeypatch.setenv("VLLM_KEY", secret)
        code, out, err = cli(capsys, "--run", str(exp))
        assert code == 0, err
        monkeypatch.delenv("VLLM_KEY")
        (tmp_path / ".env").write_text(f"VLLM_KEY={secret}\n")  # or from a .env beside the experiment
        code, out, err = cli(capsys, "--run", str(exp), "--rerun-invalid")
        assert code == 0, err
    for path in private_ledger.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in out + err


def test_a_reasoning_reply_without_content_is_the_thinking_cause(tmp_path, capsys, private_ledger):
    """Ollama's /v1 with a reasoning model and a schema: content empty, `reasoning` full."""
    make_db(tmp_path / "notes.db", n=4)
    with StandinOllama(latency=0.0, version="0.13.1", models=("qwen3:8b",)) as server:
        code, out, err = cli(capsys, "--run", str(write_exp(tmp_path, [server.url], model="qwen3:8b",
                                                                   extra="think = true")))
    assert code == 1 and "the model answered only in its thinking" in err


def test_a_name_the_server_does_not_serve_and_a_server_that_is_not_one_are_one_line(tmp_path, capsys):
    make_db(tmp_path / "notes.db", n=2)
    with StandinOllama(latency=0.0, flavor="vllm", models=("Qwen/Qwen2.5-7B-Instruct",)) as server:
        code, out, err = cli(capsys, "--run", str(write_exp(tmp_path, [server.url], model="qwen2.5")))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'qwen2.5' is not served by" in err and "Qwen/Qwen2.5-7B-Instruct" in err
    code, out, err = cli(capsys, "--run", str(write_exp(tmp_path, ["http://127.0.0.1:9"])))
    assert code == 2 and "no OpenAI-compatible server answers" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text,problem", [
    ('backend = "openai-compatible"\nhosts = ["http://x:1"]', "model.name: the openai-compatible backend needs a model name"),
    ('backend = "openai-compatible"\nname = "m"', 'no OpenAI-compatible server given'),
    ('backend = "openai-compatible"\nname = "m"\nhosts = ["http://x:1/v2"]', "is not a server address"),
    ('backend = "ollama"\nname = "m"\nhosts = ["http://x:1"]\napi_key_env = "K"', "api_key_env is for openai-compatible"),
    ('backend = "llamacpp"\nthink = true', "model.think: the embedded model does not think"),
    ('backend = "ollama"\nname = "m"\nhosts = ["http://x:1"]\nthink = "max"', "model.think"),
    ('backend = "ollama"\nname = "m"\nhosts = ["http://x:1"]\nallow_remote = "yes"', "model.allow_remote"),
])
def test_bad_model_keys_are_one_line(tmp_path, capsys, text, problem):
    make_db(tmp_path / "notes.db", n=1)
    exp = write_exp(tmp_path, ["http://x:1"])
    body = exp.read_text()
    start, end = body.index("[model]\n") + len("[model]\n"), body.index("timeout_s")
    exp.write_text(body[:start] + text + "\n" + body[end:])
    code, out, err = cli(capsys, "check", str(exp))
    assert code == 2 and len(err.strip().splitlines()) == 1 and problem in err, err


@pytest.mark.parametrize("backend", ["ollama", "openai-compatible"])
def test_a_host_outside_the_cluster_gets_no_note_unless_the_site_says_it_is_inside(tmp_path, capsys, backend,
                                                                                   monkeypatch):
    make_db(tmp_path / "notes.db", n=2)
    exp = write_exp(tmp_path, ["http://8.8.8.8:11434"])
    exp.write_text(exp.read_text().replace('backend = "openai-compatible"', f'backend = "{backend}"'))
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "http://8.8.8.8:11434 is outside the cluster (it resolves to the public address 8.8.8.8): no note is " \
           "sent to it" in err and "cluster_networks" in err and "allow_remote = true" in err
    assert not (tmp_path / "notes.db").read_bytes().count(b"pna_results")  # nothing created
    config = tmp_path / "site.toml"
    config.write_text('[network]\ncluster_networks = ["8.8.8.0/24"]\n')
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(config))
    code, out, err = cli(capsys, "--run", str(exp))
    assert "outside the cluster" not in err  # a site whose nodes have public addresses: inside
