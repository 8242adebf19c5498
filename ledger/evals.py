"""Eval records: each `ledger eval` writes its result as a journal file of its own, `evals/<eval id>.jsonl` (one
record in the journal envelope: seq 0, no prev, time, id), which the import puts in the `evals` table and the chain
seals like a finished run. Nothing is ever written into a run's journal: it belongs to its run alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .clock import utc_now_iso
from .ids import new_run_id
from .importer import compact
from .journal import SUFFIX, encode_record, ensure_private_dir, fsync_dir, line_hash

EVAL_DIR = "evals"
ROW_KEYS = ("units", "with_gold", "without_gold", "accuracy", "kappa", "kappa_low", "kappa_high", "macro_f1", "weighted_f1")


def write_eval(ledger_dir: Path, result: dict[str, Any]) -> str:
    """Write one eval result (see ledger.evaluate) as its own file; returns the eval id."""
    folder = Path(ledger_dir) / EVAL_DIR
    ensure_private_dir(folder)
    eval_id = new_run_id()
    record = {"type": "eval", "seq": 0, "prev": None, "t": utc_now_iso(), "run": eval_id, "eval": result}
    data = encode_record(record) + b"\n"
    path = folder / f"{eval_id}{SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(folder)
    return eval_id


def check_eval_line(line: bytes, eval_id: str) -> dict[str, Any]:
    """The record of an eval file; ValueError names what is wrong."""
    try:
        rec = json.loads(line)
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(rec, dict) or rec.get("type") != "eval" or not isinstance(rec.get("eval"), dict):
        raise ValueError("not an eval record")
    if rec.get("seq") != 0 or rec.get("prev") is not None:
        raise ValueError("an eval file holds one record (seq 0, no prev)")
    if rec.get("run") != eval_id:
        raise ValueError(f"its id is {rec.get('run')!r}, not the file's {eval_id!r}")
    runs = rec["eval"].get("runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError("it names no runs")
    return rec


def import_evals(conn: sqlite3.Connection, ledger_dir: Path) -> int:
    """Put eval files the index does not have yet into `evals`; a broken one is skipped (`ledger verify` names it)."""
    folder = Path(ledger_dir) / EVAL_DIR
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(SUFFIX) and not e.name.startswith("."))
    except FileNotFoundError:
        return 0
    have = {row[0] for row in conn.execute("select eval_id from evals")}
    new = 0
    for name in names:
        eval_id = name[: -len(SUFFIX)]
        if eval_id in have:
            continue
        try:
            line = (folder / name).read_bytes().rstrip(b"\n")
            rec = check_eval_line(line, eval_id)
        except (OSError, ValueError):
            continue
        result = rec["eval"]
        row = {key: result.get(key) for key in ROW_KEYS}
        row.update(eval_id=eval_id, runs=compact(result["runs"]), experiment=result.get("experiment"),
                   field=result.get("field"), created_at=rec.get("t"), gold=compact(result.get("gold")),
                   result=compact(result), line_hash=line_hash(line))
        cols = ", ".join(row)
        conn.execute(f"insert or replace into evals ({cols}) values ({', '.join('?' for _ in row)})", list(row.values()))
        new += 1
    return new


def _decoded(rows: Any) -> list[dict[str, Any]]:
    return [{"eval_id": eval_id, "created_at": created_at, **json.loads(text)} for eval_id, created_at, text in rows]


def evals_for(conn: sqlite3.Connection, run_ids: list[str]) -> list[dict[str, Any]]:
    """Evals whose runs are all among `run_ids` (the evals a report of those runs shows), newest first."""
    wanted = set(run_ids)
    rows = conn.execute("select eval_id, created_at, result from evals order by created_at desc, eval_id desc")
    return [e for e in _decoded(rows) if set(e.get("runs") or ()) <= wanted]


def evals_including(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """Evals that scored `run_id`, alone or with other runs, newest first."""
    rows = conn.execute(
        "select e.eval_id, e.created_at, e.result from evals e where exists "
        "(select 1 from json_each(e.runs) j where j.value = ?) order by e.created_at desc, e.eval_id desc", (run_id,))
    return _decoded(rows)
