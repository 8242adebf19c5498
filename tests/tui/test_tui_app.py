"""The app as a whole: screen keys, the help screen and the command palette list every action, no binding that
screen or tmux would swallow, NO_COLOR, and the factory the CLI uses."""

from __future__ import annotations

import inspect

from textual.binding import Binding

import app.tui.screens as screens_pkg
from app.tui.app import NotesApp
from app.tui.keys import app_keys, display, screen_keys
from tests.helpers.tuikit import build_app, closed_url, run, screen_text, until, write_config


def all_bindings():
    """Every binding of the app and of every screen class in app.tui.screens."""
    import importlib
    import pkgutil

    owners = [NotesApp]
    for mod in pkgutil.iter_modules(screens_pkg.__path__):
        module = importlib.import_module(f"app.tui.screens.{mod.name}")
        owners += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                   if obj.__module__ == module.__name__ and hasattr(obj, "BINDINGS")]
    for owner in owners:
        for b in owner.BINDINGS:
            b = b if isinstance(b, Binding) else Binding(*b)
            yield owner, b


def test_no_binding_on_keys_that_screen_or_tmux_take():
    bound = [(owner.__name__, key) for owner, b in all_bindings() for key in b.key.split(",")]
    assert bound, "no bindings found"
    assert not [pair for pair in bound if pair[1] in ("ctrl+a", "ctrl+b")], bound


@run
async def test_help_lists_every_key_of_every_screen(tmp_path):
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 120)) as pilot:  # tall enough for the whole list without scrolling
        await pilot.press("question_mark")
        await until(pilot, lambda: "escape closes · ctrl+p" in screen_text(app), what="the help")
        text = screen_text(app)
        for key in app_keys(NotesApp):
            assert key.keys in text and key.what in text
        for screen_cls in NotesApp.MODES.values():
            for key in screen_keys(screen_cls, slurm=False):  # no Slurm in these tests: its keys are absent
                assert key.keys in text and key.what in text, key
        await pilot.press("escape")
        assert "Servers" in screen_text(app)


@run
async def test_the_palette_has_an_entry_for_every_action_and_runs_it(tmp_path):
    app = build_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        titles = {c.title: c for c in app.get_system_commands(app.screen)}
        for key in app_keys(NotesApp):
            if key.action:
                assert key.what in titles
        for mode, screen_cls in NotesApp.MODES.items():
            title = NotesApp.SCREEN_KEYS[mode][1]
            for key in screen_keys(screen_cls, slurm=False):  # no Slurm in these tests: its keys are absent
                if key.action:
                    assert f"{title}: {key.what}" in titles, key
        await titles["Models: Sort by size"].callback()  # from screen 1: switches to 2 and sorts there
        await pilot.pause()
        assert app.current_mode == "models" and app.screen.sort_key == "size"


@run
async def test_keys_1_to_5_switch_screens_and_a_dialog_takes_its_keys_first(tmp_path):
    app = build_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        assert app.current_mode == "models" and "2 Models" in screen_text(app)
        for key, mode in (("3", "experiments"), ("4", "runs"), ("5", "ledger"), ("2", "models")):
            await pilot.press(key)
            assert app.current_mode == mode
        await pilot.press("1")
        assert app.current_mode == "servers"
        await pilot.press("a")  # a dialog is open: screen keys go to it, not to the app
        await pilot.press("2")
        assert app.current_mode == "servers" and app.screen.query_one("#url").value == "2"


def _fills(svg: str) -> set[tuple[int, int, int]]:
    import re

    return {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in re.findall(r"fill: (#[0-9a-f]{6})", svg)}


@run
async def test_no_color_is_all_greys_and_keeps_every_state_readable(tmp_path, monkeypatch, standin):
    down = closed_url()
    write_config(tmp_path / "user-config.toml", [(standin.url, "gpu-a"), (down, None)])
    for no_color in (False, True):
        if no_color:
            monkeypatch.setenv("NO_COLOR", "1")
        app = build_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda app=app: app.health(down).state == "down", what="probes")
            await pilot.pause(0.1)
            assert app.no_color is no_color
            coloured = {rgb for rgb in _fills(app.export_screenshot()) if max(rgb) - min(rgb) > 24}
            assert bool(coloured) is not no_color, coloured  # colours without NO_COLOR, only greys with it
            state = app.screen.query_one("#servers-table").get_row(down)[2]
            assert state.plain == "down: refused"
            # in greys, red would be a dark grey on a dark background: weight and underline carry it instead
            assert ("underline" in str(state.style)) is no_color
    assert display("question_mark") == "?"


@run
async def test_help_explains_the_terms_of_the_per_note_log(tmp_path):
    from datetime import datetime

    from app.runs.followed import log_line
    from app.tui.dialogs.help import LOG_LEGEND

    # the legend's example is what the log really prints
    t = datetime(2026, 12, 6, 14, 2, 11).timestamp()
    line = log_line({"t": t, "outcome": "valid", "id": "1007|ACC00007", "answer": {"response": "(1) Likely"},
                     "attempts": 1, "latency_ms": 812, "tokens_in": 412, "tokens_out": 38})
    assert line == "14:02:11 valid   1007|ACC00007  response=(1) Likely  a1 812 ms 412/38 tok"
    app = build_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        app.screen.query_one("#help-body").scroll_end(animate=False)
        await pilot.pause()
        text = screen_text(app)
        assert "4 Runs: log" in text and "the per-note log, term by term" in text
        for term, meaning in LOG_LEGEND:
            assert term in text and meaning[:40] in text, term
