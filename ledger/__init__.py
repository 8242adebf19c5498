"""The run ledger: per-run journals (written by runs) and the SQLite index built from them (read by reports).

Imports are lazy: a headless run needs only the stdlib Journal, and sqlite-utils alone costs ~0.15 s to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ids import new_run_id
    from .index import Ledger
    from .journal import Journal
    from .paths import resolve_ledger_dir

__all__ = ["Journal", "Ledger", "new_run_id", "resolve_ledger_dir"]

_HOMES = {"Journal": "journal", "Ledger": "index", "new_run_id": "ids", "resolve_ledger_dir": "paths"}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
