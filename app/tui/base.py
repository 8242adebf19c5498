"""The screens' and dialogs' base classes: `self.app` typed as NotesApp, so what a screen reads of the shared state
(`self.app.state`) is checked, not guessed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import ModalScreen, Screen, ScreenResultType

if TYPE_CHECKING:
    from app.tui.app import NotesApp


class NotesScreen(Screen):
    if TYPE_CHECKING:
        @property
        def app(self) -> NotesApp: ...


class NotesDialog(ModalScreen[ScreenResultType]):
    if TYPE_CHECKING:
        @property
        def app(self) -> NotesApp: ...
