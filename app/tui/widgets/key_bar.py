"""The bottom line: the keys of this screen, then the app's. Drawn once per screen: Textual's Footer rebuilds a widget
per key on every screen switch, a fifth of the app's time while keys were pressed with pulls streaming."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from app.tui.keys import display
from app.tui.tones import tone


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $panel; }
    """

    def render(self) -> Text:
        screen, app = self.screen, self.app
        text = Text(no_wrap=True, overflow="ellipsis")
        for owner in (screen, app):
            for binding in owner.BINDINGS:
                if getattr(binding, "show", False) and owner.check_action(binding.action.split("(")[0], ()) is not False:
                    text.append(f" {display(binding.key.split(',')[0])} ", style=tone(app, "key"))
                    text.append(f"{binding.description} ")
        palette = Text(" ^p ", style=tone(app, "key")) + Text("palette ")
        gap = self.size.width - text.cell_len - palette.cell_len
        if gap > 0:
            text.append(" " * gap)
            text.append_text(palette)
        return text
