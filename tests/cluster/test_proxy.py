"""The authenticating proxy of a server job, in front of the stand-in Ollama: no token, 401 (counted); the token,
found by URL in the owner-only job record, passes for health probes, pulls (streamed) and whole runs."""

from __future__ import annotations

import asyncio
import json
import stat
import threading

import httpx
import pytest

from app.cluster import tokens
from app.cluster.proxy import AuthProxy
from tests.helpers.runhelp import cli, journal_records
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import StandinOllama

SQLITE_SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'


class ProxyThread:
    """An AuthProxy on its own event loop in a thread, as it runs in its own process inside a job."""

    def __init__(self, upstream_port: int, token: str):
        self.proxy = AuthProxy(token, "127.0.0.1", upstream_port, log=None)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.proxy.start("127.0.0.1", 0))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def user_config(tmp_path, monkeypatch):
    path = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("NOTES_TUI_CONFIG", str(path))
    return path


@pytest.fixture
def guarded(user_config):
    """A stand-in behind the proxy, and the job record that holds its token."""
    with StandinOllama(latency=0.01, pull_seconds=1.0) as server:
        token = tokens.new_token()
        proxy = ProxyThread(server.port, token)
        record = tokens.record_path("4242")
        tokens.write_record(record, {"job_id": "4242", "cluster": None, "url": proxy.url, "node": "vm", "gpus": 2,
                                     "partition": "l40s", "token": token})
        try:
            yield server, proxy, token, record
        finally:
            proxy.close()


def test_no_token_is_refused_and_counted_the_token_passes(guarded):
    server, proxy, token, _ = guarded

    async def go():
        async with httpx.AsyncClient(base_url=proxy.url, timeout=5) as client:
            bare = await client.get("/api/version")
            wrong = await client.get("/api/version", headers={"Authorization": "Bearer not-the-token"})
            right = await client.get("/api/version", headers={"Authorization": f"Bearer {token}"})
            # more requests on the same kept-alive connection
            again = [await client.get("/api/tags", headers={"Authorization": f"Bearer {token}"}) for _ in range(3)]
        return bare, wrong, right, again

    bare, wrong, right, again = asyncio.run(go())
    assert bare.status_code == 401 and wrong.status_code == 401
    assert "token" in bare.json()["error"] and token not in bare.text
    assert right.status_code == 200 and right.json()["version"] == "0.11.10"
    assert all(r.status_code == 200 and r.json()["models"] for r in again)
    assert proxy.proxy.stats.refused == 2


def test_the_token_file_is_owner_only(guarded):
    *_, record = guarded
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700


def test_health_probe_and_streamed_pull_go_through_with_the_token(guarded):
    from app.cluster.health import probe_all
    from app.cluster.pulls import DONE, PullQueue

    server, proxy, _, _ = guarded
    health = asyncio.run(probe_all([proxy.url]))[proxy.url]
    assert health.state == "up" and health.version == "0.11.10"

    seen: list[float] = []

    async def pull():
        queue = PullQueue(on_update=lambda p: seen.append(p.fraction or 0.0))
        p = queue.add(proxy.url, "qwen2.5:7b")
        await queue.wait()
        return p

    p = asyncio.run(pull())
    assert p.state == DONE, p.error
    fractions = sorted(set(seen))
    assert len(fractions) >= 5 and 0.0 < fractions[1] < 0.9  # progress arrived while it streamed, not at the end
    assert proxy.proxy.stats.refused == 0


def test_a_run_through_the_proxy_records_the_server_job(guarded, tmp_path, capsys, private_ledger):
    from tests.helpers.support import make_notes_db

    _, proxy, token, _ = guarded
    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, hosts=[proxy.url]))
    code, out, err = cli(capsys, "--run", str(exp))
    assert code == 0, err
    header = next(r for r in journal_records(private_ledger) if r["type"] == "header")["header"]
    assert header["server_jobs"] == [{"job_id": "4242", "cluster": None, "url": proxy.url, "node": "vm", "gpus": 2,
                                      "partition": "l40s"}]
    every_file = "".join(p.read_text() for p in private_ledger.rglob("*") if p.is_file() and p.suffix != ".db")
    assert token not in every_file and token not in out + err
    assert proxy.proxy.stats.refused == 0


def test_without_the_record_a_run_is_refused_in_one_line(guarded, tmp_path, capsys):
    from tests.helpers.support import make_notes_db

    _, proxy, _, record = guarded
    record.unlink()
    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, hosts=[proxy.url]))
    code, out, err = cli(capsys, "--run", str(exp))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "refused us (HTTP 401)" in lines[0] and "no token" in lines[0], err
    assert proxy.proxy.stats.refused >= 1


def test_auth_headers_find_the_newest_record_for_a_url(user_config):
    url = "http://gpu-n57:48362"
    old = tokens.record_path("1")
    tokens.write_record(old, {"job_id": "1", "url": url, "token": "old"})
    new = tokens.record_path("2")
    tokens.write_record(new, {"job_id": "2", "url": url, "token": "new"})
    import os

    os.utime(old, (1, 1))
    assert tokens.auth_headers(url) == {"Authorization": "Bearer new"}
    assert tokens.auth_headers("http://elsewhere:1") == {}
    assert json.loads(new.read_text())["job_id"] == "2"


class HeaderSpy:
    """Whatever takes a job's port after the job: a plain HTTP server that notes every Authorization it is sent."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                body = b'{"version": "0.13.1", "models": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_a_server_that_cannot_prove_it_is_the_job_gets_no_note_and_no_token(user_config, tmp_path, capsys):
    """A job record (its token) for a URL where another process now listens: the run asks the proof first, without
    the token, and refuses in one line; the impostor never sees the token nor a note."""
    from tests.helpers.support import make_notes_db

    spy = HeaderSpy()
    token = tokens.new_token()
    tokens.write_record(tokens.record_path("5151"), {"job_id": "5151", "url": spy.url, "token": token})
    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, hosts=[spy.url]))
    for args in (("--run", str(exp)), ("try", str(exp))):
        code, out, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{spy.url} is not your server job 5151: it cannot prove it holds the job's token" in err
    assert spy.seen and all(auth is None for _, auth in spy.seen)  # asked for the proof, never given the token
    assert all(path.startswith("/_notes-tui/proof?nonce=") for path, _ in spy.seen)
    spy.server.shutdown()


def test_the_job_proves_itself_and_an_ended_jobs_address_is_refused(guarded, tmp_path, capsys, private_ledger):
    from tests.helpers.support import make_notes_db

    server, proxy, token, record = guarded
    make_notes_db(tmp_path / "notes.db")
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SQLITE_SOURCE, hosts=[proxy.url]))
    assert cli(capsys, "--run", str(exp))[0] == 0  # the real proxy answers the nonce
    tokens.record_ended(tokens.read_record(record))  # what the job does when it ends
    record.unlink()
    code, out, err = cli(capsys, "--run", str(exp), "--rerun-invalid")
    assert code == 2 and f"{proxy.url} was server job 4242, which has ended" in err
    assert token not in tokens.ended_path("4242").read_text()  # the address is kept, never the token
