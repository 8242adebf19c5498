from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from ledger import Journal, Ledger
from ledger.clock import utc_now_iso
from tests.helpers.ledgerkit import counts_for, forge_next, make_header, make_units, read_lines, table_rows


def db_rows(led: Ledger) -> dict[str, list[tuple]]:
    return {t: table_rows(led.db_path, t) for t in ("runs", "units", "journals")}


def journal_state(led: Ledger, journal: Journal) -> dict:
    conn = sqlite3.connect(led.db_path)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("select * from journals where file = ?", (journal.path.name,)).fetchone()
        return dict(row) if row else {}
    finally:
        conn.close()


def test_sync_imports_runs_units_and_counts(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header(total=120, weird={"x": 1}))
    journal.append_units(make_units(0, 60))
    journal.checkpoint(counts_for(60, 120, cache_hits=7))
    journal.append_units(make_units(60, 60) + make_units(0, 1))  # u000000 again: one row per (run, unit)
    journal.close("completed", counts_for(120, 120, cache_hits=9))
    led = Ledger(tmp_path)
    assert led.sync()
    assert stat.S_IMODE(os.stat(led.db_path).st_mode) == 0o600

    run = led.get_run(journal.run_id)
    assert run is not None
    assert run["status"] == run["recorded_status"] == "completed"
    assert run["counts"] == counts_for(120, 120, cache_hits=9)
    assert run["extra_counts"] == {"cache_hits": 9}
    assert run["hosts"] == ["http://gpu1:11434"] and run["options"]["num_ctx"] == 8192
    assert run["slurm_job_id"] == "123" and run["slurm_array_task_id"] == "3"
    assert "toml_text" not in run["header"] and run["header"]["weird"] == {"x": 1}
    assert run["toml_text"] == 'name = "smoke"\n'
    assert run["started_at"] == "2024-05-01T10:00:00.000Z"
    assert run["ended_at"] == run["last_seen_at"] == read_last_t(journal.path)
    assert run["journal_error"] is None

    units = led.units(journal.run_id)
    assert len(units) == 120
    first = units[0]
    assert first["unit_id"] == "u000000" and first["answer"] == {"label": "no", "score": 0}
    assert first["truncated"] is True and first["outcome"] == "valid"
    assert led.list_runs()[0]["counts"]["done"] == 120
    state = journal_state(led, journal)
    assert (state["offset"], state["seq"], state["error"]) == (journal.path.stat().st_size, 4, None)

    conn = sqlite3.connect(led.db_path)
    assert [r[0] for r in conn.execute("select name from _ledger_migrations")] == [
        "m001_initial", "m002_audit", "m003_study", "m004_adjudications", "m005_study_scans"]
    assert conn.execute("pragma journal_mode").fetchone()[0] == "delete"


def read_last_t(path: Path) -> str:
    return json.loads(read_lines(path)[-1])["t"]


def test_cut_last_line_waits_for_its_writer(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 10))
    journal.append_units(make_units(10, 10))
    good_size = journal.path.stat().st_size
    nxt = forge_next(journal.path, {"type": "batch", "units": make_units(20, 10)}, utc_now_iso())
    with open(journal.path, "ab") as f:
        f.write(nxt[:57])  # a writer caught mid-line
    led = Ledger(tmp_path)
    assert led.sync()
    assert len(led.units(journal.run_id)) == 20
    state = journal_state(led, journal)
    assert (state["offset"], state["seq"], state["error"]) == (good_size, 2, None)
    with open(journal.path, "ab") as f:
        f.write(nxt[57:])
    assert len(led.units(journal.run_id)) == 30
    assert journal_state(led, journal)["seq"] == 3


def tamper(path: Path, line_no: int, old: bytes, new: bytes) -> None:
    lines = read_lines(path)
    assert old in lines[line_no]
    lines[line_no] = lines[line_no].replace(old, new, 1)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_tampered_count_stops_the_import(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 50))
    journal.checkpoint(counts_for(50, 100))  # line 3: tampered below
    journal.append_units(make_units(50, 50))
    journal.checkpoint(counts_for(100, 100))
    journal.close("completed", counts_for(100, 100))
    tamper(journal.path, 2, b'"done":50', b'"done":58')

    led = Ledger(tmp_path)
    assert led.sync()
    run = led.get_run(journal.run_id)
    assert run is not None
    # Line 4's prev no longer matches line 3, so line 3 is not trusted either: nothing past line 2 is applied.
    assert run["journal_error"] == "line 4: prev hash does not match the previous line"
    assert run["counts"]["done"] == 0 and run["recorded_status"] == "running"
    assert len(led.units(journal.run_id)) == 50
    assert journal_state(led, journal)["seq"] == 1
    assert [e["file"] for e in led.journal_errors()] == [journal.path.name]
    assert led.sync()  # a broken journal is skipped from now on, without error
    assert table_rows(led.db_path, "runs") == before_rebuild(led)


def before_rebuild(led: Ledger) -> list[tuple]:
    rows = table_rows(led.db_path, "runs")
    led.rebuild()
    return rows


def test_break_after_the_suspect_line_was_imported(tmp_path: Path) -> None:
    """The suspect line was applied as the last line of an earlier sync: the run is re-imported without it."""
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 30))
    journal.checkpoint(counts_for(30, 100))
    tamper(journal.path, 2, b'"done":30', b'"done":31')
    led = Ledger(tmp_path)
    assert led.sync()
    # The last line has no successor to vouch for it yet, so the edit is not detectable now ...
    assert led.get_run(journal.run_id)["counts"]["done"] == 31
    journal.append_units(make_units(30, 30))  # ... but the writer's chain goes on from the original line
    assert led.sync()
    run = led.get_run(journal.run_id)
    assert run["counts"]["done"] == 0 and run["journal_error"].startswith("line 4: prev hash")
    assert len(led.units(journal.run_id)) == 30
    incremental = db_rows(led)
    led.rebuild()
    assert db_rows(led) == incremental


def test_malformed_complete_line_and_odd_values_never_crash(tmp_path: Path) -> None:
    odd = Journal.create(tmp_path, make_header(model={"name": "m"}, pid="x", total=2**70))
    odd.append_units([{"id": 7, "outcome": "valid", "answer": {"k": [1, {"z": None}]}, "tokens_in": {"bad": 1}}])
    odd.close("completed", counts_for(1, 1))
    garbage = Journal.create(tmp_path, make_header())
    garbage.append_units(make_units(0, 5))
    with open(garbage.path, "ab") as f:
        f.write(b"\x00\xffnot json\n")
    led = Ledger(tmp_path)
    assert led.sync()
    assert led.units(odd.run_id)[0]["unit_id"] == "7"
    assert led.get_run(odd.run_id)["status"] == "completed"
    assert led.get_run(garbage.run_id)["journal_error"] == "line 3: not valid JSON"
    assert len(led.units(garbage.run_id)) == 5


def test_unchanged_journals_are_not_read_again(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 5))
    led = Ledger(tmp_path)
    assert led.sync()
    # Same size, different bytes: only a re-read could notice, and the size check must prevent the re-read.
    data = journal.path.read_bytes()
    journal.path.write_bytes(data.replace(b'"outcome":"valid"', b'"outcome":"VALID"'))
    assert led.sync()
    assert led.get_run(journal.run_id)["journal_error"] is None


def test_incremental_imports_equal_rebuild(tmp_path: Path) -> None:
    led = Ledger(tmp_path, auto_sync=False)
    journals = [Journal.create(tmp_path, make_header(experiment=f"exp{i % 2}", total=90)) for i in range(4)]
    for step in range(3):
        for i, journal in enumerate(journals):
            journal.append_units(make_units(step * 30, 30, prefix=f"r{i}-"))
            journal.checkpoint(counts_for((step + 1) * 30, 90))
            assert led.sync()
    journals[0].close("completed", counts_for(90, 90))
    journals[1].close("failed", counts_for(90, 90), last_error="boom")
    with open(journals[2].path, "ab") as f:  # a cut tail
        f.write(b'{"type":"batch","seq":7')
    assert led.sync()
    incremental = db_rows(led)
    assert len(incremental["units"]) == 4 * 90
    led.rebuild()
    assert db_rows(led) == incremental
    assert not list(tmp_path.glob("ledger.db.rebuild-*"))


def test_corrupt_index_is_rebuilt_on_read(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 25))
    journal.close("interrupted", counts_for(25, 100))
    led = Ledger(tmp_path)
    assert len(led.list_runs()) == 1
    led.db_path.write_bytes(b"this is not a database, just garbage " * 500)
    runs = led.list_runs()
    assert [r["status"] for r in runs] == ["interrupted"]
    assert len(Ledger(tmp_path, auto_sync=False).units(journal.run_id)) == 25
    # Also when the reader does not sync first.
    led.db_path.write_bytes(b"\x00" * 4096 + b"garbage")
    assert len(Ledger(tmp_path, auto_sync=False).units(journal.run_id)) == 25


def test_reading_a_missing_ledger_creates_nothing(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "nowhere")
    assert led.list_runs() == [] and led.get_run("x") is None and led.units("x") == []
    assert not (tmp_path / "nowhere").exists()


def test_check_rebuilds_an_index_with_a_damaged_page(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header())
    for b in range(20):
        journal.append_units(make_units(b * 50, 50))
    led = Ledger(tmp_path, auto_sync=False)
    assert led.sync() and led.check()
    with open(led.db_path, "r+b") as f:  # damage pages in the middle, keep the header valid
        f.seek(4096 * 5)
        f.write(b"\xde\xad\xbe\xef" * 4096)
    assert led.check() is False  # found bad, rebuilt
    assert led.check() is True
    assert len(led.units(journal.run_id)) == 1000


def test_unserializable_header_leaves_no_journal(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Journal.create(tmp_path, make_header(bad=object()))
    assert list((tmp_path / "journal").iterdir()) == []
