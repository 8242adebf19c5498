"""Rendering the user template for one unit, and the hash that identifies a prompt across runs."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from typing import Any


class Template:
    """A `{column}` template parsed once; rendering is a join, so note text with braces is never re-parsed."""

    def __init__(self, text: str):
        self.parts: list[tuple[str, str | None]] = [
            (literal, name) for literal, name, _, _ in string.Formatter().parse(text)
        ]

    def render(self, values: Mapping[str, Any]) -> str:
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = values[name]
                out.append("" if value is None else str(value))
        return "".join(out)


def prompt_hash(system: str, user: str, schema: dict[str, Any], options: dict[str, Any],
                think: bool | str = False) -> str:
    """`think` changes what a reasoning model answers, so it is part of the prompt; left out of the hash while it is
    false (the default), so the hash of every experiment written before the key existed stays what it was."""
    parts: dict[str, Any] = {"system": system, "user": user, "schema": schema, "options": options}
    if think is not False:
        parts["think"] = think
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
