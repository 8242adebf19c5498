"""The servers of an experiment: `[model].hosts` (a list, one URL, or $OLLAMA_HOST) as normalised URLs; inside a
`submit --with-server` job, the job's own server (RUN_SERVER_ENV) instead, whatever the file names."""

from __future__ import annotations

from pathlib import Path

from app.errors import ConfigError
from app.server_url import server_url

# set by a `submit --with-server` job for its run (app/cluster/serverjob.py): the URL of the job's own server
RUN_SERVER_ENV = "NOTES_TUI_RUN_SERVER"


def own_server(environ: dict[str, str]) -> str | None:
    """The server of the job this run belongs to, when it was started by one (`submit --with-server`)."""
    value = environ.get(RUN_SERVER_ENV, "").strip()
    return server_url(value) if value else None


def resolve_hosts(path: Path, hosts: list[str] | str | None, environ: dict[str, str],
                   backend: str = "ollama") -> tuple[str, ...]:
    if isinstance(hosts, str):
        hosts = [hosts]
    if not hosts:
        env = environ.get("OLLAMA_HOST", "").strip() if backend == "ollama" else ""
        if not env:
            raise ConfigError(path, "model.hosts", f"no {'Ollama' if backend == 'ollama' else 'OpenAI-compatible'} "
                              "server given", 'add hosts = ["http://HOST:PORT"] to [model]'
                              + (" or export OLLAMA_HOST=HOST:PORT" if backend == "ollama" else ' (or "auto")'))
        hosts = [h.strip() for h in env.split(",") if h.strip()]
    out = []
    for h in hosts:
        try:
            # an OpenAI-compatible server is often given as its API root, http://node:8000/v1
            out.append(server_url(_without_v1(h) if backend == "openai-compatible" else h))
        except ValueError as exc:
            raise ConfigError(path, "model.hosts", str(exc), "write http://HOST:PORT, e.g. http://gpu-n57:48362")
    if len(set(out)) != len(out):
        raise ConfigError(path, "model.hosts", "the same host is listed twice", "remove the duplicate")
    return tuple(out)


def _without_v1(host: str) -> str:
    text = host.strip().rstrip("/")
    return text[:-3] if text.endswith("/v1") else text
