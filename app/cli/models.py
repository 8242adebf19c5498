"""`notes-tui models list|pull|rm|show`: the Models screen for scripts, through the same `app.cluster` calls."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from app.errors import ExitCode

if TYPE_CHECKING:
    from app.cli.options import Shared
    from app.cluster.pulls import Pull

TTY_REDRAW_S = 0.1
PLAIN_EVERY_S = 5.0


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    mod = shared.add(sub, "models", shared.json, shared.host, help="the models pulled on a server")
    msub = mod.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True, parser_class=type(mod))
    shared.add(msub, "list", shared.host, shared.json, help="models on the server: size, parameters, "
               "quantization, family, modified, digest").set_defaults(handler=list_models)
    pull = shared.add(msub, "pull", shared.host, help="pull a model, with progress")
    pull.add_argument("name", metavar="NAME", help="e.g. llama3.1:8b")
    pull.add_argument("--progress-file", metavar="F", default=None,
                      help="also append the pull's state to F, a JSON object a line (0600): what the TUI follows. "
                           "Waits first for the earlier pulls of the same server beside F; SIGTERM cancels; "
                           "SIGHUP is ignored")
    pull.add_argument("--profile", metavar="PROFILE", default=None,
                      help="pull in a CPU job of its own from this [profiles.PROFILE] of the user config (one without "
                           "gres), into its models directory: no server needed, no GPU held; the quota is checked "
                           "before the job is submitted")
    pull.add_argument("--time", metavar="TIME", default=None,
                      help="with --profile: the job's time limit (D-HH:MM:SS), instead of the profile's")
    pull.add_argument("--no-wait", action="store_true",
                      help="with --profile: return once the job is submitted (the Models screen follows it)")
    pull.set_defaults(handler=pull_model)
    in_job = shared.add(msub, "pull-in-job", help="inside a pull job (slurm/ollama-pull.sbatch): start the "
                        "server on a loopback port, pull NAME through it, stop it")
    in_job.add_argument("name", metavar="NAME")
    in_job.add_argument("--progress-file", required=True)
    in_job.add_argument("--command", required=True)
    in_job.add_argument("--ready-timeout", type=float, default=600.0)
    in_job.set_defaults(handler=pull_in_job)
    rm = shared.add(msub, "rm", shared.host, help="delete a model (asks first on a terminal)")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    rm.set_defaults(handler=remove_model)
    show = shared.add(msub, "show", shared.host, shared.json, help="context length, template, parameters, license")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=show_model)


def _server(args: argparse.Namespace) -> tuple[str, object]:
    from app.cluster.known import choose_server
    from app.context import load_context

    ctx = load_context(args.workspace)
    # the known servers only when no --host says which (they cost a squeue call where there is Slurm)
    return choose_server(args.host, [] if args.host else ctx.servers(), ctx.environ), ctx


def list_models(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster import models, present

    url, ctx = _server(args)
    entries = asyncio.run(models.list_models(url))
    if args.json:
        print(json.dumps({"server": url, "models": [m.as_json() for m in entries]}, indent=2))
        return 0
    if entries and all(m.served for m in entries):
        print("\n".join(["SERVED MODEL", *sorted(m.name for m in entries)]))
        print(f"{len(entries)} served by {url}: {models.OPENAI_NO_MANAGEMENT}")
        return 0
    rows = [("NAME", "SIZE", "PARAMS", "QUANT", "FAMILY", "MODIFIED", "DIGEST")]
    rows += [(m.name, present.model_size(m), m.parameter_size or "-", m.quantization or "-", m.family or "-",
              present.modified(m.modified_at), m.short_digest) for m in sorted(entries, key=lambda m: m.name)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
    cloud = [m for m in entries if m.cloud]
    if cloud:
        print(f"{len(cloud)} cloud model{'s' if len(cloud) != 1 else ''} ({', '.join(m.name for m in cloud)}): "
              f"{present.CLOUD_NOTE}")
    total = sum(m.size for m in entries)
    quota = ctx.config.quota_bytes
    print(f"{len(entries)} models, {present.size(total)} of the {present.size(quota)} quota ({total / quota:.0%})")
    return 0


def show_model(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster import models

    url, _ = _server(args)
    d = asyncio.run(models.show_model(url, args.name))
    if args.json:
        print(json.dumps({"server": url, **d.as_json()}, indent=2))
        return 0
    print(f"model:          {d.name} on {url}")
    print(f"context length: {d.context_length or 'unknown'}")
    print(f"family:         {d.family or '-'}   parameters: {d.parameter_size or '-'}   "
          f"quantization: {d.quantization or '-'}")
    if d.capabilities:
        print(f"capabilities:   {', '.join(d.capabilities)}")
    for title, text in (("parameters", d.parameters), ("template", d.template), ("license", d.license)):
        print(f"--- {title} ---")
        print(text.strip() or "(none)")
    return 0


def remove_model(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster import models, present
    from app.errors import UserError

    url, _ = _server(args)
    entries = asyncio.run(models.list_models(url))
    from app.backends.ollama import full_name

    if entries and all(m.served for m in entries):
        raise UserError(f"{url}: {models.OPENAI_NO_MANAGEMENT}")
    match = next((m for m in entries if m.name == full_name(args.name)), None)
    if match is None:
        raise UserError(f"{args.name!r} is not on {url} — see notes-tui models list --host {url}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"not deleting {match.name} without a terminal to ask — add --yes")
        answer = input(f"delete {match.name} ({present.size(match.size)}) from {url}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return ExitCode.FAILED
    asyncio.run(models.delete_model(url, match.name))
    print(f"deleted {match.name} ({present.size(match.size)}) from {url}")
    return 0


def pull_model(args: argparse.Namespace) -> int:
    import asyncio

    from app.cluster.pulls import PullQueue, check_model_name
    from app.errors import UserError

    if args.profile is not None:
        if args.host:
            raise UserError("--profile and --host cannot be combined — --profile pulls in a job of its own, --host "
                            "through a running server")
        if args.progress_file:
            raise UserError("--profile and --progress-file cannot be combined — the job keeps its progress in the "
                            "ledger dir (pulls/), where the Models screen follows it")
        return _pull_in_a_job(args)
    if args.time is not None or args.no_wait:
        raise UserError(f"{'--time' if args.time is not None else '--no-wait'} goes with --profile (a pull job) — "
                        "without it the pull runs here, through --host")
    if args.progress_file:
        return _pull_with_progress_file(args)
    name = check_model_name(args.name)
    url, ctx = _server(args)
    _refuse_openai(url)
    printer = _PullPrinter(sys.stdout.isatty())

    async def go() -> Pull:
        queue = PullQueue(printer.update, quota_bytes=ctx.config.quota_bytes)
        pull = queue.add(url, name)
        try:
            await queue.wait()
        except asyncio.CancelledError:
            queue.cancel_all()
            raise
        return pull

    try:
        pull = asyncio.run(go())
    except KeyboardInterrupt:
        printer.end()
        print(f"notes-tui: pull of {name} cancelled (pull again to resume)", file=sys.stderr)
        return ExitCode.SIGINT
    printer.end()
    return _pull_exit(pull)


def _pull_in_a_job(args: argparse.Namespace) -> int:
    """`models pull NAME --profile P`: the checks and the quota, the job, then its progress as a pull here shows it
    (ctrl-c stops following; the job goes on)."""
    from app.cluster.pulljob import follow, home_path, job_check, submit_pull_job
    from app.cluster.pulls import STOPPED
    from app.cluster.slurm import ServerJobs, Slurm
    from app.context import load_context
    from ledger import resolve_ledger_dir

    ctx = load_context(args.workspace)
    job = submit_pull_job(ctx.config, ctx.config_path, args.profile, args.name, resolve_ledger_dir(args.ledger),
                          ctx.environ, time_limit=args.time)
    print(job.quota.text, flush=True)
    if job.job_id is None:
        return 0
    assert job.progress_file is not None
    scancel = f"scancel {'-M ' + job.cluster + ' ' if job.cluster else ''}{job.job_id}"
    print(f"submitted pull job {job.job_id} ({args.profile}): {job.name} into {home_path(job.models_dir)}; "
          f"output {home_path(job.output or '')}; {scancel} cancels it", flush=True)
    if args.no_wait:
        return 0
    printer = _PullPrinter(sys.stdout.isatty())
    print(f"waiting for job {job.job_id} to start (the Models screen follows it too; ctrl-c stops following, not the "
          "pull)", flush=True)
    try:
        pull = follow(job.progress_file, printer.update, job_check(ServerJobs(Slurm(job.cluster))))
    except KeyboardInterrupt:
        printer.end()
        print(f"notes-tui: stopped following; job {job.job_id} goes on ({scancel} cancels it)", file=sys.stderr)
        return ExitCode.SIGINT
    printer.end()
    if pull.state == STOPPED:
        print(f"notes-tui: error: job {job.job_id} ended without finishing the pull of {job.name} — see its output: "
              f"{home_path(job.output or '')}", file=sys.stderr)
        return ExitCode.FAILED
    if pull.state == "done":
        print(f"{job.name} is in {home_path(job.models_dir)}; job {job.job_id} ends with the pull", flush=True)
    return _pull_exit(pull)


def pull_in_job(args: argparse.Namespace) -> int:
    """Inside the pull job (slurm/ollama-pull.sbatch): the server on a loopback port, the pull, the server stopped."""
    import asyncio
    import os
    import signal
    from pathlib import Path

    from app.cluster.pulljob import pull_in_job as run_in_job
    from app.context import load_context

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ctx = load_context(args.workspace)
    printer = _PullPrinter(False)
    pull = asyncio.run(run_in_job(args.name, Path(args.progress_file), args.command, args.ready_timeout,
                                  dict(os.environ), ctx.config.quota_bytes, printer.update))
    printer.end()
    return _pull_exit(pull)


def _pull_exit(pull: Pull) -> int:
    from app.cluster.pulls import CANCELLED, DONE

    if pull.state == DONE:
        return 0
    if pull.state == CANCELLED:
        print(f"notes-tui: pull of {pull.name} cancelled (pull again to resume)", file=sys.stderr)
        return ExitCode.SIGTERM
    print(f"notes-tui: error: {pull.error}", file=sys.stderr)
    return ExitCode.USER_ERROR if pull.wrong_name else ExitCode.FAILED


def _pull_with_progress_file(args: argparse.Namespace) -> int:
    """The pull the TUI starts in a process of its own (app.cluster.detached_pull): the same pull and the same lines
    (in its log), its state in the progress file as well; a mistake found before the pull is its last line too."""
    import asyncio
    import signal
    from pathlib import Path

    from app.cluster.detached_pull import ProgressFile, pull_detached
    from app.cluster.pulls import check_model_name
    from app.errors import UserError

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal to lose; a hang-up must not end the pull
    # a cancel that comes once the file says queued but before the pull's own handlers: kept, not a kill that
    # leaves the file saying queued
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    progress = ProgressFile(Path(args.progress_file), args.host or "", args.name)
    try:
        name = check_model_name(args.name)
        url, ctx = _server(args)
        _refuse_openai(url)
    except UserError as exc:
        progress.fail(" ".join(str(exc).split()))
        progress.close()
        raise
    printer = _PullPrinter(sys.stdout.isatty())
    pull = asyncio.run(pull_detached(progress.path, url, name, ctx.config.quota_bytes, printer.update, progress,
                                     cancelled_before=lambda: bool(early)))
    printer.end()
    return _pull_exit(pull)


class _PullPrinter:
    """A bar redrawn in place on a terminal; a plain line every few seconds in a log."""

    def __init__(self, tty: bool):
        import time

        self.tty = tty
        self.clock = time.monotonic
        self.last = 0.0
        self.last_state = ""
        self.flagged = False
        self.drawn = False

    def update(self, pull: Pull) -> None:
        from app.cluster import present
        from app.cluster.pulls import PULLING

        now = self.clock()
        if pull.over_quota and not self.flagged:
            self.flagged = True
            self._line(f"warning: {pull.name}: {pull.over_quota}")
        changed = pull.state != self.last_state
        self.last_state = pull.state
        if pull.state != PULLING:
            if pull.state in ("done", "cancelled"):
                self._line(present.pull_line(pull))
            return
        due = TTY_REDRAW_S if self.tty else PLAIN_EVERY_S
        if not changed and now - self.last < due:
            return
        self.last = now
        if self.tty:
            bar = ""
            if pull.fraction is not None:
                filled = int(pull.fraction * 24)
                bar = "[" + "#" * filled + "." * (24 - filled) + "] "
            sys.stdout.write("\r\x1b[K" + bar + present.pull_line(pull))
            sys.stdout.flush()
            self.drawn = True
        else:
            print(present.pull_line(pull), flush=True)

    def _line(self, text: str) -> None:
        if self.drawn:
            sys.stdout.write("\r\x1b[K")
            self.drawn = False
        print(text, flush=True)

    def end(self) -> None:
        if self.drawn:
            sys.stdout.write("\n")
            self.drawn = False


def _refuse_openai(url: str) -> None:
    import asyncio

    from app.cluster import models
    from app.errors import UserError

    try:
        entries = asyncio.run(models.list_models(url))
    except models.ServerError:
        return  # the pull itself says what is wrong with the server
    if entries and all(m.served for m in entries):
        raise UserError(f"{url}: {models.OPENAI_NO_MANAGEMENT}")
