"""The few styles the screens use, by meaning. Colour only adds to words; with NO_COLOR the same meanings are shown
by weight and underline, because greyed-out red on a dark background cannot be read."""

from __future__ import annotations

from textual.app import App

COLOUR = {"ok": "green", "warn": "yellow", "bad": "bold red", "quiet": "dim", "accent": "cyan", "strong": "bold",
          "key": "bold #ffa62b"}
PLAIN = {"ok": "", "warn": "bold", "bad": "bold underline", "quiet": "", "accent": "", "strong": "bold", "key": "bold"}
STATE_TONE = {"up": "ok", "slow": "warn", "down": "bad", "unknown": "quiet"}


def tone(app: App, kind: str) -> str:
    return (PLAIN if app.no_color else COLOUR)[kind]


def state_tone(app: App, state: str) -> str:
    return tone(app, STATE_TONE.get(state, "quiet"))
