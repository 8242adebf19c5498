"""Forged journals and headers for the ledger tests and the pinned snapshot ledger."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from ledger.journal import encode_record, line_hash
from ledger.procinfo import pid_start_time, this_host

OUTCOMES = ("valid", "invalid", "empty", "error")


def make_header(**overrides: Any) -> dict[str, Any]:
    header = {
        "experiment": "smoke",
        "description": "a test run",
        "toml_text": 'name = "smoke"\n',
        "toml_sha256": "ab" * 32,
        "prompt_hash": "cd" * 32,
        "backend": "ollama",
        "model": "llama3.2:1b",
        "model_digest": "sha256:" + "ef" * 32,
        "server_version": "0.6.0",
        "hosts": ["http://gpu1:11434"],
        "options": {"num_ctx": 8192, "temperature": 0},
        "tool_version": "0.1.0",
        "user": "alice",
        "hostname": this_host(),
        "pid": os.getpid(),
        "pid_start": pid_start_time(os.getpid()),
        "slurm": {"job_id": "123", "array_job_id": "120", "array_task_id": "3"},
        "total": 100,
        "source": {"kind": "sqlite", "table": "notes"},
        "results_table": "results",
        "started_at": "2024-05-01T10:00:00.000Z",
    }
    header.update(overrides)
    return header


def make_units(start: int, n: int, prefix: str = "u") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{i:06d}",
            "outcome": OUTCOMES[i % 4],
            "answer": {"label": "yes" if i % 2 else "no", "score": i % 7},
            "attempts": 1 + i % 3,
            "latency_ms": 12.5 + i,
            "tokens_in": 100 + i,
            "tokens_out": 10,
            "truncated": i % 10 == 0,
            "error": "timeout" if i % 4 == 3 else None,
            "host": "gpu1",
        }
        for i in range(start, start + n)
    ]


def counts_for(done: int, total: int, **extra: int) -> dict[str, int]:
    return {
        "total": total,
        "done": done,
        "valid": (done + 3) // 4,
        "invalid": (done + 2) // 4,
        "retried": done // 3,
        "empty": (done + 1) // 4,
        "truncated": (done + 9) // 10,
        "errors": done // 4,
        "tokens_in": done * 100,
        "tokens_out": done * 10,
        **extra,
    }


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def forge_next(path: Path, body: dict[str, Any], t: str) -> bytes:
    """The bytes of a valid next record for the journal at `path` (the file is not modified)."""
    lines = read_lines(path)
    last = json.loads(lines[-1])
    record = {"type": body["type"], "seq": last["seq"] + 1, "prev": line_hash(lines[-1]), "t": t, "run": last["run"]}
    record.update({k: v for k, v in body.items() if k != "type"})
    return encode_record(record) + b"\n"


def forge_journal(ledger_dir: Path, run_id: str, records: list[tuple[str, dict[str, Any]]]) -> Path:
    """A journal with chosen times: records are (t, body) where body has a `type`."""
    path = ledger_dir / "journal" / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    prev = None
    with open(path, "wb") as f:
        for seq, (t, body) in enumerate(records):
            record = {"type": body["type"], "seq": seq, "prev": prev, "t": t, "run": run_id}
            record.update({k: v for k, v in body.items() if k != "type"})
            line = encode_record(record)
            f.write(line + b"\n")
            prev = line_hash(line)
    return path


def table_rows(db_path: Path, table: str) -> list[tuple]:
    conn = sqlite3.connect(db_path)
    try:
        return sorted(conn.execute(f"select * from {table}").fetchall(), key=repr)
    finally:
        conn.close()
