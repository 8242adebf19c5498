"""The answer fields of a run, read back from the JSON schema its header recorded (the ledger knows no config)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

CATEGORICAL = ("choice", "bool")


@dataclass(frozen=True)
class AnswerField:
    name: str
    kind: str  # choice | bool | int | number | text
    choices: tuple[Any, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.kind in CATEGORICAL

    @property
    def labels(self) -> tuple[Any, ...]:
        """The values the field may take, in their declared order (bool: true first)."""
        return (True, False) if self.kind == "bool" else self.choices

    def path(self) -> str:
        """The JSON path of this field in a unit's answer (quoted: names come from a file, not from us)."""
        return '$."' + self.name.replace('"', '\\"') + '"'

    def value(self, raw: Any) -> Any:
        """A value as SQLite's json_extract returns it, back in the field's type (bools come back as 1 and 0)."""
        if raw is None:
            return None
        return bool(raw) if self.kind == "bool" else raw


def answer_fields(schema: Any) -> list[AnswerField]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return []
    out = []
    for name, prop in props.items():
        if not isinstance(prop, dict):
            continue
        if isinstance(prop.get("enum"), list):
            out.append(AnswerField(name, "choice", tuple(prop["enum"])))
        elif "const" in prop:
            out.append(AnswerField(name, "choice", (prop["const"],)))
        else:
            kind = {"boolean": "bool", "integer": "int", "number": "number"}.get(prop.get("type"), "text")
            out.append(AnswerField(name, kind))
    return out


def field_values(conn: sqlite3.Connection, run_id: str, fields: list[AnswerField]) -> dict[str, tuple]:
    """unit id -> (outcome, raw value of each field) for one run, extracted by SQLite (json.loads of every answer
    costs more than the query); bools come back as 1 and 0, see AnswerField.value."""
    cols = "".join(", json_extract(answer, ?)" for _ in fields)
    rows = conn.execute(f"select unit_id, outcome{cols} from units where run_id = ?",
                        [f.path() for f in fields] + [run_id]).fetchall()
    return {row[0]: row[1:] for row in rows}
