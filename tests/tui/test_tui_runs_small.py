"""Runs (4) in a small terminal (issue 24 item 15): at 60×20 the per-note log keeps at least 5 rows, and the label
bars never break inside a label; the per-note log's times say their zone once (item 10)."""

from __future__ import annotations

from datetime import datetime

from tests.helpers.tuikit import build_app, run, screen_text, until
from tests.standin.standin_ollama import StandinOllama
from tests.tui.test_tui_runs import run_here, workspace


@run
async def test_at_60_by_20_the_log_keeps_five_rows_and_labels_stay_whole(tmp_path):
    with StandinOllama(latency=0.3, slots=2) as server:
        exp = workspace(tmp_path, server.url, n=60)
        app = build_app(tmp_path)
        async with app.run_test(size=(60, 20)) as pilot:
            followed = await run_here(pilot, app, exp)
            await until(pilot, lambda: followed.counts is not None and followed.counts.done >= 10, timeout=30,
                        what="notes answered")
            await pilot.pause(0.5)
            log = app.screen.query_one("#run-log")
            text = screen_text(app)
            assert log.region.height >= 5, (log.region, text)
            lines = text.splitlines()
            for label in ("(1) Likely", "(2) Unlikely", "(3) Unable to say"):
                # a label is on one line or not shown: never "(2)" at a line's end and "Unlikely" on the next
                for a, b in zip(lines, lines[1:]):
                    first, _, rest = label.partition(" ")
                    assert not (a.rstrip().endswith(first) and b.strip().startswith(rest.split(" ")[0])), (label, text)
            assert log.border_title == f"per-note log · times {datetime.now().astimezone().tzname()}"
        again = build_app(tmp_path)
        async with again.run_test(size=(80, 24)) as pilot:  # from 24 lines: the log has its border and its title
            await pilot.press("4")
            await until(pilot, lambda: "per-note log · times" in screen_text(again), what="the log's title")
