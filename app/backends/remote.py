"""Note text never leaves the cluster unless the experiment says so: which models and hosts are outside it.

Two ways out, both refused before the first note unless `[model] allow_remote = true`:
- a cloud model on a local Ollama (0.12+): the tag ends in `-cloud` or is `:cloud`, or the server's own listing names
  a `remote_host`; the server forwards every prompt to ollama.com;
- a host whose name resolves to a public address (a hosted API, a workstation on the internet). Cluster nodes have
  private, loopback or site addresses; a site whose nodes have public addresses names its networks in the user
  config (`[network] cluster_networks = ["136.142.0.0/16"]`), so they count as inside.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

ALLOW_FIX = "set allow_remote = true in [model] only for public or synthetic text"


def cloud_tag(name: str) -> bool:
    """`gpt-oss:120b-cloud`, `glm-4.6:cloud`: Ollama's names for models that run on ollama.com."""
    tag = name.rsplit("/", 1)[-1].partition(":")[2].lower()
    return tag == "cloud" or tag.endswith("-cloud")


def remote_host_of(entry: dict[str, Any] | None) -> str | None:
    """The `remote_host` (or, failing that, `remote_model`) an Ollama listing or show gives for a cloud model."""
    if not isinstance(entry, dict):
        return None
    for key in ("remote_host", "remote_model"):
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip() if key == "remote_host" else "ollama.com"
    return None


def networks(texts: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def public_address(url: str, inside: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> str | None:
    """The first address of the URL's host that is on the public internet and in none of `inside`; None when every
    address is private, loopback, link-local or the site's own (or the name does not resolve: the connection will
    say so)."""
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    inside = tuple(inside)
    for info in infos:
        try:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_global and not any(ip in net for net in inside):
            return str(ip)
    return None


def refuse_remote_hosts(exp: Any, hosts: Iterable[str]) -> None:
    """One line naming the first host outside the cluster, unless the experiment allows it. A Slurm server job of
    the user's (its token record names the URL) is inside by definition, whatever its node's address."""
    from app.cluster.tokens import record_for_url
    from app.errors import BackendError
    from app.settings.files import config_path
    from app.settings.user import load_user_config

    if exp.spec.model.allow_remote:
        return
    inside: tuple | None = None  # the site's own networks, read only when a host looks public (the rare case)
    for host in hosts:
        if record_for_url(host) is not None or public_address(host) is None:
            continue
        if inside is None:
            inside = networks(load_user_config(config_path()).network.cluster_networks)
        address = public_address(host, inside)
        if address is not None:
            raise BackendError(f"{exp.path}: model.hosts: {host} is outside the cluster (it resolves to the public "
                               f"address {address}): no note is sent to it — use a server on the cluster, name the "
                               "site's networks in the user config ([network] cluster_networks), or " + ALLOW_FIX)
