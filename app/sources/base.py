"""Where notes come from and answers go: one protocol, a SQLite and a MySQL implementation.

A source streams *units* (one note, or all notes of a group joined) that have no answer yet for the experiment, and
upserts results in batches, one transaction per batch. Both sides are blocking; the engine calls them in threads.
"""

from __future__ import annotations

import codecs
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from app.errors import SourceError
from app.experiment import Experiment
from app.experiment.schema import AnswerSection
from app.sources.runlock import Holder


def unit_uid(key: tuple) -> str:
    """A unit's id as the ledger records it: its id columns joined with '|'."""
    return "|".join(k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else str(k) for k in key)


class Unit:
    """One thing the model answers about. `fields` holds what the prompt template may use; `text` is None when empty."""

    __slots__ = ("key", "uid", "text", "fields", "replaced_bytes")

    def __init__(self, key: tuple, text: str | None, fields: dict[str, Any], replaced_bytes: int = 0):
        self.key = key
        self.uid = unit_uid(key)
        self.text = text
        self.fields = fields
        self.replaced_bytes = replaced_bytes


@dataclass(frozen=True)
class ResultRow:
    key: tuple
    answer: dict[str, Any]
    valid: bool
    attempts: int
    truncated: bool


@dataclass(frozen=True)
class RunStamp:
    """What every result row of one run carries, so a table row leads back to its ledger run."""

    experiment: str
    run_id: str
    model: str
    prompt_hash: str


@dataclass(frozen=True)
class SourceSurvey:
    todo: int
    null_ids: int
    # every key of a note whose id occurs more than once, as the database compares ids (`ACC1` and `acc1` are one id
    # under utf8mb4_general_ci, and one row of the results table), mapped to one key for all of them
    duplicate_groups: dict[tuple, tuple]
    results_table_exists: bool

    @property
    def duplicate_keys(self) -> frozenset[tuple]:
        """One key for each id that occurs more than once."""
        return frozenset(self.duplicate_groups.values())


_local = threading.local()
_SURROGATE = re.compile("[\ud800-\udfff]")


def _count_replaced(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    _local.replaced = getattr(_local, "replaced", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


codecs.register_error("notes_tui_count", _count_replaced)


def decode_note(value: Any) -> tuple[str | None, int]:
    """Note text from a TEXT or BLOB column: str, or UTF-8 with undecodable bytes replaced (and counted)."""
    if value is None:
        return None, 0
    if isinstance(value, (bytes, bytearray, memoryview)):
        _local.replaced = 0
        text = bytes(value).decode("utf-8", "notes_tui_count")
        replaced = _local.replaced
    else:
        text, replaced = str(value), 0
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # lone surrogates (a driver decoding with surrogateescape, text from a Java export): no backend can send
            # them, and llama.cpp's own encode would fail the run; replaced and counted like undecodable bytes
            replaced = sum(1 for ch in text if "\ud800" <= ch <= "\udfff")
            text = _SURROGATE.sub("\ufffd", text)
    if "\x00" in text:
        # NUL bytes survive a BLOB but break C-string tokenizers downstream
        text = text.replace("\x00", "")
    return (text if text.strip() else None), replaced


class Source(ABC):
    """Implemented by SqliteSource and MySQLSource."""

    placeholder: str
    #: (index, count): this run answers only the units whose key hashes to `index` (a job array's task)
    shard: tuple[int, int] | None = None
    #: told, from the writer's thread, each time a results write fails and is tried again: (error in words, when the
    #: write first failed, when it stops trying), time.monotonic() seconds. The run sets it to say it is waiting.
    write_waiting: Callable[[str, float, float | None], None] | None = None

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.src = exp.spec.source
        self.key_columns: list[str] = list(self.src.group_by or self.src.id_columns)
        self.grouped = bool(self.src.group_by)
        self.extra_columns = [c for c in self.src.columns if c not in self.key_columns]
        self.results_table = exp.spec.results.table
        self.answer: AnswerSection = exp.spec.answer

    # -- reading ------------------------------------------------------------------------------------------------
    @abstractmethod
    def fetch_all(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one short query on the reading connection; a refusal becomes a SourceError with the fix."""

    @abstractmethod
    def column_names(self, sql: str) -> list[str]:
        """The columns a SELECT returns (run with LIMIT 0 by callers); a refusal becomes a SourceError."""

    @abstractmethod
    def results_table_exists(self) -> bool: ...

    def survey(self, rerun_invalid: bool = False) -> SourceSurvey:
        """How many units are to do, and the hostile keys (NULL, duplicated) the run must step around."""
        exists = self.check_results_table()
        keys = ", ".join(self.q(c) for c in self.key_columns)
        inner = self.inner_sql()
        any_null = " OR ".join(f"{self.q(c)} IS NULL" for c in self.key_columns)
        null_ids = self.fetch_all(f"SELECT COUNT(*) FROM ({inner}) s WHERE {any_null}")[0][0]
        dups: dict[tuple, tuple] = {}
        if not self.grouped:
            # grouped and joined by the database itself, so ids its collation takes for one (case, trailing spaces)
            # are one id here too: each note's own key, and the key of its group
            n = len(self.key_columns)
            d_keys = ", ".join(f"d.{self.q(c)}" for c in self.key_columns)
            s_keys = ", ".join(f"s.{self.q(c)}" for c in self.key_columns)
            same = " AND ".join(f"s.{self.q(c)} = d.{self.q(c)}" for c in self.key_columns)
            rows = self.fetch_all(
                f"SELECT {s_keys}, {d_keys} FROM ({inner}) s JOIN (SELECT {keys} FROM ({inner}) s2 "
                f"WHERE NOT ({any_null}) GROUP BY {keys} HAVING COUNT(*) > 1) d ON {same}")
            dups = {tuple(r[:n]): tuple(r[n:]) for r in rows}
        todo = self.fetch_all(f"SELECT COUNT(*) FROM (SELECT DISTINCT {keys} FROM "
                              f"({self.todo_sql(rerun_invalid, exists)}) t) u",
                              self.todo_params(exists, rerun_invalid, None))[0][0]
        return SourceSurvey(todo=todo, null_ids=null_ids, duplicate_groups=dups, results_table_exists=exists)

    @abstractmethod
    def iter_chunks(self, rerun_invalid: bool, limit: int | None, run_id: str | None = None,
                    resume_skip: Callable[[], frozenset[tuple]] | None = None) -> Generator[list[Unit], None, None]:
        """Units to do, a chunk at a time; each call to next() is one blocking DB round (run it in a thread).

        `run_id`: the run reading, whose own invalid answers `rerun_invalid` must not pick up again.
        `resume_skip`: asked when a lost connection forces the read to start over; returns the keys this run has
        already taken (in flight, awaiting commit, or failed), which the new read must not hand out again."""

    def length_profile(self, over_chars: int) -> tuple[int, int]:
        """(longest note in characters or bytes, how many notes are longer than over_chars): one scan, for check."""
        col = self.q(self.src.text_column)
        longest, over = self.fetch_all(
            f"SELECT COALESCE(MAX(LENGTH({col})), 0), COALESCE(SUM(CASE WHEN LENGTH({col}) > {int(over_chars)} "
            f"THEN 1 ELSE 0 END), 0) FROM ({self.inner_sql()}) s")[0]
        return int(longest), int(over)

    def id_values(self, typed: str) -> list[Any]:
        """The values an id column may hold for one part of an id as the user typed it (as `unit_uid` shows it).
        The caller keeps only the units whose uid is what was typed. Here: the text itself, since the database
        converts it to the column's type (MySQL compares an INT column with '5' as with 5)."""
        return [typed]

    # -- writing ------------------------------------------------------------------------------------------------
    def tell_write_waiting(self, error: str, since: float, give_up_at: float | None) -> None:
        """A results write failed and is tried again: tell the run (see `write_waiting`); never fails the write."""
        hook = self.write_waiting
        if hook is not None:
            try:
                hook(error, since, give_up_at)
            except Exception:  # noqa: BLE001 - e.g. the run's event loop already closed
                pass

    @abstractmethod
    def ensure_results_table(self) -> None: ...

    @abstractmethod
    def write_results(self, stamp: RunStamp, rows: Sequence[ResultRow]) -> None:
        """Upsert one batch in one transaction; safe to repeat (the unique key is experiment + unit key)."""

    @abstractmethod
    def close(self) -> None:
        """Also lets go of the run lock."""

    # -- one run at a time (app/sources/runlock.py) ---------------------------------------------------------------
    @abstractmethod
    def lock_run(self, run_id: str) -> Holder | None:
        """Take the experiment's run lock for `run_id`, or raise RunLocked naming the run that holds it. Returns
        what a killed previous holder left behind (None after a clean finish)."""

    def rows_of_run(self, run_id: str) -> list[tuple]:
        """Keys of this experiment's results rows that carry `run_id`."""
        keys = ", ".join(self.q(c) for c in self.key_columns)
        return [tuple(r) for r in self.fetch_all(
            f"SELECT {keys} FROM {self.qualified(self.results_table)} WHERE {self.q('experiment')} = "
            f"{self.placeholder} AND {self.q('run_id')} = {self.placeholder}", (self.exp.name, run_id))]

    @abstractmethod
    def delete_rows(self, run_id: str, keys: Sequence[tuple]) -> None:
        """Delete this experiment's rows of `run_id` with these keys, in one transaction."""

    def delete_sql(self) -> str:
        match = " AND ".join(f"{self.q(c)} = {self.placeholder}" for c in ["experiment", "run_id", *self.key_columns])
        return f"DELETE FROM {self.qualified(self.results_table)} WHERE {match}"

    def describe(self) -> dict[str, Any]:
        """The source as the ledger may record it: never credentials."""
        return {"kind": self.src.kind, "database": self.database_label(), "table": self.src.table,
                "query": self.src.query, "where": self.src.where, "limit": self.src.limit, "id_columns": self.key_columns,
                "text_column": self.src.text_column, "group_by": self.src.group_by or None}

    def database_label(self) -> str | None:
        """Which database, for the ledger: a file path or a database name, never a user or password."""
        return None

    # -- shared helpers -------------------------------------------------------------------------------------------
    def q(self, name: str) -> str:
        raise NotImplementedError

    def select_columns(self) -> list[str]:
        cols = list(self.key_columns) + [self.src.text_column] + self.extra_columns
        return cols + [c for c in self.src.order_by if c not in cols]

    def from_sql(self) -> str:
        if self.src.table:
            return self.qualified(self.src.table)
        return f"({self.src.query.strip().rstrip(';')}) notes_q"  # type: ignore[union-attr]

    def missing_source_columns(self, available: list[str]) -> list[str]:
        have = {c.lower() for c in available}
        return [c for c in self.select_columns() if c.lower() not in have]

    def inner_sql(self) -> str:
        """The notes the experiment covers: table or query, its filter and limit. Aliased `s` by callers."""
        cols = ", ".join(self.q(c) for c in self.select_columns())
        sql = f"SELECT {cols} FROM {self.from_sql()}"
        if self.src.where:
            sql += f" WHERE ({self.src.where})"
        if self.src.limit:
            sql += f" LIMIT {int(self.src.limit)}"
        return sql

    def qualified(self, name: str) -> str:
        return ".".join(self.q(p) for p in name.split("."))

    def todo_params(self, with_results: bool, rerun_invalid: bool, run_id: str | None) -> tuple:
        if not with_results:
            return ()
        return (self.exp.name, run_id) if rerun_invalid and run_id else (self.exp.name,)

    def todo_sql(self, rerun_invalid: bool, with_results: bool, run_id: str | None = None) -> str:
        """Units without an answer for this experiment (the anti-join that makes resume free). Parameters come
        from todo_params."""
        cols = ", ".join(f"s.{self.q(c)}" for c in self.select_columns())
        sql = f"SELECT {cols} FROM ({self.inner_sql()}) s"
        conds = [f"s.{self.q(c)} IS NOT NULL" for c in self.key_columns]
        if with_results:
            on = " AND ".join([f"r.{self.q('experiment')} = {self.placeholder}"] +
                              [f"r.{self.q(c)} = s.{self.q(c)}" for c in self.key_columns])
            sql += f" LEFT JOIN {self.qualified(self.results_table)} r ON {on}"
            todo = f"r.{self.q('experiment')} IS NULL"
            if rerun_invalid:
                again = f"r.{self.q('valid')} = 0"
                if run_id:  # not the invalid answers this very run wrote
                    again += f" AND r.{self.q('run_id')} <> {self.placeholder}"
                todo = f"({todo} OR ({again}))"
            conds.append(todo)
        if self.shard is not None:
            conds.append(self.shard_sql([f"s.{self.q(c)}" for c in self.key_columns], *self.shard))
        return sql + " WHERE " + " AND ".join(conds)

    def shard_sql(self, key_exprs: list[str], index: int, count: int) -> str:
        """A condition true for the units of shard `index` of `count`, computed by the database itself so every
        task on every host splits the units the same way."""
        raise NotImplementedError(f"{self.src.kind} sources cannot be sharded")

    def rows_to_units(self, rows: Sequence[Sequence[Any]]) -> list[Unit]:
        """Turn rows (key columns, text, extra columns) into units; grouped rows arrive ordered by their group."""
        nkey = len(self.key_columns)
        units: list[Unit] = []
        if not self.grouped:
            for row in rows:
                text, bad = decode_note(row[nkey])
                key = tuple(row[:nkey])
                fields = dict(zip(self.key_columns, key))
                for i, name in enumerate(self.extra_columns):
                    fields[name] = row[nkey + 1 + i]
                fields["note"] = text
                units.append(Unit(key, text, fields, bad))
            return units
        current: tuple | None = None
        texts: list[str] = []
        bad_total = 0
        for row in rows:
            key = tuple(row[:nkey])
            if key != current:
                if current is not None:
                    units.append(self._group_unit(current, texts, bad_total))
                current, texts, bad_total = key, [], 0
            text, bad = decode_note(row[nkey])
            bad_total += bad
            if text is not None:
                texts.append(text)
        if current is not None:
            units.append(self._group_unit(current, texts, bad_total))
        return units

    def _group_unit(self, key: tuple, texts: list[str], bad: int) -> Unit:
        text = "\n\n".join(f"Note {i}: {t}" for i, t in enumerate(texts, 1)) if texts else None
        fields = dict(zip(self.key_columns, key))
        fields["note"] = text
        return Unit(key, text, fields, bad)

    def result_columns(self) -> list[str]:
        return (["experiment"] + self.key_columns + list(self.answer.fields) +
                ["valid", "attempts", "truncated", "run_id", "model", "prompt_hash", "created_at"])

    def result_params(self, stamp: RunStamp, rows: Sequence[ResultRow], now: Any) -> list[tuple]:
        names = list(self.answer.fields)
        return [(stamp.experiment, *r.key, *(r.answer.get(n) for n in names), int(r.valid), r.attempts,
                 int(r.truncated), stamp.run_id, stamp.model, stamp.prompt_hash, now) for r in rows]

    @abstractmethod
    def existing_result_columns(self) -> set[str] | None:
        """The results table's column names (lower case), None when it does not exist. Read only."""

    def check_results_table(self) -> bool:
        """Read only, so a survey can run it before the run may write: True when the results table exists and fits
        these answers, False when it is not there yet; a table made for other answers is the user's one line."""
        existing = self.existing_result_columns()
        if existing is None:
            return False
        missing = self.missing_result_columns(existing)
        if missing:
            raise SourceError(f"{self.exp.path}: results.table: {self.results_table} exists but has no column "
                              f"{', '.join(missing)} — it was made for other answers; name a new results table")
        key = ["experiment", *self.key_columns]
        if not any(set(cols) == {c.lower() for c in key} for cols in self.unique_keys()):
            # an upsert is an insert without it: --rerun-invalid would add a second row for every note it redoes
            names = ", ".join(self.q(c) for c in key)
            raise SourceError(f"{self.exp.path}: results.table: {self.results_table} has no unique key on ({names}) "
                              "(restored without its keys?) — add it: ALTER TABLE "
                              f"{self.qualified(self.results_table)} ADD UNIQUE KEY uq_experiment_unit ({names}); or "
                              "name a new results table")
        wrong = self.unfit_answer_columns()
        if wrong:
            raise SourceError(f"{self.exp.path}: results.table: {self.results_table}: {wrong[0]} — it was made for "
                              "other answers; name a new results table (or fix the column's type)")
        return True

    def unique_keys(self) -> list[list[str]]:
        """The results table's unique keys (the primary key among them), as lists of lower-case column names."""
        return []

    def unfit_answer_columns(self) -> list[str]:
        """What is wrong with answer columns that cannot hold these answers (too short, not a number), in words."""
        return []

    def missing_result_columns(self, existing: set[str]) -> list[str]:
        return [c for c in self.result_columns() if c.lower() not in existing]
