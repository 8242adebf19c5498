"""Which transport the official client runs on: the lean one for plain-http hosts, httpx's own where a proxy or TLS
is involved (the lean transport speaks neither)."""

from __future__ import annotations

from support import experiment_toml

from app.backends.ollama import OllamaBackend
from app.backends.transport import LeanTransport
from app.config import load_experiment

SOURCE = 'kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["id"]\ntext_column = "t"'


def backend(tmp_path, hosts):
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=SOURCE, hosts=hosts))
    return OllamaBackend(load_experiment(exp))


def transport_of(b, host):
    return type(b.clients[host]._client._transport)


def test_plain_http_uses_the_lean_transport_and_https_keeps_httpx(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    b = backend(tmp_path, ["http://gpu-n57:48362", "https://ollama.example.edu:443"])
    assert transport_of(b, "http://gpu-n57:48362") is LeanTransport
    assert transport_of(b, "https://ollama.example.edu:443") is not LeanTransport


def test_a_proxied_host_keeps_httpx_and_no_proxy_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy.example.edu:3128")
    monkeypatch.setenv("no_proxy", "gpu-n57")
    b = backend(tmp_path, ["http://gpu-n57:48362", "http://gpu-n58:48362"])
    assert transport_of(b, "http://gpu-n57:48362") is LeanTransport
    assert transport_of(b, "http://gpu-n58:48362") is not LeanTransport
