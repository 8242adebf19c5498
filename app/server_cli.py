"""`notes-tui server list|add`: the Servers screen for scripts, through the same `app.cluster` calls."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli import Shared
    from app.cluster.health import Health
    from app.cluster.known import KnownServer


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    srv = shared.add(sub, "server", shared.json, help="the Ollama servers notes-tui knows, and how they are")
    ssub = srv.add_subparsers(dest="server_command", metavar="SUBCOMMAND", required=True, parser_class=type(srv))
    shared.add(ssub, "list", shared.json, help="every known server: where it came from, up or down, version, "
               "round trip, models loaded").set_defaults(handler=list_servers)
    add = shared.add(ssub, "add", help="save a server in the user config")
    add.add_argument("url", metavar="URL", help="http://HOST:PORT")
    add.add_argument("--name", help="a short name shown instead of the URL")
    add.set_defaults(handler=add_server)


def list_servers(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster.health import probe_all
    from app.context import load_context

    servers = load_context(args.workspace).servers()
    health = asyncio.run(probe_all(s.url for s in servers))
    if args.json:
        print(json.dumps([server_json(s, health[s.url]) for s in servers], indent=2))
    elif not servers:
        print("no Ollama server is known: save one with notes-tui server add URL, export OLLAMA_HOST, "
              "or name hosts in an experiment")
    else:
        print(servers_table(servers, health))
    return 0


def server_json(server: KnownServer, health: Health) -> dict:
    return {"url": server.url, "name": server.name, "origins": list(server.origins), "state": health.state,
            "reason": health.reason or None, "version": health.version,
            "rtt_ms": None if health.rtt_ms is None else round(health.rtt_ms, 1),
            "loaded": [{"name": m.name, "size_vram": m.size_vram,
                        "expires_at": m.expires_at.isoformat() if m.expires_at else None} for m in health.loaded]}


def servers_table(servers: list[KnownServer], health: dict[str, Health]) -> str:
    from app.cluster import present

    rows = [("SERVER", "FROM", "STATE", "VERSION", "RTT", "LOADED")]
    for s in servers:
        h = health[s.url]
        rows.append((s.label, s.origin_text, present.state(h), h.version or "-", present.rtt(h),
                     ", ".join(present.loaded(m) for m in h.loaded) or ("-" if h.answers else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def add_server(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster.health import probe_all
    from app.context import load_context
    from app.userconfig import save_server

    ctx = load_context(args.workspace)
    entry = save_server(ctx.config_path, args.url, args.name)
    health = asyncio.run(probe_all([entry.url]))[entry.url]
    print(f"saved {entry.url}" + (f" as {entry.name!r}" if entry.name else "") + f" in {ctx.config_path}")
    if not health.answers:
        print(f"note: {entry.url} does not answer now ({health.reason}); it is listed as down until it does")
    return 0
