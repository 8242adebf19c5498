"""Which notes a try sends: the first N to do, a seeded random sample of the experiment's notes, or one by id.

Built on the source's own query pieces (its notes query, key columns, identifier quoting, placeholders), so a try
sees exactly the units a run would: the same text, the same grouping, the same template fields.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import UserError
from app.sources.base import Source, Unit

MAX_SAMPLE_KEYS = 5_000_000  # a seeded sample reads every key once; beyond this a try is not "seconds" any more


@dataclass(frozen=True)
class Picked:
    units: list[Unit]
    how: str  # said to the user: "the first 5 notes to do", "5 notes drawn with seed 7", "note 12"


def pick(source: Source, n: int, seed: int | None = None, unit_id: str | None = None) -> Picked:
    if unit_id is not None:
        return Picked([one(source, unit_id)], f"note {unit_id}")
    if seed is not None:
        keys = all_keys(source)
        chosen = random.Random(seed).sample(keys, min(n, len(keys)))
        return Picked(units_for(source, chosen), f"{len(chosen)} notes drawn at random with seed {seed}")
    todo: list[Unit] = []
    for chunk in source.iter_chunks(False, limit=n):
        todo += chunk
        if len(todo) >= n:
            break
    if todo:
        return Picked(todo[:n], f"the first {min(n, len(todo))} notes to do")
    first = all_keys(source, limit=n)
    return Picked(units_for(source, first), f"the first {len(first)} notes (every note has an answer already)")


def _keys_sql(source: Source) -> tuple[str, str]:
    keys = ", ".join(f"s.{source.q(c)}" for c in source.key_columns)
    not_null = " AND ".join(f"s.{source.q(c)} IS NOT NULL" for c in source.key_columns)
    return keys, not_null


def all_keys(source: Source, limit: int | None = None) -> list[tuple]:
    """Every unit key of the experiment's notes, in key order (the same order on every call, so a seed repeats)."""
    keys, not_null = _keys_sql(source)
    cap = MAX_SAMPLE_KEYS + 1 if limit is None else limit  # one more than allowed tells that there are too many
    rows = source.fetch_all(f"SELECT DISTINCT {keys} FROM ({source.inner_sql()}) s WHERE {not_null} "
                            f"ORDER BY {keys} LIMIT {int(cap)}")
    if limit is None and len(rows) > MAX_SAMPLE_KEYS:
        raise UserError(f"more than {MAX_SAMPLE_KEYS} notes: a random sample would read every id — try -n N "
                        "(the first notes to do) or --id ID instead")
    return [tuple(r) for r in rows]


def units_for(source: Source, keys: Sequence[tuple]) -> list[Unit]:
    """The units with these keys, in the order given (keys that match nothing are left out)."""
    if not keys:
        return []
    ph = source.placeholder
    cols = [f"s.{source.q(c)}" for c in source.key_columns]
    one_key = "(" + " AND ".join(f"{c} = {ph}" for c in cols) + ")"
    where = " OR ".join([one_key] * len(keys))
    found: dict[str, Unit] = {}
    for unit in _units_where(source, where, tuple(v for key in keys for v in key)):
        found.setdefault(unit.uid, unit)  # a duplicated id: the first note, as a run answers it
    wanted = [Unit(k, None, {}).uid for k in keys]
    return [found[uid] for uid in wanted if uid in found]


def _units_where(source: Source, where: str, params: tuple) -> list[Unit]:
    order = ", ".join(f"s.{source.q(c)}" for c in source.key_columns + source.src.order_by)
    select = ", ".join(f"s.{source.q(c)}" for c in source.select_columns())
    rows = source.fetch_all(f"SELECT {select} FROM ({source.inner_sql()}) s WHERE {where} ORDER BY {order}", params)
    return source.rows_to_units(rows)


def one(source: Source, unit_id: str) -> Unit:
    """The unit whose id (as the ledger and the feed show it: key values joined by '|') is `unit_id`.

    Typed text, while the id columns may hold integers the database does not compare with text (SQLite, a column
    without a type): each part is looked for as every value the source says it may be stored as, and the unit
    whose id shows as typed is the one."""
    parts = unit_id.split("|", len(source.key_columns) - 1)
    units: list[Unit] = []
    if len(parts) == len(source.key_columns):
        conds, params = [], []
        for col, part in zip(source.key_columns, parts):
            values = source.id_values(part)
            conds.append(f"s.{source.q(col)} IN ({', '.join([source.placeholder] * len(values))})")
            params += values
        units = _units_where(source, " AND ".join(conds), tuple(params))
    match = [u for u in units if u.uid == unit_id]
    if not match:
        cols = "|".join(source.key_columns)
        raise UserError(f"no note with id {unit_id!r} in {source.exp.source_label} (ids are {cols}, as "
                        "notes-tui ledger and the run monitor show them) — check the id")
    return match[0]  # a duplicated id: the first note, as a run answers it
