"""`notes-tui server list|add|start|stop|history`: the Servers screen for scripts, through the same `app.cluster`
calls; `server proxy` is what a server job runs inside Slurm."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli.options import Shared
    from app.cluster.health import Health
    from app.cluster.idle import IdleState
    from app.cluster.known import KnownServer
    from app.cluster.slurm import ServerJob


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    from app.cli.options import idle
    from app.settings.user import DEFAULT_IDLE

    srv = shared.add(sub, "server", shared.json,
                     help="the model servers notes-tui knows (Ollama, OpenAI-compatible), and how they are")
    ssub = srv.add_subparsers(dest="server_command", metavar="SUBCOMMAND", required=True, parser_class=type(srv))
    shared.add(ssub, "list", shared.json, help="every known server: where it came from, up or down, version, "
               "round trip, models loaded").set_defaults(handler=list_servers)
    add = shared.add(ssub, "add", help="save a server in the user config")
    add.add_argument("url", metavar="URL", help="http://HOST:PORT")
    add.add_argument("--name", help="a short name shown instead of the URL")
    add.set_defaults(handler=add_server)
    start = shared.add(ssub, "start", shared.json,
                       help="submit a server job (Ollama, vLLM, llama-server…) from a profile of the user config")
    start.add_argument("--profile", required=True, metavar="NAME", help="a [profiles.NAME] of the user config")
    start.add_argument("--time", metavar="TIME", help="the job's time limit (D-HH:MM:SS), instead of the profile's")
    start.add_argument("--idle", type=idle, metavar="DURATION",
                       help="end the job after this long with no request (30m, 2h, 0 for never), instead of the "
                       "profile's idle (default 30m)")
    start.set_defaults(handler=start_server)
    stop = shared.add(ssub, "stop", help="cancel one of your server jobs")
    stop.add_argument("job_id", metavar="JOBID")
    stop.set_defaults(handler=stop_server)
    history = shared.add(ssub, "history", shared.json,
                         help="your past server jobs from Slurm's accounting (sacct): state, run time, GPUs, "
                         "GPU-hours (used and idle where the ledger has them), totals per day and week")
    history.add_argument("--since", type=since, default=None, metavar="WHEN",
                         help="from this long ago (7d, 2w, 12h) or this date (2026-12-01, the cluster's local "
                         "time); default 7d")
    history.set_defaults(handler=server_history)
    proxy = shared.add(ssub, "proxy", help="inside a server job (slurm/ollama-server.sbatch): run the server on "
                       "127.0.0.1 behind the authenticating proxy and publish its address")
    proxy.add_argument("--command", required=True, help="the server command (OLLAMA_HOST is set for it)")
    proxy.add_argument("--ready-timeout", type=float, default=600.0, metavar="S",
                       help="how long the server may take to answer (default 600)")
    proxy.add_argument("--kind", default="ollama", choices=("ollama", "openai-compatible"),
                       help="what the server speaks: how to tell it is ready, and what the job's Comment says")
    proxy.add_argument("--isolate", default="1", choices=("0", "1"),
                       help="1: the server in a network namespace of its own, reached through a Unix socket (default)")
    proxy.add_argument("--idle", type=idle, default=DEFAULT_IDLE, metavar="DURATION",
                       help=f"end the job after this long with no request through the proxy (default {DEFAULT_IDLE}; "
                       "0: never)")
    proxy.add_argument("--then-run", metavar="FILE",
                       help="a job for one run (slurm/notes-run-with-server.sbatch): run notes-tui --run FILE against "
                       "this server, publish no address, and end with the run")
    proxy.set_defaults(handler=proxy_server)
    inner = shared.add(ssub, "inner", help=argparse.SUPPRESS)  # what `server proxy` runs inside the namespace
    inner.add_argument("--unix", required=True)
    inner.add_argument("--command", required=True)
    inner.add_argument("--kind", default="ollama", choices=("ollama", "openai-compatible"))
    inner.add_argument("--ready-timeout", type=float, default=600.0)
    inner.set_defaults(handler=inner_server)


def since(text: str) -> str:
    """--since as typed, checked here; turned into a time when the command runs."""
    from app.cluster.history import parse_since

    try:
        parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def server_history(args: argparse.Namespace) -> int:
    """Exit 0 with the jobs (or "none"); 2 with one line where sacct cannot answer (not installed, accounting off,
    slurmdbd down): the site's setup, like every other UserError, not a failure of the command (1)."""
    from app.cluster.history import DEFAULT_SINCE, history_json, history_text, parse_since
    from app.cluster.history import server_history as ask
    from app.cluster.slurm import Slurm
    from app.context import load_context
    from ledger import resolve_ledger_dir

    ctx = load_context(args.workspace)
    when = parse_since(args.since or DEFAULT_SINCE)
    ledger_dir = resolve_ledger_dir(args.ledger)
    jobs = ask(Slurm(ctx.config.slurm.cluster), when, ledger_dir)
    if args.json:
        print(json.dumps(history_json(jobs, when, ledger_dir), indent=2))
    else:
        print(history_text(jobs, when, ledger_dir))
    return 0


def list_servers(args: argparse.Namespace) -> int:
    import asyncio

    from app.context import load_context

    ctx = load_context(args.workspace)
    jobs = ctx.jobs()
    servers = ctx.servers()
    job_urls = [j.url for j in jobs.jobs if j.url] if jobs.available else []
    health, idle = asyncio.run(_probe(servers, job_urls))
    waiting = [j for j in jobs.jobs if not j.url] if jobs.available else []
    if args.json:
        # one list: every server (a job's carries "job"), then the jobs with no address yet (url null)
        by_url = {j.url: j for j in jobs.jobs if j.url} if jobs.available else {}
        doc = [dict(server_json(s, health[s.url]), job=job_json(by_url[s.url], health[s.url], idle.get(s.url))
                    if s.url in by_url else None) for s in servers]
        doc += [{"url": None, "name": j.name, "origins": [j.origin], "state": j.phase, "reason": j.reason or None,
                 "version": None, "rtt_ms": None, "loaded": [], "job": job_json(j, None)} for j in waiting]
        print(json.dumps(doc, indent=2))
        return 0
    if not servers and not waiting:
        print("no Ollama server is known: start a server job with notes-tui server start --profile NAME, save one "
              "with notes-tui server add URL, export OLLAMA_HOST, or name hosts in an experiment")
    if servers:
        print(servers_table(servers, health))
    if jobs.available and jobs.jobs:
        print()
        print(jobs_table(jobs.jobs, health, idle))
    if jobs.error:
        print(f"warning: {jobs.error}", file=sys.stderr)
    return 0


async def _probe(servers: list[KnownServer], job_urls: list[str]) -> tuple[dict[str, Health], dict]:
    """Every server's health and every server job's idle state, all at once."""
    import asyncio

    from app.cluster.health import probe_all
    from app.cluster.idle import fetch_idle_all

    health, idle = await asyncio.gather(probe_all(s.url for s in servers), fetch_idle_all(job_urls))
    return health, idle


def _kind(kind: str | None) -> str:
    return {"ollama": "ollama", "openai-compatible": "openai"}.get(kind or "", "-")


def parallel_text(record: dict | None) -> str:
    """How many requests the job's server answers at once, as its profile set it. Ollama answers one at a time
    unless OLLAMA_NUM_PARALLEL is set (since 0.9.7); an OpenAI server batches as many as it has room for."""
    if record is None:
        return "-"
    if record.get("num_parallel"):
        return str(record["num_parallel"])
    return "1 (default)" if record.get("kind", "ollama") == "ollama" else "server's"


def job_json(job: ServerJob, health: Health | None, idle: IdleState | None = None) -> dict:
    """A server job as `server list --json` gives it; `idle`: its proxy's idle state (null when it did not say:
    not up yet, not a job of notes-tui, or down) — idle_s, in_flight, limit_s, stops_in_s, stops_at (UTC)."""
    from app.cluster.jobactions import job_status
    from app.cluster.tokens import job_record

    record = job_record(job.job_id, job.cluster) or {}
    return dict(job.as_json(), status=job_status(job, health), num_parallel=record.get("num_parallel"),
                idle=idle.as_json() if idle is not None else None)


def jobs_table(jobs: list[ServerJob], health: dict[str, Health], idle: dict | None = None) -> str:
    from app.cluster.jobactions import job_status, time_left_text
    from app.cluster.tokens import job_record

    idle = idle or {}
    rows = [("JOB", "NAME", "KIND", "STATE", "NODE", "PORT", "TIME LEFT", "IDLE", "IDLE STOP", "PARALLEL", "GPUS")]
    for j in jobs:
        state = idle.get(j.url) if j.url else None
        rows.append((j.job_id + (f" ({j.cluster})" if j.cluster else ""), j.name, _kind(j.kind),
                     job_status(j, health.get(j.url) if j.url else None), j.node or "-",
                     str(j.port) if j.port else "-", time_left_text(j), state.idle_text() if state else "-",
                     state.stop_text() if state else "-", parallel_text(job_record(j.job_id, j.cluster)),
                     str(j.gpus)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def server_json(server: KnownServer, health: Health) -> dict:
    return {"url": server.url, "name": server.name, "origins": list(server.origins), "kind": health.kind,
            "state": health.state,
            "reason": health.reason or None, "version": health.version,
            "rtt_ms": None if health.rtt_ms is None else round(health.rtt_ms, 1),
            "loaded": [{"name": m.name, "size_vram": m.size_vram,
                        "expires_at": m.expires_at.isoformat() if m.expires_at else None} for m in health.loaded]}


def servers_table(servers: list[KnownServer], health: dict[str, Health]) -> str:
    from app.cluster import present

    rows = [("SERVER", "FROM", "KIND", "STATE", "VERSION", "RTT", "LOADED")]
    for s in servers:
        h = health[s.url]
        rows.append((s.label, s.origin_text, h.kind_text, present.state(h), h.version or "-", present.rtt(h),
                     ", ".join(present.loaded(m) for m in h.loaded) or ("-" if h.answers else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def add_server(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster.health import probe_all
    from app.context import load_context
    from app.settings.user import save_server

    ctx = load_context(args.workspace)
    entry = save_server(ctx.config_path, args.url, args.name)
    health = asyncio.run(probe_all([entry.url]))[entry.url]
    print(f"saved {entry.url}" + (f" as {entry.name!r}" if entry.name else "") + f" in {ctx.config_path}")
    if not health.answers:
        print(f"note: {entry.url} does not answer now ({health.reason}); it is listed as down until it does")
    return 0


def start_server(args: argparse.Namespace) -> int:
    from app.cluster.jobactions import start_server_job
    from app.context import load_context
    from ledger import resolve_ledger_dir

    ctx = load_context(args.workspace)
    from app.cluster.serverjob import idle_words
    from app.settings.user import idle_seconds

    job_id = start_server_job(ctx.config, ctx.config_path, args.profile, resolve_ledger_dir(args.ledger), ctx.environ,
                              time=args.time, jobs=ctx.jobs(), idle=args.idle)
    idle_s = idle_seconds(args.idle) if args.idle is not None else ctx.config.profiles[args.profile].idle_s
    if args.json:
        print(json.dumps({"job_id": job_id, "cluster": ctx.config.slurm.cluster, "profile": args.profile,
                          "idle_s": idle_s}))
    else:
        ends = (f"it ends itself after {idle_words(idle_s)} with no request" if idle_s else
                "idle = 0: it runs until notes-tui server stop or its time limit")
        print(f"submitted server job {job_id} ({args.profile}); it shows as starting until the server answers — "
              f"notes-tui server list; {ends}")
    return 0


def stop_server(args: argparse.Namespace) -> int:
    from app.cluster.jobactions import stop_server_job
    from app.context import load_context

    ctx = load_context(args.workspace)
    job = stop_server_job(ctx.config, args.job_id, jobs=ctx.jobs())
    print(f"cancelled server job {job.job_id} ({job.name})")
    return 0


def proxy_server(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from app.cluster.serverjob import serve
    from app.settings.user import idle_seconds

    return asyncio.run(serve(args.command, dict(os.environ), args.ready_timeout, kind=args.kind,
                             isolated=args.isolate == "1", idle_s=idle_seconds(args.idle), then_run=args.then_run))


def inner_server(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from app.cluster.serverjob import serve_inner

    return asyncio.run(serve_inner(args.unix, args.command, dict(os.environ), args.ready_timeout, kind=args.kind))
