"""The command palette (ctrl+p): an entry for every action of every screen, taken from the screens' bindings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.screen import Screen

from app.tui.keys import app_keys, screen_keys

if TYPE_CHECKING:
    from app.tui.app import NotesApp


def palette_commands(app: NotesApp, screen: Screen) -> Iterator[SystemCommand]:
    for key in app_keys(type(app)):
        if key.action:
            yield SystemCommand(key.what, f"key {key.keys}", _run(app, None, key.action))
    for mode, screen_cls in app.MODES.items():
        title = app.SCREEN_KEYS[mode][1]
        for key in screen_keys(screen_cls, slurm=app.jobs.available):
            if key.action:
                yield SystemCommand(f"{title}: {key.what}", f"key {key.keys} on screen {app.SCREEN_KEYS[mode][0]}",
                                    _run(app, mode, key.action))


def _run(app: NotesApp, mode: str | None, action: str):
    async def run() -> None:
        if mode is None:
            await app.run_action(action)
            return
        if app.current_mode != mode:
            await app.switch_mode(mode)
        await app.run_action(action, app.screen)

    return run
