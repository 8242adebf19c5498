"""Which client a run uses for a host: the lean one for plain-http hosts, httpx where a proxy or TLS is involved
(the lean one speaks neither) — and a run's path never imports the `ollama` package or httpx for plain hosts."""

from __future__ import annotations

import subprocess
import sys

from app.backends.ollama import OllamaBackend
from app.backends.ollama_wire import HttpxWire, LeanWire
from app.experiment import load_experiment
from tests.helpers.support import ROOT, experiment_toml

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["id"]\ntext_column = "t"'
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def backend(tmp_path, hosts):
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=hosts))
    return OllamaBackend(load_experiment(exp))


def test_plain_http_uses_the_lean_client_and_https_keeps_httpx(tmp_path, monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    b = backend(tmp_path, ["http://gpu-n57:48362", "https://ollama.example.edu:443"])
    assert type(b.wires["http://gpu-n57:48362"]) is LeanWire
    assert type(b.wires["https://ollama.example.edu:443"]) is HttpxWire


def test_a_proxied_host_keeps_httpx_and_no_proxy_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy.example.edu:3128")
    monkeypatch.setenv("no_proxy", "gpu-n57")
    b = backend(tmp_path, ["http://gpu-n57:48362", "http://gpu-n58:48362"])
    assert type(b.wires["http://gpu-n57:48362"]) is LeanWire
    assert type(b.wires["http://gpu-n58:48362"]) is HttpxWire


def test_a_headless_run_imports_neither_ollama_nor_httpx_nor_sqlite_utils(tmp_path):
    import sqlite3

    from tests.standin.standin_ollama import StandinOllama

    conn = sqlite3.connect(tmp_path / "notes.db")
    conn.execute("CREATE TABLE notes (id INTEGER, t TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'Chest X-ray: clear lungs.')")
    conn.commit()
    conn.close()
    with StandinOllama() as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=SOURCE, hosts=[server.url]))
        code = ("import sys\nfrom app.cli import main\ncode = main(['--run', sys.argv[1], '--ledger', sys.argv[2]])\n"
                "heavy = sorted(m for m in ('ollama', 'httpx', 'httpcore', 'sqlite_utils', 'numpy', 'textual') "
                "if m in sys.modules)\nprint('HEAVY', ','.join(heavy))\nsys.exit(code)\n")
        runs = [subprocess.run([sys.executable, "-c", code, str(exp), str(tmp_path / "led")], cwd=ROOT,
                               capture_output=True, text=True, timeout=60) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    # the first run ever creates ledger.db (its migrations use sqlite-utils); any later run imports only what it needs
    assert "HEAVY \n" in runs[1].stdout, runs[1].stdout
