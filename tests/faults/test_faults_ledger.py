"""The ledger's side of a run going wrong: its disk fills up mid-run, and its index is held locked by another
process. Runs never depend on the index; the journal keeps every batch the table holds."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers.faultkit import WRITTEN, check_outcome, count_rows, fill_disk, notes_source, small_tmpfs, sop_notes
from tests.helpers.runhelp import journal_records, ledger_runs, spawn_run
from tests.helpers.support import ROOT, experiment_toml
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import spawn_standin

# Real time is what these check (a 10 s lock, a stop signal's grace, a detached process, a terminal): seconds each, so
# they are the slow tier's, run by .ci/run with the rest
pytestmark = pytest.mark.slow

N = 400


@pytest.fixture
def server():
    s = spawn_standin(latency=0.05, slots=4)
    yield s
    s.stop()


def write_exp(tmp_path, server, source, batch=10):
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=source, hosts=[server.url], run="concurrency = 4",
                                   results=f'table = "pna_results"\nbatch_size = {batch}'))
    return exp


@pytest.mark.serial  # mounts a tmpfs
@pytest.mark.parametrize("kind", ["mysql", "sqlite"])
def test_the_ledger_disk_fills_up_mid_run(tmp_path, kind, request, server):
    notes, table, source = notes_source(kind, sop_notes(N), tmp_path, request)
    exp = write_exp(tmp_path, server, source)
    with small_tmpfs("1m") as disk:
        ledger = disk / "ledger"
        proc = spawn_run(exp, "--ledger", str(ledger))
        wait_for(lambda: count_rows(table) >= 40, 60, "40 committed rows")
        fill_disk(disk)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (out, err)
        # the live feed, on the same full disk, says once that it stops; nothing else goes to stderr
        others = [ln for ln in err.splitlines() if ln.strip() and "the live feed cannot be written" not in ln]
        assert "Traceback" not in err and not others, err
        [summary] = [ln for ln in out.splitlines() if ln.startswith("run ") and " failed " in ln]
        assert "last error: the run journal cannot be written: [Errno 28] No space left on device" in out, out
        kept = table.rows("pna-test")
        assert 0 < len(kept) < N
        records = journal_records(ledger)
        assert records[-1]["type"] == "close" and records[-1]["status"] == "failed", records[-1]
        journaled = sorted(u["id"] for r in records for u in r.get("units", []) if u["outcome"] in WRITTEN)
        assert journaled == sorted(r["uid"] for r in kept)  # every batch in the table is in the journal, and back
        assert sum(records[-1]["counts"][k] for k in WRITTEN) == len(kept)
        (disk / "filler").unlink()  # room again: the rerun finishes
        rerun = spawn_run(exp, "--ledger", str(ledger))
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, (out, err)
        assert f"{N - len(kept)} notes to do" in out
        assert sorted(r["status"] for r in ledger_runs(ledger)) == ["completed", "failed"]
        check_outcome(table, notes, ledger, label=f"ledger disk full mid-run ({kind})")


@pytest.mark.serial  # mounts a tmpfs
def test_a_full_ledger_disk_at_the_start_is_one_line(tmp_path, server):
    notes, table, source = notes_source("sqlite", sop_notes(20), tmp_path, None)
    exp = write_exp(tmp_path, server, source)
    with small_tmpfs("256k") as disk:
        fill_disk(disk)
        res = subprocess.run([sys.executable, "-m", "app", "--run", str(exp), "--ledger", str(disk / "ledger")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "--ledger" in lines[0], res.stderr
    import sqlite3

    conn = sqlite3.connect(tmp_path / "notes.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert server.stats()["chat"] == 0 and tables == {"PNA2_100_RadNotes"}  # nothing sent, no results table made


HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.parametrize("kind", ["mysql", "sqlite"])
def test_ledger_db_held_locked_for_10_s(tmp_path, kind, request, server, private_ledger):
    """Someone holds ledger.db in an exclusive transaction (a sqlite3 shell, a backup) for 10 s: a run goes on and
    ends as usual, a reader waits or answers from what is there, and nothing is imported twice."""
    notes, table, source = notes_source(kind, sop_notes(N), tmp_path, request)
    exp = write_exp(tmp_path, server, source)
    first = spawn_run(exp, "--limit", "40")
    assert first.wait(60) == 0
    assert len(ledger_runs(private_ledger)) == 1  # ledger.db exists, with the first run
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(private_ledger / "ledger.db"), "10"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    held_at = time.monotonic()
    run = spawn_run(exp)
    reader = subprocess.run([sys.executable, "-m", "app", "ledger", "list", "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    out, err = run.communicate(timeout=120)
    holder.wait(30)
    assert run.returncode == 0, (out, err)
    assert "Traceback" not in err and not err.strip(), err
    assert reader.returncode == 0 and "Traceback" not in reader.stderr, reader.stderr
    assert len(__import__("json").loads(reader.stdout)) >= 1  # it answered, from what the index held
    assert time.monotonic() - held_at >= 10
    check_outcome(table, notes, private_ledger, label=f"ledger.db locked 10 s ({kind})")
    from ledger import Ledger

    before = snapshot(private_ledger)
    Ledger(private_ledger).rebuild()
    assert snapshot(private_ledger) == before  # nothing was imported twice


def snapshot(ledger_dir):
    import sqlite3

    conn = sqlite3.connect(ledger_dir / "ledger.db")
    runs = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
    units = conn.execute("SELECT * FROM units ORDER BY run_id, unit_id").fetchall()
    conn.close()
    return runs, units


def test_an_index_locked_longer_than_a_reader_waits_is_one_line(tmp_path, server, private_ledger):
    """Held longer than the busy timeout (10 s): the reader gives up with one line instead of a traceback, and the
    run that ends meanwhile is not held up: it never writes the index (the next reader imports its journal)."""
    notes, table, source = notes_source("sqlite", sop_notes(40), tmp_path, None)
    exp = write_exp(tmp_path, server, source)
    assert spawn_run(exp, "--limit", "10").wait(60) == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(private_ledger / "ledger.db"), "14"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    run = spawn_run(exp)
    reader = subprocess.run([sys.executable, "-m", "app", "ledger", "list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    out, err = run.communicate(timeout=120)
    holder.wait(30)
    assert reader.returncode == 2, reader
    lines = [ln for ln in reader.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("notes-tui: error: the ledger index") and "is locked by another process" in lines[-1]
    assert "Traceback" not in reader.stderr and len(lines) <= 2, reader.stderr  # at most the warning before it
    # a run never writes the index (readers import its journal), so a locked index cannot hold it up
    assert run.returncode == 0 and "ledger:  " in out and not err.strip(), (out, err)
    check_outcome(table, notes, private_ledger, label="ledger.db locked longer than readers wait")
