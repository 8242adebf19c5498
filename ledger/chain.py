"""The seal across runs: `chain.jsonl` in the ledger dir, one line per finished run (and per eval, and per
growth of the adjudications file) in the order the index imported them. Each line names a journal, its number of
records and the hash of its last record, and carries the hash of the line before it.

A journal's own chain proves that its records follow one another, but it cannot notice a change to its last record
(an edited count in the close record) or a whole journal that went missing. The seal can. The hash of the last line
is the ledger's *head*: every report prints it, and `ledger verify --head HASH` checks a ledger against a head that
was kept elsewhere, because anyone who can write the files could also rewrite the whole chain.

Only the holder of the index lease appends, and a line is on disk (fsynced) before the index records it, so a crash
in between is caught up on the next import. The file is never rewritten: a chain found broken stays broken and
nothing more is sealed until a person has looked (`ledger verify` names the line).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adjudication import SEAL_KIND as ADJ_KIND
from .adjudication import seal_id
from .appended import FileShorter, new_lines
from .clock import utc_now_iso
from .journal import SUFFIX, encode_record, line_hash
from .meta import get_meta, set_meta

CHAIN_FILE = "chain.jsonl"
ERROR_KEY = "chain_error"
KINDS = ("run", "eval", ADJ_KIND)


@dataclass(frozen=True)
class Seal:
    kind: str  # run | eval
    id: str
    records: int
    head: str  # hash of the journal's last record


@dataclass(frozen=True)
class Head:
    hash: str
    entries: int


def seal_record(seq: int, prev: str | None, t: str, seal: Seal) -> dict[str, Any]:
    return {"seq": seq, "prev": prev, "t": t, "kind": seal.kind, "id": seal.id, "records": seal.records, "head": seal.head}


def check_seal_line(line: bytes, seq: int, prev: str | None) -> dict[str, Any]:
    """Parse line seq+1 of the chain; ValueError names what is wrong with it."""
    try:
        rec = json.loads(line)
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if rec.get("seq") != seq:
        raise ValueError(f"seq is {rec.get('seq')!r}, expected {seq}")
    if rec.get("prev") != prev:
        raise ValueError("prev hash does not match the line before")
    if rec.get("kind") not in KINDS or not isinstance(rec.get("id"), str) or not isinstance(rec.get("head"), str) \
            or not isinstance(rec.get("records"), int):
        raise ValueError("not a seal (kind, id, records, head)")
    return rec


def head(conn: sqlite3.Connection) -> Head | None:
    row = conn.execute("select line_hash, seq from chain order by seq desc limit 1").fetchone()
    return None if row is None else Head(row[0], row[1] + 1)


def sync_chain(conn: sqlite3.Connection, ledger_dir: Path, check_lease: Callable[[], None]) -> int:
    """Under the lease: read lines of chain.jsonl the index lacks, then seal the runs and evals that finished since.
    Returns how many were sealed now."""
    if get_meta(conn, ERROR_KEY) is not None:
        return 0
    path = ledger_dir / CHAIN_FILE
    conn.execute("BEGIN IMMEDIATE")
    try:
        seq, prev, offset = _catch_up(conn, path)
        sealed = 0
        if seq is not None:
            pending = _unsealed(conn)
            if pending:
                _append(conn, path, pending, seq, prev, offset)
                sealed = len(pending)
        check_lease()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return sealed


def _catch_up(conn: sqlite3.Connection, path: Path) -> tuple[int | None, str | None, int]:
    """(seq of the last line, its hash, end offset) once the table holds every complete line of the file; seq None
    when the file is broken (the error is recorded and nothing more will be sealed)."""
    row = conn.execute("select seq, line_hash, end_offset from chain order by seq desc limit 1").fetchone()
    seq, prev, offset = (row[0], row[1], row[2]) if row else (-1, None, 0)
    try:
        lines, size = new_lines(path, offset)
    except FileShorter:
        set_meta(conn, ERROR_KEY, f"{CHAIN_FILE} is shorter than the {offset} bytes already sealed")
        return None, prev, offset
    end = offset
    for line, line_end in lines:
        try:
            rec = check_seal_line(line, seq + 1, prev)
        except ValueError as exc:
            set_meta(conn, ERROR_KEY, f"{CHAIN_FILE} line {seq + 2}: {exc}")
            return None, prev, offset
        seq, prev, end = seq + 1, line_hash(line), line_end
        _insert(conn, rec, prev, end)
    if end < size:
        # A cut last line: only a lease holder writes here, so its writer died mid-line. Nothing ever read it.
        os.truncate(path, end)
    return seq, prev, end


def _unsealed(conn: sqlite3.Connection) -> list[Seal]:
    # In the order they finished, so one pass that imports many runs seals them as they happened.
    rows = conn.execute(
        f"""select 'run', r.run_id, j.seq + 1, j.last_hash, r.ended_at from runs r
            join journals j on j.file = r.run_id || '{SUFFIX}'
            where r.recorded_status != 'running' and j.error is null and j.last_hash is not null
              and not exists (select 1 from chain c where c.kind = 'run' and c.id = r.run_id)
            union all
            select 'eval', e.eval_id, 1, e.line_hash, e.created_at from evals e
            where not exists (select 1 from chain c where c.kind = 'eval' and c.id = e.eval_id)
            order by 5, 2"""
    ).fetchall()
    seals = [Seal(kind, ident, records, last) for kind, ident, records, last, _ in rows]
    grown = conn.execute(
        "select count(*), (select line_hash from adjudications order by seq desc limit 1) from adjudications "
        "having count(*) > coalesce((select max(records) from chain where kind = ?), 0)", (ADJ_KIND,)).fetchone()
    if grown is not None:  # the adjudications file grew since its last seal: seal its first N records now
        seals.append(Seal(ADJ_KIND, seal_id(grown[0]), grown[0], grown[1]))
    return seals


def _append(conn: sqlite3.Connection, path: Path, pending: list[Seal], seq: int, prev: str | None, offset: int) -> None:
    t = utc_now_iso()
    lines, rows = [], []
    end = offset
    for seal in pending:
        seq += 1
        rec = seal_record(seq, prev, t, seal)
        line = encode_record(rec)
        prev = line_hash(line)
        end += len(line) + 1
        lines.append(line + b"\n")
        rows.append((rec, prev, end))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        data = b"".join(lines)
        written = os.write(fd, data)
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)  # on disk before the index says it is sealed
    finally:
        os.close(fd)
    for rec, digest, end_offset in rows:
        _insert(conn, rec, digest, end_offset)


def _insert(conn: sqlite3.Connection, rec: dict[str, Any], digest: str, end_offset: int) -> None:
    conn.execute(
        "insert or replace into chain (seq, kind, id, records, head, t, line_hash, end_offset) values (?, ?, ?, ?, ?, ?, ?, ?)",
        (rec["seq"], rec["kind"], rec["id"], rec["records"], rec["head"], rec.get("t"), digest, end_offset),
    )
