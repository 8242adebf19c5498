"""The MariaDB server goes away for 20 s in the middle of a run (maintenance, a failover) and comes back: the run
waits and goes on, nothing lost, nothing doubled. A private server (its own datadir, port and socket), never the
shared one on 3306, which other tests use at the same time."""

from __future__ import annotations

import time

import pytest

from tests.helpers.faultkit import check_outcome, count_rows, fill_mysql, mysql_source, mysql_table, private_mariadb, sop_notes
from tests.helpers.runhelp import ledger_runs, spawn_run
from tests.helpers.support import experiment_toml
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import spawn_standin

pytestmark = pytest.mark.slow

N = 2400
DOWN_S = 20.0


def test_mariadb_stopped_for_20_s_mid_run(tmp_path, private_ledger):
    with private_mariadb() as mdb:
        connect = mdb.new_database("nt_restart")
        notes = fill_mysql(connect, sop_notes(N, pad=2000))  # 2 KB notes: the read streams while the server goes
        table = mysql_table(connect)
        env = mdb.write_env(tmp_path / ".env", "nt_restart")
        server = spawn_standin(latency=0.05, slots=4)
        try:
            exp = tmp_path / "exp.toml"
            exp.write_text(experiment_toml(source=mysql_source(env.name), hosts=[server.url], run="concurrency = 4",
                                           results='table = "pna_results"\nbatch_size = 20'))
            proc = spawn_run(exp)
            wait_for(lambda: count_rows(table) >= 300, 60, "300 committed rows")
            mdb.stop()
            stopped = time.monotonic()
            answered_while_down = server.stats()["chat"]
            time.sleep(DOWN_S)
            answered_while_down = server.stats()["chat"] - answered_while_down
            assert proc.poll() is None, proc.communicate()  # still waiting for the database
            mdb.start()
            back = time.monotonic() - stopped
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, out + err
            assert back >= DOWN_S and answered_while_down > 0  # it went on answering what it had read meanwhile
            assert f"{N}/{N} notes" in out and "Traceback" not in err
            # it said it waited to write its results, once (not once per retry), and when that was over
            said = [line for line in out.splitlines() if line.startswith("cannot write its results to pna_results in ")]
            assert len(said) == 1 and "retries until" in said[0], out
            assert "its results are written again after" in out
            rerun = spawn_run(exp)
            out, err = rerun.communicate(timeout=120)
            assert rerun.returncode == 0 and "0 notes to do" in out, (out, err)
        finally:
            server.stop()
        assert [r["status"] for r in ledger_runs(private_ledger)] == ["completed", "completed"]
        check_outcome(table, notes, private_ledger, label="MariaDB stopped 20 s mid-run")
