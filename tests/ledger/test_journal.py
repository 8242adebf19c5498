from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import Journal
from ledger.journal import line_hash
from tests.helpers.ledgerkit import counts_for, make_header, make_units, read_lines


def test_records_round_trip_with_chain_and_seq(tmp_path: Path) -> None:
    header = make_header(note="ünïcode stays readable", extra={"nested": [1, 2]})
    journal = Journal.create(tmp_path / "led", header)
    units = make_units(0, 3)
    journal.append_units(units)
    journal.checkpoint(counts_for(3, 100))
    journal.close("completed", counts_for(3, 100), last_error=None)

    assert journal.path == tmp_path / "led" / "journal" / f"{journal.run_id}.jsonl"
    raw = journal.path.read_bytes()
    assert raw.endswith(b"\n") and "ünïcode".encode() in raw  # ensure_ascii=False
    lines = read_lines(journal.path)
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["header", "batch", "checkpoint", "close"]
    assert [r["seq"] for r in records] == [0, 1, 2, 3]
    assert records[0]["prev"] is None
    for before, rec in zip(lines, records[1:]):
        assert rec["prev"] == line_hash(before)
    assert all(r["run"] == journal.run_id for r in records)
    assert all(len(r["t"]) == 24 and r["t"].endswith("Z") for r in records)
    assert records[0]["header"] == header
    assert records[1]["units"] == units
    assert records[2]["counts"] == counts_for(3, 100)
    assert (records[3]["status"], records[3]["last_error"]) == ("completed", None)
    assert all(b", " not in line and b": " not in line[:40] for line in lines)  # compact separators


def test_modes_idempotent_close_and_misuse(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "a" / "b", make_header())
    assert stat.S_IMODE(os.stat(journal.path).st_mode) == 0o600
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "journal"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    journal.close("failed", counts_for(0, 100), last_error="backend unreachable")
    size = journal.path.stat().st_size
    journal.close("completed", counts_for(0, 100))  # second close: nothing
    assert journal.path.stat().st_size == size and journal.closed
    with pytest.raises(ValueError):
        journal.checkpoint(counts_for(0, 100))
    other = Journal.create(tmp_path / "a" / "b", make_header())
    with pytest.raises(ValueError):
        other.close("weird", {})
    with pytest.raises(ValueError):
        other.append_units([{"outcome": "valid"}])  # no id
    with pytest.raises(FileExistsError):
        Journal.create(tmp_path / "a" / "b", make_header(), run_id=other.run_id)


def test_package_import_is_cheap_and_isolated() -> None:
    code = (
        "import sys, ledger; ledger.Journal; ledger.new_run_id; ledger.resolve_ledger_dir;"
        "assert 'sqlite_utils' not in sys.modules;"
        "ledger.Ledger; import ledger.report.terminal;"
        "bad = [m for m in sys.modules if m == 'app' or m.startswith(('app.', 'textual'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
