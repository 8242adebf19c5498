"""`ledger study`: the cells of a study (runs tagged with its name) scored against gold labels the caller read from
the source, their stability across repeats, paired tests between cells, and the per-note table.

A cell's label for a note is what its results row holds: a valid answer's label, or for an invalid one the fallback
written in its place (as `ledger eval` scores). A cell run more than once (interrupted, then resumed) counts its
latest answer for each note. Notes a cell never answered are missing in that cell, not wrong.

At scale (12 cells x 100,000 notes: bench/study_scale.py) nothing here goes note by note in Python: each run's
labels come out of SQLite as one string (a character a note: for a closed run, the row the importer stored when it
closed, store_scan; else _scan, which reads every answer's JSON), become a column of one byte a note, and every
table the figures need (a cell against gold, the repeats of a model and prompt, two cells and gold) is counted on
those columns in C (_joint); the bootstrap draws counts, not notes (stability.bootstrap_counts). Only the page of the
per-note table asked for becomes rows; its order and the "differs" filter need every note's labels, which are in the
columns already (study_notes: the page alone, without the statistics).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations, compress, repeat
from typing import Any

from .agreement import accuracy, averages, class_scores, cohen_kappa, confusion_from_counts
from .answers import AnswerField, answer_fields
from .evaluate import INVALID, FieldNotScorable, latest_labels
from .journal import SUFFIX
from .reader import Reader
from .stability import (
    LinearStatistic,
    bootstrap_counts,
    fleiss_statistic,
    krippendorff_statistic,
    mcnemar,
    sampler,
    wilson,
)

SMALL_N = 30  # under this many notes every figure comes with a warning
BOOTSTRAP_REPS = 1000
BOOTSTRAP_SEED = 20261206


class StudyNotFound(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known


def study_names(db: Reader) -> list[str]:
    return [r["study"] for r in db.query("select study, max(started_at) as last from runs where study is not null "
                                         "group by study order by last desc")]


def load_cells(db: Reader, name: str) -> list[dict[str, Any]]:
    """The study's cells in their planned order, each with its runs (oldest first)."""
    rows = list(db.query("select run_id, cell, model, model_digest, prompt_hash, status, started_at, header, done, "
                         "valid, invalid, tokens_in, tokens_out from runs where study = ? order by started_at, run_id",
                         [name]))
    if not rows:
        raise StudyNotFound(name, study_names(db))
    cells: dict[str, dict[str, Any]] = {}
    for row in rows:
        header = json.loads(row["header"]) if row["header"] else {}
        info = header.get("study") or {}
        cell = cells.setdefault(row["cell"], {
            "cell": row["cell"], "model": info.get("model"), "prompt": info.get("prompt"), "repeat": info.get("repeat"),
            "seed": info.get("seed"), "index": info.get("index") or 0, "runs": [],
        })
        cell["runs"].append(dict(row) | {"header": None})
        cell["header"] = header  # the latest run's: its answer schema and fallback are what the cell now writes
        cell["run_id"] = row["run_id"]
        cell["model_name"] = row["model"]
        cell["model_digest"] = row["model_digest"]
        cell["prompt_hash"] = row["prompt_hash"]
    return sorted(cells.values(), key=lambda c: (c["index"], c["cell"]))


def scorable_field(cells: list[dict[str, Any]], field: str | None) -> AnswerField:
    header = cells[0]["header"]
    fields = {f.name: f for f in answer_fields(header.get("answer_schema")) if f.categorical}
    if field is None:
        if not fields:
            raise FieldNotScorable("(none)", [])
        field = next(iter(fields))
    if field not in fields:
        raise FieldNotScorable(field, list(fields))
    return fields[field]


def cell_labels(db: Reader, cell: dict[str, Any], spec: AnswerField) -> tuple[dict[str, Any], Counter]:
    """unit id -> label of the cell's latest answer, and how many of its answers were valid / invalid / empty / errors
    (one cell as a dict: what study_report reads in bulk, see _collect)."""
    fallback = (cell["header"].get("fallback") or {}).get(spec.name)
    return latest_labels(db, [r["run_id"] for r in cell["runs"]], spec, fallback)


def study_report(db: Reader, name: str, gold: dict[str, Any], gold_info: dict[str, Any], field: str | None = None,
                 reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED, offset: int = 0, limit: int | None = None,
                 different_only: bool = False) -> dict[str, Any]:
    """Every figure of the study, and the notes from `offset` on (`limit` of them, all when None; only those where
    cells disagree or differ from gold with `different_only`). Ask for a page: all notes is a dict per note."""
    cells = load_cells(db, name)
    spec = scorable_field(cells, field)
    preferred = list(spec.labels)
    table = _collect(db, cells, spec, gold, usage=True)
    rows = [_cell_row(cell, table, i, preferred, reps, seed) for i, cell in enumerate(cells)]
    _add_costs(db, name, cells, rows)
    best = max((r for r in rows if r["accuracy"] is not None), key=lambda r: (r["accuracy"], r["n"]), default=None)
    notes = _Notes(table)
    return {
        "study": name,
        "field": spec.name,
        "labels": preferred,
        "reference": {"kind": "gold", **gold_info, "labels": len(gold), "adjudicated": 0},
        "bootstrap": {"reps": reps, "seed": seed, "over": "notes", "sampler": sampler()},
        "small_n": SMALL_N,
        "cells": rows,
        "best_cell": best["cell"] if best else None,
        "best_confusion": _confusion(table, best["cell"], preferred) if best else None,
        "stability": _stability(cells, table, reps, seed),
        "paired": _paired(cells, table),
        "notes_total": notes.different_total if different_only else notes.total,  # of the table listed
        "notes_different": notes.different_total,
        "notes_all": notes.total,  # whatever the filter: every note a cell labeled or gold has
        "notes": notes.page(offset, limit, different_only),
        "offset": offset,
    }


def study_notes(db: Reader, name: str, gold: dict[str, Any], field: str | None = None, offset: int = 0,
                limit: int | None = 50, different_only: bool = False) -> dict[str, Any]:
    """One page of the per-note table (study_report's `notes`, `notes_total`, `notes_different`, `offset`) without
    the statistics. What it still reads is every cell's label of every note, one byte each (a compact scan, see
    _collect): the order of the notes is over all of them (a note is in the table when a cell labeled it or gold has
    it), and whether a note differs needs all its labels; only the page becomes rows."""
    cells = load_cells(db, name)
    table = _collect(db, cells, scorable_field(cells, field), gold)
    notes = _Notes(table)
    return {"notes_total": notes.different_total if different_only else notes.total,
            "notes_different": notes.different_total, "notes_all": notes.total,
            "notes": notes.page(offset, limit, different_only), "offset": offset}


# --- The labels of every cell, in bulk -------------------------------------------------------------------------------
#
# One query a run returns two strings: the run's unit ids (joined by SEP) and, in the same order, one character a unit
# for what the cell says of it (a label, an invalid answer, empty, an error). The strings of runs over the same notes
# are equal, so a cell's column lines up with the others by position without a lookup a note; each column becomes a
# bytes object of label codes (0: no label). Counting combinations of codes is then C work (bytes.count, translate,
# big-integer arithmetic) rather than a Python loop a note: see _joint.

SEP = "\x1f"
# what a unit's character says besides a label: no row in the cell, an error, empty (any other outcome), a valid
# answer without the field (empty for the figures, an answer for latency and tokens), a valid answer SQL cannot map
# (read again: _resolve_other), an invalid answer (the cell's fallback)
NOT_ANSWERED, ERROR, EMPTY, NO_FIELD, OTHER, INVALID_MARK = " ", "!", ".", ",", "?", "~"
LABEL_CHARS = [chr(c) for c in range(0x30, 0x100) if chr(c) not in (OTHER, INVALID_MARK) and not 0x7F <= c < 0xA0]
MAX_CODES = 255  # label codes are bytes; 0 is "no label"


class _Codes:
    """Label values <-> codes 1..255, by Python equality (as a Counter of (gold, label) pairs counts them)."""

    def __init__(self) -> None:
        self.values: list[Any] = [None]
        self.index: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        c = self.index.get(value)
        if c is None:
            c = len(self.values)
            if c > MAX_CODES:
                raise ValueError(f"more than {MAX_CODES} distinct labels in the study: answers outside the schema?")
            self.index[value] = c
            self.values.append(value)
        return c


@dataclass
class _Table:
    """Every cell's label of every note: `ids[p]` is the note at position p, `gold[p]` its gold code and
    `cols[i][p]` the code of cell `names[i]` (0: no label); `values[code]` is the label; `outcomes[i]`: how many of
    the cell's latest answers were valid, invalid, empty, errors; `usage[i]` its mean latency and tokens an answer
    (when _collect was asked for them)."""

    names: list[str]
    values: list[Any]
    ids: list[str]
    gold: bytes
    cols: list[bytes]
    outcomes: list[Counter]
    usage: list[dict[str, Any]]


def _mapped(spec: AnswerField) -> list[tuple[Any, Any]]:
    """(label, the value SQL compares json_extract's with) of each label character, LABEL_CHARS[i] for the i-th:
    string choices and bools; any other value comes out as OTHER."""
    if spec.kind == "bool":
        return [(True, 1), (False, 0)]  # what json_extract gives for true and false; spec.value() reads any value
    return [(v, v) for v in spec.labels if isinstance(v, str)][: len(LABEL_CHARS)]


def _char_expr(path: str, sql_values: list[Any]) -> tuple[str, list[Any]]:
    """The SQL expression of a unit's character (LABEL_CHARS[i] where the field's value is sql_values[i]) and its
    parameters."""
    other = f"case when json_extract(answer, ?) is null then '{NO_FIELD}' else '{OTHER}' end"
    params: list[Any] = []
    if sql_values:
        label = f"case json_extract(answer, ?) {' '.join('when ? then ?' for _ in sql_values)} else {other} end"
        params += [path] + [x for i, sql_value in enumerate(sql_values) for x in (sql_value, LABEL_CHARS[i])]
    else:
        label = other
    params.append(path)
    char = (f"case outcome when 'valid' then {label} when 'invalid' then '{INVALID_MARK}' when 'error' then '{ERROR}' "
            f"else '{EMPTY}' end")
    return char, params


def _char_sql(spec: AnswerField, codes: _Codes) -> tuple[str, list[Any], dict[str, int]]:
    """The SQL expression of a unit's character, its parameters, and label character -> code. String choices and
    bools are mapped in SQL; any other value comes out as OTHER and is read again (_resolve_other)."""
    mapped = _mapped(spec)
    chars = {LABEL_CHARS[i]: codes.code(label) for i, (label, _) in enumerate(mapped)}
    char, params = _char_expr(spec.path(), [sql_value for _, sql_value in mapped])
    return char, params, chars


USAGE = ("latency_ms", "tokens_in", "tokens_out")  # averaged over a cell's answers (valid or invalid), every run's
USAGE_SUMS = "".join(f", total({c}), count({c})" for c in USAGE)


def _scan(db: Reader, char: str, params: list[Any], run_id: str, usage: bool
          ) -> tuple[str | None, list[str] | None, str, list[float]]:
    """One run: its unit ids joined by SEP, a character a unit in the same order (both group_concat read the rows in
    one order), and with `usage` the sum and count of each USAGE column over all its units. An id holding SEP (or
    none) would not split back: such a run is read row by row, its ids a list and `joined` None."""
    count, joined, text, *sums = db.conn.execute(
        f"select count(*), group_concat(unit_id, char(31)), group_concat({char}, ''){USAGE_SUMS if usage else ''} "
        f"from units where run_id = ?", params + [run_id]).fetchone()
    joined, text = joined or "", text or ""
    if len(text) == count and joined.count(SEP) == max(count - 1, 0):
        return joined, None, text, sums
    rows = db.conn.execute(f"select unit_id, {char} from units where run_id = ?", params + [run_id]).fetchall()
    return None, [r[0] for r in rows], "".join(r[1] for r in rows), sums


def _answered_sums(db: Reader, run_id: str, ids: list[str], text: str, sums: list[float]) -> list[float]:
    """The sums of _scan (`sums`, over all the run's units) over its answers alone: less those of its errors and
    empty units, found by id. (Summing all units in the scan and taking a few off is cheaper than a filter on every
    row of it; when they are not few, the filter.)"""
    wanted = [ids[p] for p in _positions(text, (ERROR, EMPTY))]
    if len(wanted) > len(text) // 5:
        return list(db.conn.execute(f"select {USAGE_SUMS[2:]} from units where run_id = ? "
                                    f"and outcome in ('valid', 'invalid')", [run_id]).fetchone())
    sums = list(sums)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start: start + 500]
        row = db.conn.execute(f"select {USAGE_SUMS[2:]} from units where run_id = ? and unit_id in "
                              f"({','.join('?' * len(chunk))})", [run_id, *chunk]).fetchone()
        sums = [a - b for a, b in zip(sums, row)]
    return sums


def _positions(text: str, chars: tuple[str, ...]) -> Iterator[int]:
    for ch in chars:
        p = text.find(ch)
        while p >= 0:
            yield p
            p = text.find(ch, p + 1)


# --- What _scan reads, stored at import ------------------------------------------------------------------------------
#
# A closed run of a study does not change, so the importer works out once what _scan would read of it (store_scan,
# called under the lease: Importer._store_study_scans) and `ledger study` reads a row a run instead of parsing every
# answer of every run again. The characters of a stored run are the run's own: LABEL_CHARS[i] is the i-th value of
# its field's schema (_mapped), which the study, whose cells may differ in schema, maps to its own (_translation). The
# row of a run names the journal line (`seq`) it was worked out at; a row that is not the journal's latest, a run
# still running, an index from before the tables (m005) or a run the scan reads row by row: read by _scan as before.

SCANS, LABELS = "study_scans", "study_labels"
SUM_COLUMNS = [f"{c}_{s}" for c in USAGE for s in ("total", "count")]  # in USAGE_SUMS's order


def store_scan(conn: Any, run_id: str, header: dict[str, Any], seq: int | None) -> int:
    """Work out and store what _scan reads of the run for each categorical field of its own answer schema, and the
    sums of its units' latency and tokens (one pass over its units; the caller holds the lease and a transaction).
    A run whose unit ids do not split back (one holds SEP), or whose answers SQLite cannot read, gets a row without
    ids: _scan reads it (and says what is wrong) each time. Returns about how many bytes it stored."""
    fields = [f for f in answer_fields(header.get("answer_schema")) if f.categorical]
    conn.execute(f"delete from {LABELS} where run_id = ?", [run_id])
    exprs, params = [], []
    for f in fields:
        char, p = _char_expr(f.path(), [sql_value for _, sql_value in _mapped(f)])
        exprs.append(f", group_concat({char}, '')")
        params += p
    row: tuple = ()
    if fields:
        try:
            row = conn.execute(f"select count(*), group_concat(unit_id, char(31)){''.join(exprs)}{USAGE_SUMS} "
                               f"from units where run_id = ?", params + [run_id]).fetchone()
        except (sqlite3.OperationalError, UnicodeEncodeError) as exc:  # malformed JSON, a label SQLite cannot take:
            if isinstance(exc, sqlite3.OperationalError) and "json" not in str(exc).lower():  # `ledger study` says
                raise
    count, joined, texts, sums = (row[0], row[1] or "", [t or "" for t in row[2: 2 + len(fields)]],
                                  list(row[2 + len(fields):])) if row else (None, None, [], [None] * len(SUM_COLUMNS))
    if joined is not None and (joined.count(SEP) != max(count - 1, 0) or any(len(t) != count for t in texts)):
        joined = None
    conn.execute(f"insert or replace into {SCANS} (run_id, seq, units, ids, {', '.join(SUM_COLUMNS)}) "
                 f"values (?, ?, ?, ?{', ?' * len(SUM_COLUMNS)})", [run_id, seq, count, joined, *sums])
    if joined is not None:
        conn.executemany(f"insert into {LABELS} (run_id, field, labels, chars) values (?, ?, ?, ?)",
                         [(run_id, f.name, json.dumps([v for _, v in _mapped(f)]), text)
                          for f, text in zip(fields, texts)])
    return len(joined or "") + sum(map(len, texts))


def _has_stored(db: Reader) -> bool:
    return db.conn.execute("select count(*) from sqlite_master where type = 'table' and name = ?",
                           [LABELS]).fetchone()[0] > 0


def _stored_scan(db: Reader, run_id: str, spec: AnswerField, usage: bool, translations: dict[str, bytes]
                 ) -> tuple[str, None, str, list[float]] | None:
    """What _scan(db, ..., run_id, usage) returns, from the run's stored row, or None when there is none to trust."""
    row = db.conn.execute(
        f"select s.ids, l.labels, l.chars{''.join(f', s.{c}' for c in SUM_COLUMNS)} from {SCANS} s "
        f"join {LABELS} l on l.run_id = s.run_id and l.field = ? "
        f"where s.run_id = ? and s.seq = (select seq from journals where file = ?)",
        [spec.name, run_id, run_id + SUFFIX]).fetchone()
    if row is None or row[0] is None:
        return None
    joined, labels, chars, *sums = row
    table = translations.get(labels)
    if table is None:
        table = translations[labels] = _translation(json.loads(labels), spec)
    return joined, None, chars.encode("latin-1").translate(table).decode("latin-1"), sums if usage else []


def _translation(run_values: list[Any], spec: AnswerField) -> bytes:
    """A run's label characters -> the study's: the run's i-th value is the study's first equal one (as SQL compares
    them: a string with a string, a number with a number), else OTHER (read again by _resolve_other, as the study's
    own scan would have it); the other characters stay."""
    study_values = [sql_value for _, sql_value in _mapped(spec)]
    table = bytearray(range(256))
    for i, value in enumerate(run_values):
        j = next((j for j, v in enumerate(study_values) if type(v) is type(value) and v == value), None)
        table[ord(LABEL_CHARS[i])] = ord(OTHER if j is None else LABEL_CHARS[j])
    return bytes(table)


def _collect(db: Reader, cells: list[dict[str, Any]], spec: AnswerField, gold: dict[str, Any],
             usage: bool = False) -> _Table:
    codes = _Codes()
    for label in spec.labels:
        codes.code(label)
    char, params, chars = _char_sql(spec, codes)
    stored = _has_stored(db)
    translations: dict[str, bytes] = {}
    ids: list[str] = []
    pos: dict[str, int] | None = None
    base: str | None = None  # the ids of the first run read: a run with the same ids lines up as it is
    texts: list[str] = []
    outcomes: list[Counter] = []
    usages: list[dict[str, Any]] = []
    for cell in cells:
        parts = []
        sums = [0.0] * (2 * len(USAGE))
        for run in cell["runs"]:
            scanned = _stored_scan(db, run["run_id"], spec, usage, translations) if stored else None
            joined, run_ids, run_text, run_sums = scanned or _scan(db, char, params, run["run_id"], usage)
            if not ids and joined and len(cell["runs"]) == 1:
                base, ids = joined, joined.split(SEP)
            if run_ids is None and joined == base:
                run_ids = ids  # its units are the first len(run_text) of ids
            parts.append((joined, run_ids, run_text))
            if usage:
                if ERROR in run_text or EMPTY in run_text:
                    if run_ids is None:
                        run_ids = joined.split(SEP)
                    run_sums = _answered_sums(db, run["run_id"], run_ids, run_text, run_sums)
                sums = [a + b for a, b in zip(sums, run_sums)]
        usages.append({key: sums[2 * k] / sums[2 * k + 1] if sums[2 * k + 1] else None for k, key in enumerate(USAGE)})
        if len(parts) == 1 and parts[0][0] and parts[0][0] == base:  # one string compare: no id is looked at
            text = answered = parts[0][2]
        else:  # resumed, or other notes: the latest answer a unit, placed by id
            latest: dict[str, str] = {}
            for joined, run_ids, run_text in parts:
                latest.update(zip(joined.split(SEP) if run_ids is None and run_text else run_ids or [], run_text))
            if pos is None:
                pos = dict(zip(ids, range(len(ids))))
            pos = _extend(ids, pos, latest.keys() - pos.keys())
            text = "".join(map(latest.get, ids, repeat(NOT_ANSWERED)))
            answered = "".join(latest.values())
        texts.append(text)
        invalid, error = answered.count(INVALID_MARK), answered.count(ERROR)
        empty = answered.count(EMPTY) + answered.count(NO_FIELD)
        outcomes.append(Counter({"valid": len(answered) - invalid - error - empty, "invalid": invalid,
                                 "empty": empty, "error": error}))
    for value in dict.fromkeys(gold.values()):
        codes.code(value)
    if pos is None:
        pos = dict(zip(ids, range(len(ids))))
    if not gold.keys() <= pos.keys():
        pos = _extend(ids, pos, gold.keys() - pos.keys())  # gold for notes no cell has: rows without labels
    n = len(ids)
    gold_col = bytes(map(codes.index.get, map(gold.get, ids), repeat(0)))
    cols = []
    for cell, text in zip(cells, texts):
        fallback = (cell["header"].get("fallback") or {}).get(spec.name)
        table = bytearray(256)
        for ch, code in chars.items():
            table[ord(ch)] = code
        table[ord(INVALID_MARK)] = codes.code(fallback if fallback is not None else INVALID)
        col = bytearray(text.encode("latin-1").translate(table))
        col += bytes(n - len(col))
        if OTHER in text:
            _resolve_other(db, cell, spec, codes, ids, text, col)
        cols.append(bytes(col))
    return _Table([c["cell"] for c in cells], codes.values, ids, gold_col, cols, outcomes, usages)


def _extend(ids: list[str], pos: dict[str, int], new: set[str]) -> dict[str, int]:
    """Notes not placed yet go at the end (in id order: positions carry no meaning, the table sorts its notes)."""
    for uid in sorted(new):
        pos[uid] = len(ids)
        ids.append(uid)
    return pos


def _resolve_other(db: Reader, cell: dict[str, Any], spec: AnswerField, codes: _Codes, ids: list[str], text: str,
                   col: bytearray) -> None:
    """Valid answers SQL did not map (not a string choice, or outside the schema): their values from the rows, as
    latest_labels reads them (spec.value of json_extract), the latest run's for each note."""
    at = {ids[p]: p for p in _positions(text, (OTHER,))}
    wanted = list(at)
    for run in cell["runs"]:  # oldest first: a later run's value replaces an earlier one
        for start in range(0, len(wanted), 500):
            chunk = wanted[start: start + 500]
            rows = db.conn.execute(
                f"select unit_id, json_extract(answer, ?) from units where run_id = ? and outcome = 'valid' "
                f"and unit_id in ({','.join('?' * len(chunk))})", [spec.path(), run["run_id"], *chunk])
            for uid, raw in rows:
                value = spec.value(raw)
                if value is not None:
                    col[at[uid]] = codes.code(value)


def _joint(cols: list[bytes], size: int) -> dict[tuple[int, ...], int]:
    """How many notes have each combination of codes across `cols` (byte columns of one length, codes < size):
    the columns are folded one by one into a byte of combination indexes (combination * k + code, done on the
    columns as big integers: no carry while the product stays under 256), each combination counted by bytes.count;
    a Counter over the notes when combinations outgrow a byte."""
    present = [v for v in range(size) if v in cols[0]]
    keys = [(v,) for v in present]
    folded = cols[0].translate(_dense(present))
    counts = [folded.count(i) for i in range(len(keys))]
    n = len(folded)
    for col in cols[1:]:
        present = [v for v in range(size) if v in col]
        k = len(present)
        if len(keys) * k > 256:
            return dict(Counter(zip(*cols)))
        combined = int.from_bytes(folded, "little") * k + int.from_bytes(col.translate(_dense(present)), "little")
        folded = combined.to_bytes(n, "little")
        if len(keys) * k > 48:  # bytes.count is a pass each: past a few dozen, one Counter pass is cheaper
            seen = Counter(folded)
            counts = [seen.get(i, 0) for i in range(len(keys) * k)]
        else:
            counts = [folded.count(i) for i in range(len(keys) * k)]
        table = bytearray(256)
        new_keys = []
        new_counts = []
        for i, c in enumerate(counts):
            if c:
                table[i] = len(new_keys)
                new_keys.append(keys[i // k] + (present[i % k],))
                new_counts.append(c)
        keys, counts = new_keys, new_counts
        folded = folded.translate(table)
    return {key: c for key, c in zip(keys, counts) if c}


def _dense(present: list[int]) -> bytes:
    table = bytearray(256)
    for i, v in enumerate(present):
        table[v] = i
    return bytes(table)


# --- The figures -----------------------------------------------------------------------------------------------------

def _cell_row(cell: dict[str, Any], table: _Table, i: int, preferred: list[Any], reps: int, seed: int) -> dict[str, Any]:
    values = table.values
    joint = {key: k for key, k in _joint([table.gold, table.cols[i]], len(values)).items() if key[0] and key[1]}
    c = confusion_from_counts({(values[g], values[p]): k for (g, p), k in joint.items()}, preferred)
    kappa = cohen_kappa(c)
    acc = accuracy(c)
    acc_low, acc_high = wilson(c.agree, c.n)
    f1 = averages(class_scores(c))["macro"]["f1"] if c.n else None
    kinds = list(joint)
    f1_low, f1_high = bootstrap_counts(_macro_f1_statistic(kinds), [joint[key] for key in kinds], reps, seed)
    outcomes, usage = table.outcomes[i], table.usage[i]
    answered = outcomes["valid"] + outcomes["invalid"]
    return {
        "cell": cell["cell"], "model": cell["model"], "prompt": cell["prompt"], "repeat": cell["repeat"],
        "seed": cell["seed"], "run_id": cell["run_id"], "runs": [r["run_id"] for r in cell["runs"]],
        "model_name": cell["model_name"], "model_digest": cell["model_digest"], "prompt_hash": cell["prompt_hash"],
        "status": cell["runs"][-1]["status"],
        "n": c.n, "answered": answered, "labels_answered": sum(1 for v in range(1, len(values)) if v in table.cols[i]),
        "valid": outcomes["valid"], "invalid": outcomes["invalid"],
        "empty": outcomes["empty"], "errors": outcomes["error"],
        "valid_pct": 100.0 * outcomes["valid"] / answered if answered else None,
        "accuracy": acc, "accuracy_low": acc_low, "accuracy_high": acc_high,
        "macro_f1": f1, "macro_f1_low": f1_low, "macro_f1_high": f1_high,
        "kappa": kappa.kappa, "kappa_low": kappa.low, "kappa_high": kappa.high,
        "latency_ms": usage["latency_ms"], "tokens_in": usage["tokens_in"], "tokens_out": usage["tokens_out"],
        "small": c.n < SMALL_N,
    }  # fmt: skip


def _add_costs(db: Reader, name: str, cells: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Why a cell's invalid answers failed (`invalid_reasons`, commonest first) and the GPU-hours its runs used
    (`gpu_hours`: run time x the GPUs of the server jobs each run recorded; None where no run recorded them)."""
    cell_of = {r["run_id"]: c["cell"] for c in cells for r in c["runs"]}
    reasons: dict[str, Counter] = {c["cell"]: Counter() for c in cells}
    with_invalid = [r["run_id"] for c in cells for r in c["runs"] if r.get("invalid") != 0]  # None: not counted yet
    if with_invalid:  # only the runs that had any: the query reads their units, not the study's
        marks = ",".join("?" * len(with_invalid))
        for run_id, error, n in db.conn.execute(
                f"select run_id, coalesce(error, '?'), count(*) from units where run_id in ({marks}) "
                "and outcome = 'invalid' group by run_id, error", with_invalid):
            reasons[cell_of[run_id]][error] += n
    hours: dict[str, float | None] = {c["cell"]: None for c in cells}
    for run_id, jobs, seconds in db.conn.execute(
            "select run_id, json_extract(header, '$.server_jobs'), (julianday(coalesce(ended_at, last_seen_at)) "
            "- julianday(started_at)) * 86400 from runs where study = ?", [name]):
        gpus = _gpus(jobs)
        if gpus and seconds is not None and run_id in cell_of:
            cell = cell_of[run_id]
            hours[cell] = (hours[cell] or 0.0) + gpus * seconds / 3600
    for row in rows:
        row["invalid_reasons"] = dict(reasons[row["cell"]].most_common())
        row["gpu_hours"] = None if hours[row["cell"]] is None else round(hours[row["cell"]], 3)


def _gpus(jobs_json: str | None) -> float:
    try:
        jobs = json.loads(jobs_json) if jobs_json else []
    except ValueError:
        return 0.0
    return float(sum(j.get("gpus") or 0 for j in jobs if isinstance(j, dict) and isinstance(j.get("gpus"), int | float))
                 ) if isinstance(jobs, list) else 0.0


def _macro_f1_statistic(kinds: list[tuple[int, int]]) -> LinearStatistic:
    """Macro-F1 of a confusion matrix given as how many notes are in each (gold, label) cell of `kinds`: the F1 of
    each label that occurs, 2 tp / (its row + its column), averaged, as class_scores and averages compute it. The
    sums: each label's row + column, and its tp."""
    labels = sorted({x for kind in kinds for x in kind})
    index = {label: j for j, label in enumerate(labels)}
    size = len(labels)
    rows = []
    for g, p in kinds:
        rows.append([(index[g], 2), (size + index[g], 1)] if g == p else [(index[g], 1), (index[p], 1)])

    def finish(sums: Sequence[float]) -> float | None:
        f1 = [2 * tp / both for both, tp in zip(sums[:size], sums[size:]) if both]
        return sum(f1) / len(f1) if f1 else None

    return LinearStatistic(rows, 2 * size, finish)


def _confusion(table: _Table, cell: str, preferred: list[Any]) -> dict:
    values = table.values
    joint = _joint([table.gold, table.cols[table.names.index(cell)]], len(values))
    c = confusion_from_counts({(values[g], values[p]): k for (g, p), k in joint.items() if g and p}, preferred)
    return {"cell": cell, "labels": list(c.labels), "matrix": [list(r) for r in c.matrix]}  # rows: gold


def _stability(cells: list[dict[str, Any]], table: _Table, reps: int, seed: int) -> list[dict]:
    """Per model and prompt with two repeats or more: how often the repeats agree, over the notes they answered."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault((cell["model"], cell["prompt"]), []).append(i)
    out = []
    for (model, prompt), members in groups.items():
        if len(members) < 2:
            continue
        m = len(members)
        by_pattern: dict[tuple[int, ...], int] = {}  # the labels a note got (sorted codes) -> how many notes
        for key, k in _joint([table.cols[i] for i in members], len(table.values)).items():
            given = tuple(sorted(c for c in key if c))
            if given:
                by_pattern[given] = by_pattern.get(given, 0) + k
        complete = [(Counter(p), k) for p, k in by_pattern.items() if len(p) == m]
        pairable = [(Counter(p), k) for p, k in by_pattern.items() if len(p) >= 2]
        single = sum(k for p, k in by_pattern.items() if len(p) < 2)
        fleiss = fleiss_statistic([p for p, _ in complete])
        alpha = krippendorff_statistic([p for p, _ in pairable] + [Counter()])  # one kind for every unpairable note
        fk_weights = [k for _, k in complete]
        ka_weights = [k for _, k in pairable] + [single]
        fk = fleiss(fk_weights)
        ka = alpha(ka_weights)
        fk_low, fk_high = bootstrap_counts(fleiss, fk_weights, reps, seed)
        ka_low, ka_high = bootstrap_counts(alpha, ka_weights, reps, seed)
        n = sum(fk_weights)
        unanimous = sum(k for p, k in complete if len(p) == 1)
        out.append({
            "model": model, "prompt": prompt, "cells": [cells[i]["cell"] for i in members], "repeats": m,
            "n": n, "n_pairable": sum(k for _, k in pairable),
            "fleiss_kappa": fk, "fleiss_low": fk_low, "fleiss_high": fk_high,
            "krippendorff_alpha": ka, "alpha_low": ka_low, "alpha_high": ka_high,
            "unanimous": unanimous, "unanimous_pct": 100.0 * unanimous / n if n else None,
            "small": n < SMALL_N,
        })  # fmt: skip
    return out


def _paired(cells: list[dict[str, Any]], table: _Table) -> list[dict]:
    """Every pair of the first repeat's cells (the models and prompts side by side), on the notes both answered
    and gold labels: McNemar's test of correct/incorrect, and Cohen's kappa between the two."""
    firsts = [i for i, c in enumerate(cells) if c["repeat"] == 1]
    values = table.values
    out = []
    for a, b in combinations(firsts, 2):
        joint = {key: k for key, k in _joint([table.gold, table.cols[a], table.cols[b]], len(values)).items()
                 if key[1] and key[2]}  # both answered
        with_gold = {key: k for key, k in joint.items() if key[0]}
        only_a = sum(k for (g, x, y), k in with_gold.items() if x == g and y != g)
        only_b = sum(k for (g, x, y), k in with_gold.items() if y == g and x != g)
        pairs: dict[tuple[Any, Any], int] = {}
        for (_, x, y), k in joint.items():
            pairs[values[x], values[y]] = pairs.get((values[x], values[y]), 0) + k
        common = sum(joint.values())
        n = sum(with_gold.values())
        k = cohen_kappa(confusion_from_counts(pairs))
        out.append({
            "a": cells[a]["cell"], "b": cells[b]["cell"], "n": n, "n_common": common, "only_a_correct": only_a,
            "only_b_correct": only_b, "mcnemar_p": mcnemar(only_a, only_b),
            "agreement": sum(k for (_, x, y), k in joint.items() if x == y) / common if common else None,
            "kappa": k.kappa, "kappa_low": k.low, "kappa_high": k.high, "small": n < SMALL_N,
        })  # fmt: skip
    return out


class _Notes:
    """The per-note table: a note is in it when a cell labeled it or gold has it; it differs when its labels are not
    all one, or one is not gold's. Worked out for every note at once on the columns as big integers: per position,
    the reference is gold's code, else the first cell's label; a note differs where a cell's label is not it."""

    def __init__(self, table: _Table) -> None:
        self.table = table
        n = len(table.ids)
        ref = int.from_bytes(table.gold, "little")
        have = int.from_bytes(table.gold.translate(_ANY), "little")  # 0xFF where the reference is set
        cols = [(int.from_bytes(c, "little"), int.from_bytes(c.translate(_ANY), "little")) for c in table.cols]
        for x, m in cols:
            take = m & ~have
            ref |= x & take
            have |= take
        differ = 0
        for x, m in cols:
            differ |= (x ^ ref) & m
        self.present = have.to_bytes(n, "little")
        self.differ = differ.to_bytes(n, "little")
        self.total = n - self.present.count(0)
        self.different_total = n - self.differ.count(0)

    def page(self, offset: int, limit: int | None, different_only: bool) -> list[dict[str, Any]]:
        t = self.table
        pos = dict(zip(t.ids, range(len(t.ids))))
        order = _sorted_units(list(compress(t.ids, self.present)))
        if different_only:
            order = list(compress(order, map(self.differ.__getitem__, map(pos.__getitem__, order))))
        out = []
        for uid in order[offset: None if limit is None else offset + limit]:
            p = pos[uid]
            out.append({"unit": uid, "gold": t.values[t.gold[p]],
                        "labels": {name: t.values[col[p]] for name, col in zip(t.names, t.cols)},
                        "different": bool(self.differ[p])})
        return out


_ANY = bytes([0] + [0xFF] * 255)


def _sorted_units(units: list[str]) -> list[str]:
    if all(map(str.isdigit, units)):
        return sorted(sorted(units), key=int)  # (int, text): what _unit_order gives, at C speed
    return sorted(units, key=_unit_order)


def _unit_order(uid: str) -> tuple:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)

