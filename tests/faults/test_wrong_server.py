"""A server that answers, but wrongly: bodies that are not chat responses, and a 400 for every request."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers.runhelp import cli
from tests.helpers.support import experiment_toml

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\ntext_column = "note_text"'
TAGS = {"models": [{"name": "llama3:latest", "model": "llama3:latest", "modified_at": "2025-01-01T00:00:00Z",
                    "size": 1, "digest": "ab" * 32, "details": {"format": "gguf", "family": "llama"}}]}
GOOD = {"model": "llama3:latest", "created_at": "2025-01-01T00:00:00Z", "done": True, "done_reason": "stop",
        "message": {"role": "assistant", "content": json.dumps({"response": "(2) Unlikely", "explanation": "ok"})},
        "prompt_eval_count": 20, "eval_count": 5}


class WrongServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, bad_bodies: list[bytes], status_for_chat: int = 200, framing: str = "length"):
        self.bad = list(bad_bodies)
        self.status_for_chat = status_for_chat
        self.framing = framing  # length | chunked | close (no length: the body ends when the server closes)
        self.lock = threading.Lock()
        self.chats = 0
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, framing: str = "length") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(body) // 2
            for part in (body[:half], body[half:]):
                if part:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif framing == "close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self):
        self._send(200, json.dumps({"version": "0.11.10"} if self.path == "/api/version" else TAGS).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/api/chat":  # /api/show: a server this wrong lists no capabilities
            self._send(404, b'{"error": "not found"}')
            return
        srv: WrongServer = self.server  # type: ignore[assignment]
        with srv.lock:
            srv.chats += 1
            body = srv.bad.pop(0) if srv.bad else json.dumps(GOOD).encode()
        if srv.status_for_chat != 200:
            self._send(srv.status_for_chat, b'{"error": "invalid format: json schema not supported"}')
        else:
            self._send(200, body, srv.framing)


def serve(server: WrongServer):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_against(server: WrongServer, tmp_path, capsys, notes: int, run: str = ""):
    """Serve, run the experiment on `notes` notes against it, stop serving; (exit code, stdout, stderr, query)."""
    make_db(tmp_path / "notes.db", notes)
    serve(server)
    try:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url], run=run))
        code, out, err = cli(capsys, "--run", str(exp))
    finally:
        server.shutdown()

    def query(sql):
        conn = sqlite3.connect(tmp_path / "notes.db")
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    return code, out, err, query


def make_db(path, n):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}: clear") for i in range(n)])
    conn.commit()
    conn.close()


def test_bodies_that_are_not_chat_responses_are_retried(tmp_path, capsys):
    server = WrongServer([b"<html>proxy error</html>", b'{"unexpected": true}', b"", b'{"message": 5}'])
    code, out, err, query = run_against(server, tmp_path, capsys, notes=10, run="concurrency = 1")
    assert code == 0, err
    assert query("SELECT COUNT(*), SUM(valid) FROM pna_results") == [(10, 10)]
    assert server.chats == 14


def test_a_server_that_refuses_every_request_stops_the_run_with_one_line(tmp_path, capsys, private_ledger):
    code, out, err, query = run_against(WrongServer([], status_for_chat=400), tmp_path, capsys, notes=10)
    assert code == 2
    assert "refused the request (HTTP 400" in err and len(err.strip().splitlines()) == 1
    assert query("SELECT COUNT(*) FROM pna_results") == [(0,)]
    from ledger import Ledger

    [run] = Ledger(private_ledger).list_runs()
    assert run["status"] == "failed" and "HTTP 400" in run["last_error"]


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_chunked_and_close_delimited_bodies(tmp_path, capsys, framing):
    server = WrongServer([], framing=framing)
    code, out, err, query = run_against(server, tmp_path, capsys, notes=12, run="concurrency = 3")
    assert code == 0, err
    assert query("SELECT COUNT(*), SUM(valid) FROM pna_results") == [(12, 12)]
    assert server.chats == 12


def test_an_answer_wrapped_in_code_fences_is_still_read(tmp_path, capsys):
    fenced = dict(GOOD, message={"role": "assistant", "content": "Here you go:\n```json\n"
                                 + json.dumps({"response": "(1) Likely", "explanation": "RLL opacity"}) + "\n```"})
    broken = dict(GOOD, message={"role": "assistant", "content": "```json\n{\"response\": \"(1) Likely\", ```"})
    server = WrongServer([json.dumps(fenced).encode(), json.dumps(broken).encode()])
    code, out, err, query = run_against(server, tmp_path, capsys, notes=3, run="concurrency = 1")
    assert code == 0, err
    rows = query("SELECT note_id, response, valid, attempts FROM pna_results ORDER BY note_id")
    assert rows[0] == (0, "(1) Likely", 1, 1)
    assert rows[1] == (1, "(2) Unlikely", 1, 2)  # the broken fenced answer was retried
