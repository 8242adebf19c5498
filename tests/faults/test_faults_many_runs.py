"""100 headless runs at once, all recording into one ledger directory (processes standing in for the tasks of a
job array on many nodes), all writing one MySQL results table, while a reader keeps reading the ledger: every run
and every unit is in the index exactly once, and `ledger rebuild` gives the identical index. A private MariaDB,
because 100 runs hold 200 connections, more than the shared server's default allows its other users."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.helpers.faultkit import check_outcome, fill_mysql, mysql_source, mysql_table, private_mariadb, sop_notes
from tests.helpers.runhelp import spawn_run
from tests.helpers.support import ROOT, experiment_toml
from tests.standin.standin_ollama import spawn_standin

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # 100 processes: the whole machine

RUNS = 100
NOTES = 6


def index_snapshot(ledger_dir):
    conn = sqlite3.connect(ledger_dir / "ledger.db")
    runs = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
    units = conn.execute("SELECT * FROM units ORDER BY run_id, unit_id").fetchall()
    conn.close()
    return runs, units


def test_a_hundred_runs_at_once_on_one_ledger(tmp_path, private_ledger):
    with private_mariadb(max_connections=RUNS * 2 + 50) as mdb:
        connect = mdb.new_database("nt_many")
        notes = fill_mysql(connect, sop_notes(NOTES))
        env = mdb.write_env(tmp_path / ".env", "nt_many")
        server = spawn_standin(latency=0.01, slots=32)
        try:
            procs = []
            for i in range(RUNS):
                exp = tmp_path / f"arm{i:03d}.toml"
                exp.write_text(experiment_toml(source=mysql_source(env.name), hosts=[server.url], name=f"arm-{i:03d}",
                                               results='table = "pna_results"\nbatch_size = 2'))
                procs.append(spawn_run(exp, env={"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_JOB_ID": "4242"}))
            reads = 0
            while any(p.poll() is None for p in procs):
                res = subprocess.run([sys.executable, "-m", "app", "ledger", "list", "--json"], cwd=ROOT,
                                     capture_output=True, text=True, timeout=120)
                assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
                json.loads(res.stdout)
                reads += 1
                time.sleep(0.2)
            outcomes = [(p.returncode, *p.communicate(timeout=60)) for p in procs]
            chats = server.stats()["chat"]
        finally:
            server.stop()
        failed = [(code, err) for code, _, err in outcomes if code != 0 or "Traceback" in err]
        assert not failed, failed[:3]
        assert chats == RUNS * NOTES
        from ledger import Ledger

        led = Ledger(private_ledger)
        assert led.sync(wait_s=60)
        runs = led.list_runs()
        assert len(runs) == RUNS and len({r["run_id"] for r in runs}) == RUNS
        assert sorted(r["experiment"] for r in runs) == [f"arm-{i:03d}" for i in range(RUNS)]
        assert all(r["status"] == "completed" and r["counts"]["done"] == NOTES for r in runs)
        assert reads >= 1
        table = mysql_table(connect)
        for i in range(RUNS):
            check_outcome(table, notes, private_ledger, experiment=f"arm-{i:03d}", label="100 runs at once")
        before = index_snapshot(private_ledger)
        assert len(before[1]) == RUNS * NOTES
        led.rebuild()
        assert index_snapshot(private_ledger) == before
