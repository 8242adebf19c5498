"""One experiment split over many jobs: shard I of N takes only the units whose key hashes to I (the database
computes the hash, so every host splits alike). `--shard I/N`, or a job array's SLURM_ARRAY_TASK_ID and
SLURM_ARRAY_TASK_COUNT."""

from __future__ import annotations

import os

from app.errors import UserError
from app.experiment import Experiment


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"{text!r} is not I/N — write e.g. --shard 0/4 for the first of four shards")
    i, n = int(index), int(count)
    if n < 1 or i >= n:
        raise ValueError(f"{text!r}: I counts from 0 and must be below N, e.g. 0/4 … 3/4")
    return i, n


def shard_text(shard: tuple[int, int]) -> str:
    return f"{shard[0]}/{shard[1]}"


def array_shard(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of this job array task, None outside an array (or an array of one)."""
    env = os.environ if environ is None else environ
    task, count = env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_ARRAY_TASK_COUNT")
    if not task or not count:
        return None
    low, step = env.get("SLURM_ARRAY_TASK_MIN", "0"), env.get("SLURM_ARRAY_TASK_STEP", "1")
    if not (task.isdigit() and count.isdigit() and low.isdigit() and step.isdigit()) or int(step) < 1:
        raise UserError(f"SLURM_ARRAY_TASK_ID={task!r} of SLURM_ARRAY_TASK_COUNT={count!r} is not a plain range — "
                        "submit the array as --array=0-N-1 (notes-tui submit EXP --array N)")
    offset = int(task) - int(low)
    index, n = offset // int(step), int(count)
    if offset % int(step) or not 0 <= index < n:
        raise UserError(f"array task {task} is not one of {n} evenly spaced tasks — submit the array as "
                        "--array=0-N-1 (notes-tui submit EXP --array N)")
    return (index, n) if n > 1 else None


def refuse_sqlite_shard(exp: Experiment) -> None:
    if exp.spec.source.kind == "sqlite":
        raise UserError(f"{exp.path}: --shard (or a job array) with a SQLite source: many jobs on many hosts writing "
                        "one SQLite file over NFS corrupt it — put the notes and results in MySQL for sharded runs")
