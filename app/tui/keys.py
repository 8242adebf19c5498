"""Every key of the app in one place, read from the BINDINGS themselves: the help screen and the command palette
list what the screens really bind, never a copy that drifts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from textual.binding import Binding

# the bindings that need Slurm (sbatch, squeue): where there is none they are absent from the key bar (the screens'
# check_action), the help and the palette
SLURM_ONLY = frozenset({"servers.start_job", "servers.cancel_job", "servers.job_output", "experiments.submit"})

GLOBAL_EXTRA = [("ctrl+p", "command palette: every action by name"), ("ctrl+q", "quit (as q)"),
                ("tab / shift+tab", "move between parts of a screen"), ("escape", "close a dialog")]


@dataclass(frozen=True)
class Key:
    keys: str
    what: str
    action: str | None  # None: handled by a widget (enter on a row)


def _bindings(owner: type) -> Iterator[Binding]:
    for b in owner.BINDINGS:  # type: ignore[attr-defined]
        yield b if isinstance(b, Binding) else Binding(*b)


def display(key: str) -> str:
    return {"question_mark": "?", "escape": "esc"}.get(key, key)


def app_keys(app_cls: type) -> list[Key]:
    keys = [Key(display(b.key), b.description, b.action) for b in _bindings(app_cls)]
    return keys + [Key(k, what, None) for k, what in GLOBAL_EXTRA]


def screen_keys(screen_cls: type, slurm: bool = True) -> list[Key]:
    """The keys of a screen; without `slurm`, not those that need Slurm."""
    keys = [Key(display(b.key), b.description, b.action) for b in _bindings(screen_cls)
            if slurm or b.id not in SLURM_ONLY]
    return keys + [Key(k, what, None) for k, what in getattr(screen_cls, "HELP", [])]
