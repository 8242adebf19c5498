"""`notes-tui submit FILE [--array N] [--time T] [--with-server PROFILE]`: a headless run as a Slurm batch job
(slurm/notes-run.sbatch); with --array, N tasks that each answer their own shard; with --with-server, one GPU job that
starts the profile's server, runs the experiment against it and ends with the run (slurm/notes-run-with-server.sbatch).
Prints the job id; the run then shows in the ledger."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli.options import Shared


def register(sub: argparse._SubParsersAction, shared: Shared) -> None:
    from app.cli.options import positive

    submit = shared.add(sub, "submit", shared.json, help="run an experiment as a Slurm batch job (or a job array)")
    submit.add_argument("file", metavar="FILE")
    submit.add_argument("--array", type=positive, metavar="N",
                        help="N array tasks, each answering shard I of N (MySQL only)")
    submit.add_argument("--time", metavar="TIME", help="the job's time limit (D-HH:MM:SS), instead of [slurm.run]'s")
    submit.add_argument("--signal-s", type=positive, metavar="S", default=None,
                        help="SIGTERM this many seconds before the limit (default [slurm.run] signal_s, 120)")
    submit.add_argument("--with-server", metavar="PROFILE",
                        help="one job that starts a server from [profiles.PROFILE] on its GPU node, runs the "
                        "experiment against it and ends with the run (the profile's resources and time)")
    submit.set_defaults(handler=submit_run)


def submit_run(args: argparse.Namespace) -> int:
    from app.cluster.submit import submit_experiment
    from app.context import load_context
    from ledger import resolve_ledger_dir

    ledger_dir = resolve_ledger_dir(args.ledger)
    job_id, cluster = submit_experiment(args.file, load_context(args.workspace), ledger_dir, array=args.array,
                                        time=args.time, signal_s=args.signal_s, with_server=args.with_server)
    if args.json:
        print(json.dumps({"job_id": job_id, "cluster": cluster, "array": args.array, "ledger": str(ledger_dir),
                          "with_server": args.with_server}))
    elif args.with_server:
        print(f"submitted run job {job_id} with its own {args.with_server} server; it ends with the run — follow it "
              f"with notes-tui ledger list (output in {ledger_dir / 'slurm'})")
    else:
        tasks = f" ({args.array} array tasks, one shard each)" if args.array and args.array > 1 else ""
        print(f"submitted run job {job_id}{tasks}; follow it with notes-tui ledger list (output in "
              f"{ledger_dir / 'slurm'})")
    return 0
