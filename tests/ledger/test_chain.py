"""The chain of seals across finished runs, the status column in SQL and the upgrade of an index made before them."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from ledger import Journal, Ledger
from ledger.chain import CHAIN_FILE
from ledger.verify import verify_ledger
from tests.helpers.ledgerkit import counts_for, make_header, make_units, table_rows


def finished(ledger_dir: Path, experiment: str, status: str = "completed", units: int = 10) -> Journal:
    journal = Journal.create(ledger_dir, make_header(experiment=experiment, total=units))
    journal.append_units(make_units(0, units))
    journal.close(status, counts_for(units, units))
    return journal


def seals(ledger_dir: Path) -> list[dict]:
    path = ledger_dir / CHAIN_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_finished_runs_are_sealed_in_the_order_they_finished(tmp_path):
    running = Journal.create(tmp_path, make_header(experiment="slow"))
    running.append_units(make_units(0, 5))
    first = finished(tmp_path, "a", "interrupted")
    second = finished(tmp_path, "b", "failed")
    led = Ledger(tmp_path)
    assert led.sync()
    assert [(s["kind"], s["id"], s["records"]) for s in seals(tmp_path)] == [("run", first.run_id, 3), ("run", second.run_id, 3)]
    assert seals(tmp_path)[1]["prev"] is not None and led.head().entries == 2
    running.close("completed", counts_for(5, 5))
    assert led.sync()
    assert [s["id"] for s in seals(tmp_path)] == [first.run_id, second.run_id, running.run_id]
    assert led.sync() and len(seals(tmp_path)) == 3  # nothing is sealed twice
    assert verify_ledger(tmp_path).ok
    assert os.stat(tmp_path / CHAIN_FILE).st_mode & 0o777 == 0o600


def test_a_seal_written_but_not_recorded_is_caught_up(tmp_path):
    finished(tmp_path, "a")
    finished(tmp_path, "b")
    led = Ledger(tmp_path)
    assert led.sync()
    before = table_rows(led.db_path, "chain")
    # a crash after the append and before the commit: the file has the lines, the index not
    conn = sqlite3.connect(led.db_path)
    conn.execute("delete from chain")
    conn.commit()
    conn.close()
    assert led.sync()
    assert table_rows(led.db_path, "chain") == before and len(seals(tmp_path)) == 2


def test_a_cut_seal_line_is_dropped_before_sealing_on(tmp_path):
    finished(tmp_path, "a")
    led = Ledger(tmp_path)
    assert led.sync()
    with open(tmp_path / CHAIN_FILE, "ab") as f:
        f.write(b'{"seq":1,"prev":"ab')  # the last holder died mid-line
    late = finished(tmp_path, "b")
    assert led.sync()
    assert [s["id"] for s in seals(tmp_path)][-1] == late.run_id and len(seals(tmp_path)) == 2
    assert verify_ledger(tmp_path).ok


def test_rebuild_keeps_the_chain_and_its_head(tmp_path):
    for name in "abc":
        finished(tmp_path, name)
    led = Ledger(tmp_path)
    assert led.sync()
    chain_bytes = (tmp_path / CHAIN_FILE).read_bytes()
    head = led.head()
    incremental = {t: table_rows(led.db_path, t) for t in ("runs", "units", "journals", "chain", "timeline")}
    led.rebuild()
    assert (tmp_path / CHAIN_FILE).read_bytes() == chain_bytes and led.head() == head
    assert {t: table_rows(led.db_path, t) for t in incremental} == incremental


def test_a_broken_chain_stops_sealing_until_someone_looks(tmp_path):
    finished(tmp_path, "a")
    finished(tmp_path, "b")
    led = Ledger(tmp_path)
    assert led.sync()
    lines = (tmp_path / CHAIN_FILE).read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"records":3', b'"records":2')
    (tmp_path / CHAIN_FILE).write_bytes(b"\n".join(lines))
    led.rebuild()  # re-reads the file: line 2 no longer follows line 1
    finished(tmp_path, "c")
    assert led.sync()
    assert len(seals(tmp_path)) == 2  # c is not sealed onto a broken chain
    problems = verify_ledger(tmp_path).problems
    assert problems[0].what == "chain" and problems[0].seq == 0 and "was changed" in problems[0].message


def test_status_is_readable_in_sql(tmp_path):
    alive = Journal.create(tmp_path, make_header(experiment="alive"))
    dead = Journal.create(tmp_path, make_header(experiment="dead", pid=2 ** 22 + 12345, pid_start=1))
    done = finished(tmp_path, "done", "interrupted")
    assert Ledger(tmp_path).sync()
    conn = sqlite3.connect(tmp_path / "ledger.db")
    got = dict(conn.execute("select run_id, status from runs"))
    conn.close()
    assert got == {alive.run_id: "running", dead.run_id: "crashed", done.run_id: "interrupted"}
    assert {r["run_id"]: r["status"] for r in Ledger(tmp_path).list_runs()} == got


def test_an_index_made_before_the_audit_migration_is_upgraded(tmp_path):
    journal = Journal.create(tmp_path, make_header(model_details={"quantization_level": "Q8_0", "parameter_size": "8B"}))
    journal.append_units(make_units(0, 20))
    journal.close("completed", counts_for(20, 20))
    led = Ledger(tmp_path)
    assert led.sync()
    # take the index back to what the landed engine wrote (m001 only), keeping its imported rows
    conn = sqlite3.connect(led.db_path)
    for view in ("run_overview", "runs_per_experiment", "label_counts", "outcome_counts", "eval_results"):
        conn.execute(f"drop view {view}")
    for table in ("timeline", "chain", "evals", "ledger_meta"):
        conn.execute(f"drop table {table}")
    conn.execute("drop index idx_runs_recorded_status")
    conn.execute("drop index idx_runs_experiment_started_at")
    for column in ("status", "quantization", "parameter_size", "shard"):
        conn.execute(f"alter table runs drop column {column}")
    conn.execute("delete from _ledger_migrations where name = 'm002_audit'")
    conn.commit()
    conn.close()
    assert led.sync()  # the next reader migrates
    conn = sqlite3.connect(led.db_path)
    try:
        assert conn.execute("select status, quantization, parameter_size from runs").fetchone() == ("completed", "Q8_0", "8B")
        assert [r[0] for r in conn.execute("select name from _ledger_migrations")] == [
            "m001_initial", "m002_audit", "m003_study", "m004_adjudications", "m005_study_scans"]
        assert conn.execute("select count(*) from chain").fetchone()[0] == 1  # read back from chain.jsonl
        assert conn.execute("select valid_pct from run_overview").fetchone()[0] == 25.0
    finally:
        conn.close()


def test_an_index_made_before_studies_gets_each_cells_study_from_its_header(tmp_path):
    study = {"name": "pna-study", "cell": "llama3/v1/r2", "model": "llama3", "prompt": "v1", "repeat": 2}
    journal = Journal.create(tmp_path, make_header(study=study))
    journal.append_units(make_units(0, 5))
    journal.close("completed", counts_for(5, 5))
    Journal.create(tmp_path, make_header()).close("completed", counts_for(0, 0))
    led = Ledger(tmp_path)
    assert led.sync()
    conn = sqlite3.connect(led.db_path)
    conn.execute("drop index idx_runs_study_started_at")
    for column in ("study", "cell"):
        conn.execute(f"alter table runs drop column {column}")
    conn.execute("delete from _ledger_migrations where name = 'm003_study'")
    conn.commit()
    conn.close()
    assert led.sync()
    conn = sqlite3.connect(led.db_path)
    try:
        got = conn.execute("select study, cell from runs").fetchall()
        assert sorted(got, key=lambda r: r[0] or "") == [(None, None), ("pna-study", "llama3/v1/r2")]
    finally:
        conn.close()


def test_an_index_made_before_adjudications_imports_and_seals_the_file_on_its_next_sync(tmp_path):
    from ledger.adjudication import Decision, append

    led = Ledger(tmp_path)
    Journal.create(tmp_path, make_header()).close("completed", counts_for(0, 0))
    assert led.sync()
    conn = sqlite3.connect(led.db_path)
    conn.execute("drop table adjudications")
    conn.execute("delete from _ledger_migrations where name = 'm004_adjudications'")
    conn.commit()
    conn.close()
    append(tmp_path, Decision("s", "response", "7", "(1) Likely"), who="tester")  # written by a newer notes-tui
    assert led.sync()
    conn = sqlite3.connect(led.db_path)
    try:
        assert conn.execute("select unit, label, who from adjudications").fetchall() == [("7", '"(1) Likely"', "tester")]
        assert conn.execute("select kind, records from chain where kind = 'adjudication'").fetchall() == [("adjudication", 1)]
    finally:
        conn.close()
