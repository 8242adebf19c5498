"""Which model servers (Ollama or OpenAI-compatible) notes-tui knows of: the servers saved in the user config, the
user's running Slurm server jobs, `$OLLAMA_HOST`, and the hosts the workspace's experiments name. One entry per URL,
with every place it came from (a server job's origin reads "job 1234")."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.server_url import server_url
from app.settings.user import UserConfig

if TYPE_CHECKING:
    from app.cluster.slurm import ServerJob

ORIGIN_CONFIG = "config"
ORIGIN_ENV = "$OLLAMA_HOST"


@dataclass(frozen=True)
class KnownServer:
    url: str
    name: str | None
    origins: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.name or self.url.removeprefix("http://")

    @property
    def origin_text(self) -> str:
        return ", ".join(self.origins)


def experiment_hosts(workspace: Path) -> list[tuple[str, str]]:
    """(url, file name) for every host an experiment file names. Files are only read as TOML here: a file that is
    not a valid experiment still names its servers, and the Experiments screen says what is wrong with it."""
    out = []
    for path in sorted((workspace / "experiments").glob("*.toml")):
        try:
            model = tomllib.loads(path.read_text(encoding="utf-8")).get("model", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        hosts = model.get("hosts") if isinstance(model, dict) else None
        if isinstance(hosts, str):
            hosts = [] if hosts == "auto" else [hosts]
        for host in hosts if isinstance(hosts, list) else []:
            text = str(host).strip().rstrip("/")
            try:
                out.append((server_url(text.removesuffix("/v1")), path.name))  # an OpenAI server's API root
            except ValueError:
                continue
    return out


def env_hosts(environ: dict[str, str]) -> list[str]:
    out = []
    for host in environ.get("OLLAMA_HOST", "").split(","):
        try:
            out.append(server_url(host))
        except ValueError:
            continue
    return out


def known_servers(workspace: Path, config: UserConfig, environ: dict[str, str],
                  jobs: Sequence[ServerJob] = ()) -> list[KnownServer]:
    """Saved servers first (in the order saved), then the server jobs that publish an address, then $OLLAMA_HOST,
    then the experiments' hosts."""
    names: dict[str, str | None] = {}
    origins: dict[str, list[str]] = {}

    def add(url: str, origin: str, name: str | None = None) -> None:
        names.setdefault(url, name)
        if name and not names[url]:
            names[url] = name
        where = origins.setdefault(url, [])
        if origin not in where:
            where.append(origin)

    for saved in config.servers:
        add(saved.url, ORIGIN_CONFIG, saved.name)
    for job in jobs:
        if job.url:
            add(job.url, job.origin)
    for url in env_hosts(environ):
        add(url, ORIGIN_ENV)
    for url, file in experiment_hosts(workspace):
        add(url, file)
    return [KnownServer(url=url, name=names[url], origins=tuple(origins[url])) for url in origins]


def choose_server(given: str | None, servers: list[KnownServer], environ: dict[str, str]) -> str:
    """`--host`, else $OLLAMA_HOST, else the only known server; otherwise one line listing the known ones."""
    from app.errors import UserError

    if given:
        try:
            return server_url(given)
        except ValueError as exc:
            raise UserError(f"--host: {exc} — write http://HOST:PORT, e.g. http://gpu-n57:48362") from None
    from_env = env_hosts(environ)
    if len(from_env) == 1:
        return from_env[0]
    if len(servers) == 1:
        return servers[0].url
    if not servers:
        raise UserError("no Ollama server is known — pass --host URL, export OLLAMA_HOST=HOST:PORT, "
                        "or save one with: notes-tui server add URL")
    shown = ", ".join(s.url + (f" ({s.name})" if s.name else "") for s in servers)
    raise UserError(f"{len(servers)} servers are known, say which: --host URL (known: {shown})")
