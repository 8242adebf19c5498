"""A run killed after the database committed a batch and before the journal recorded it: the rows are in the table
but in no journal. The next run of the experiment finds the killed holder of the run lock, answers those notes again
and records them, so the ledger's counts equal the table's again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers.faultkit import check_outcome, notes_source, sop_notes
from tests.helpers.runhelp import journal_records, ledger_runs, spawn_run
from tests.helpers.support import ROOT, experiment_toml
from tests.standin.standin_ollama import StandinOllama

N = 40
BATCH = 5


@pytest.mark.parametrize("kind", ["mysql", "sqlite"])
def test_rows_no_journal_records_are_answered_again(tmp_path, kind, request, private_ledger):
    by_uid, table, source = notes_source(kind, sop_notes(N), tmp_path, request)
    with StandinOllama(latency=0.01, slots=2) as server:
        exp = tmp_path / "exp.toml"
        exp.write_text(experiment_toml(source=source, hosts=[server.url], run="concurrency = 1",
                                       results=f'table = "pna_results"\nbatch_size = {BATCH}'))
        env = dict(os.environ, KILL_BEFORE_JOURNAL_BATCH="3")
        killed = subprocess.run([sys.executable, "-m", "tests.helpers.faultpoint", "--run", str(exp)], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        journaled = [u["id"] for rec in journal_records(private_ledger) for u in rec.get("units", [])]
        in_table = len(table.rows("pna-test"))
        assert len(journaled) == 2 * BATCH and in_table >= 3 * BATCH  # the third batch is in the table only
        before = server.stats()["chat"]
        proc = spawn_run(exp)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert f"{in_table - 2 * BATCH} answers of run" in out and "answered again" in out, out
        assert server.stats()["chat"] - before == N - 2 * BATCH
    assert sorted(r["status"] for r in ledger_runs(private_ledger)) == ["completed", "crashed"]
    check_outcome(table, by_uid, private_ledger, label=f"killed between commit and journal ({kind})")
