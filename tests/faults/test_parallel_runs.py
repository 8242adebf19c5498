"""Several headless runs at once (a job array's shape) write their own journals while another process reads the
ledger: every run and every note appears exactly once, and a rebuild gives the same index."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.helpers.runhelp import spawn_run
from tests.helpers.support import ROOT, experiment_toml, write_env
from tests.standin.standin_ollama import spawn_standin

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

RUNS = 4
NOTES = 40


def snapshot(db_path):
    conn = sqlite3.connect(db_path)
    runs = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
    units = conn.execute("SELECT * FROM units ORDER BY run_id, unit_id").fetchall()
    conn.close()
    return runs, units


def test_parallel_headless_runs_with_a_reader(tmp_path, mysql_db, private_ledger):
    db, connect = mysql_db
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE notes (patientvisitid INT, accession VARCHAR(255), note_text BLOB)")
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)",
                        [(i, f"A{i}", f"CXR {i}: {'opacity' if i % 2 else 'clear'}".encode()) for i in range(NOTES)])
    conn.close()
    env = write_env(tmp_path / ".env", db)
    source = (f'kind = "mysql"\nenv_file = "{env.name}"\ntable = "notes"\n'
              'id_columns = ["patientvisitid", "accession"]\ntext_column = "note_text"')
    server = spawn_standin(latency=0.02, slots=8)
    try:
        procs = []
        for i in range(RUNS):
            exp = tmp_path / f"exp{i}.toml"
            exp.write_text(experiment_toml(source=source, hosts=[server.url], name=f"arm-{i}",
                                           results='table = "shared_results"\nbatch_size = 7'))
            procs.append(spawn_run(exp))
        reads = 0
        while any(p.poll() is None for p in procs):
            res = subprocess.run([sys.executable, "-m", "app", "ledger", "list", "--json"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            json.loads(res.stdout)
            reads += 1
            time.sleep(0.05)
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        server.stop()
    assert reads >= 1
    from ledger import Ledger

    led = Ledger(private_ledger)
    runs = led.list_runs()
    assert sorted(r["experiment"] for r in runs) == [f"arm-{i}" for i in range(RUNS)]
    assert all(r["status"] == "completed" and r["counts"]["done"] == NOTES for r in runs)
    for r in runs:
        ids = [u["unit_id"] for u in led.units(r["run_id"])]
        assert len(ids) == NOTES == len(set(ids))
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT experiment, COUNT(*), COUNT(DISTINCT patientvisitid) FROM shared_results GROUP BY experiment")
        assert sorted(cur.fetchall()) == [(f"arm-{i}", NOTES, NOTES) for i in range(RUNS)]
    conn.close()
    before = snapshot(private_ledger / "ledger.db")
    led.rebuild()
    assert snapshot(private_ledger / "ledger.db") == before
