"""Adjudications: the reference label a person sets for a note, typically where a study's cells disagree, kept
beside the runs and never in the source database.

`adjudications.jsonl` in the ledger dir holds one record per decision (who, when, scope, field, unit, label, the
label it replaces, a comment), hash-chained like a journal (seq, prev). It is only ever appended to, under an
exclusive lock so two people adjudicating at once cannot fork the chain. The index imports it into
`adjudications`; the seal chain seals it (kind "adjudication", id "adjudications:N" for its first N records) each
time it grew, so `ledger verify` notices a changed record, the last one included.

A scope is the study's name (or the experiment's, for runs outside a study): a reference label belongs to the
notes of one study and one answer field. The latest decision for a unit is its reference; earlier ones stay in the
file as the trail.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .appended import FileShorter, new_lines
from .clock import utc_now_iso
from .journal import encode_record, ensure_private_dir, line_hash
from .meta import get_meta, set_meta

ADJ_FILE = "adjudications.jsonl"
ERROR_KEY = "adjudication_error"
SEAL_KIND = "adjudication"
COMMENT_MAX = 2000
TAIL_BYTES = 64 << 10  # more than any one record (the comment is capped), so the last line is always inside it
RECORD_KEYS = ("scope", "field", "unit", "label", "replaces", "replaces_kind", "comment", "who")


class AdjudicationError(Exception):
    """The adjudications file cannot be appended to as it is (its last record is not one): verify names why."""


@dataclass(frozen=True)
class Decision:
    scope: str
    field: str
    unit: str
    label: Any
    replaces: Any = None
    replaces_kind: str | None = None  # "gold", "adjudicated" or None (the note had no reference label)
    comment: str | None = None


def seal_id(records: int) -> str:
    return f"adjudications:{records}"


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container) and no LOGNAME/USER
        return f"uid {os.getuid()}"


def append(ledger_dir: Path, decision: Decision, who: str | None = None) -> dict[str, Any]:
    """Append one decision (fsynced before this returns); the record written."""
    if decision.comment is not None and len(decision.comment) > COMMENT_MAX:
        raise ValueError(f"the comment is {len(decision.comment)} characters, more than {COMMENT_MAX}")
    ledger_dir = Path(ledger_dir)
    ensure_private_dir(ledger_dir)
    fd = os.open(ledger_dir / ADJ_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        seq, prev = _tail(fd)
        record = {"type": "adjudication", "seq": seq, "prev": prev, "t": utc_now_iso(),
                  "who": who or current_user(), "scope": decision.scope, "field": decision.field,
                  "unit": decision.unit, "label": decision.label, "replaces": decision.replaces,
                  "replaces_kind": decision.replaces_kind, "comment": decision.comment}
        data = encode_record(record) + b"\n"
        written = os.write(fd, data)
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    return record


def _tail(fd: int) -> tuple[int, str | None]:
    """(seq of the next record, hash of the last line). A cut last line is a writer that died mid-line under this
    lock: nothing ever read it, so it goes."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, None
    start = max(0, size - TAIL_BYTES)
    data = os.pread(fd, size - start, start)
    end = data.rfind(b"\n") + 1
    if end < len(data):
        os.ftruncate(fd, start + end)
        data = data[:end]
    if not data:
        return 0, None
    last = data[:-1].rsplit(b"\n", 1)[-1]
    try:
        rec = check_line(last, None, None)
    except ValueError as exc:
        raise AdjudicationError(f"{ADJ_FILE}: its last record is not one ({exc}) — run notes-tui ledger verify") from None
    return rec["seq"] + 1, line_hash(last)


def check_line(line: bytes, seq: int | None, prev: str | None) -> dict[str, Any]:
    """One record of the file; with seq given, also its place in the chain. ValueError names what is wrong."""
    try:
        rec = json.loads(line)
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(rec, dict) or rec.get("type") != "adjudication":
        raise ValueError("not an adjudication record")
    if not isinstance(rec.get("seq"), int) or not all(isinstance(rec.get(k), str) for k in ("scope", "field", "unit")):
        raise ValueError("not an adjudication record (seq, scope, field, unit)")
    if seq is not None:
        if rec["seq"] != seq:
            raise ValueError(f"seq is {rec['seq']!r}, expected {seq}")
        if rec.get("prev") != prev:
            raise ValueError("prev hash does not match the record before")
    return rec


def import_adjudications(conn: sqlite3.Connection, ledger_dir: Path) -> int:
    """Under the lease, in the import's transaction: put records the index lacks into `adjudications`. A broken
    file is recorded (meta) and nothing more is imported from it until a person has looked (`ledger verify`)."""
    if get_meta(conn, ERROR_KEY) is not None:
        return 0
    path = Path(ledger_dir) / ADJ_FILE
    row = conn.execute("select seq, line_hash, end_offset from adjudications order by seq desc limit 1").fetchone()
    seq, prev, offset = (row[0], row[1], row[2]) if row else (-1, None, 0)
    try:
        lines, _size = new_lines(path, offset)  # a cut last line is the appender's to remove, under its lock
    except FileShorter:
        set_meta(conn, ERROR_KEY, f"{ADJ_FILE} is shorter than the {offset} bytes already imported")
        return 0
    new = 0
    for line, line_end in lines:
        try:
            rec = check_line(line, seq + 1, prev)
        except ValueError as exc:
            set_meta(conn, ERROR_KEY, f"{ADJ_FILE} record {seq + 1}: {exc}")
            return new
        seq, prev = seq + 1, line_hash(line)
        conn.execute(
            "insert or replace into adjudications (seq, t, who, scope, field, unit, label, replaces, replaces_kind, "
            "comment, line_hash, end_offset) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, rec.get("t"), rec.get("who"), rec["scope"], rec["field"], rec["unit"], json.dumps(rec.get("label")),
             json.dumps(rec.get("replaces")), rec.get("replaces_kind"), rec.get("comment"), prev, line_end))
        new += 1
    return new


def reference_labels(db: Any, scope: str, field: str) -> dict[str, Any]:
    """unit -> its latest adjudicated label in this scope and field."""
    out: dict[str, Any] = {}
    for row in db.conn.execute("select unit, label from adjudications where scope = ? and field = ? order by seq",
                               (scope, field)):
        out[row[0]] = json.loads(row[1])
    return out


def decisions(db: Any, scope: str, field: str | None = None) -> list[dict[str, Any]]:
    """Every decision in the scope (and field), oldest first, the trail as recorded."""
    sql = ("select seq, t, who, scope, field, unit, label, replaces, replaces_kind, comment, line_hash "
           "from adjudications where scope = ?")
    params: list[Any] = [scope]
    if field is not None:
        sql += " and field = ?"
        params.append(field)
    cur = db.conn.execute(sql + " order by seq", params)
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur]
    for r in rows:
        r["label"], r["replaces"] = json.loads(r["label"]), json.loads(r["replaces"])
    return rows


def reference(db: Any, scope: str, field: str, gold: dict[str, Any], kind: str, gold_info: dict[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The labels to score against and what a report says about them (with `gold_info`, where gold came from).
    `gold`: the source's gold labels; `kind` "adjudicated": those with the scope's adjudications in place (a note
    without gold but adjudicated gains one)."""
    adjudicated = reference_labels(db, scope, field)
    said = {**gold_info, "scope": scope}
    if kind == "gold":
        return gold, {**said, "kind": "gold", "labels": len(gold), "adjudicated": 0,
                      "adjudications_not_used": len(adjudicated)}
    if kind != "adjudicated":
        raise ValueError(f"unknown reference {kind!r}")
    missing = object()
    changed = sum(1 for u, v in adjudicated.items() if gold.get(u, missing) != v)
    labels = {**gold, **adjudicated}  # an adjudicated note's label in place of (or added to) its gold
    return labels, {**said, "kind": "adjudicated", "labels": len(labels), "adjudicated": len(adjudicated),
                    "changed_from_gold": changed, "added_to_gold": sum(1 for u in adjudicated if u not in gold)}


def scope_runs(db: Any, scope: str) -> list[dict[str, Any]]:
    """The runs whose notes a scope's adjudications are about: a study's cells, or an experiment's own runs; oldest
    first, each with its decoded header."""
    cur = db.conn.execute("select run_id, header from runs where study = ? or (study is null and experiment = ?) "
                          "order by started_at, run_id", (scope, scope))
    return [{"run_id": run_id, "header": json.loads(header) if header else {}} for run_id, header in cur]


def known_scopes(db: Any) -> list[str]:
    return [r[0] for r in db.conn.execute("select coalesce(study, experiment) as s from runs group by s "
                                          "order by max(started_at) desc")]


def unit_answered(db: Any, run_ids: list[str], unit: str) -> bool:
    marks = ",".join("?" * len(run_ids))
    return db.conn.execute(f"select 1 from units where unit_id = ? and run_id in ({marks}) limit 1",
                           [unit, *run_ids]).fetchone() is not None


def some_units(db: Any, run_ids: list[str], n: int = 5) -> list[str]:
    marks = ",".join("?" * len(run_ids))
    return [r[0] for r in db.conn.execute(f"select distinct unit_id from units where run_id in ({marks}) limit ?",
                                          [*run_ids, n])]


def match_label(labels: tuple[Any, ...], text: str) -> Any:
    """The answer value a typed label stands for: itself, the same ignoring case, true/false/yes/no for a bool
    field, or the one label it begins ("(1)" for "(1) Likely"). LookupError when none or several match."""
    typed = text.strip()
    if set(labels) == {True, False}:
        word = typed.lower()
        if word in ("true", "yes", "1", "t", "y"):
            return True
        if word in ("false", "no", "0", "f", "n"):
            return False
        raise LookupError(typed)
    for exact in (lambda v: str(v) == typed, lambda v: str(v).lower() == typed.lower(),
                  lambda v: str(v).lower().startswith(typed.lower())):
        found = [v for v in labels if exact(v)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise LookupError(typed)
    raise LookupError(typed)


def decide(scope: str, field: str, unit: str, label: Any, gold: dict[str, Any], adjudicated: dict[str, Any],
           comment: str | None = None) -> Decision | None:
    """The decision to record for setting `unit`'s reference to `label`, with the label it replaces (its latest
    adjudication, else its gold); None when that is its reference already."""
    if unit in adjudicated:
        replaces, kind = adjudicated[unit], "adjudicated"
    elif unit in gold:
        replaces, kind = gold[unit], "gold"
    else:
        replaces, kind = None, None
    if kind is not None and replaces == label:
        return None
    return Decision(scope, field, unit, label, replaces, kind, comment)
