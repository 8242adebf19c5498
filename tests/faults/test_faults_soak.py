"""A soak: 20 rounds of SIGKILL at a random moment of a run of one experiment (start-up, reading, answering,
committing, journaling), then a rerun. At the end each note has exactly one row and the ledger's counts add up to
the rows. Against the real MariaDB and a SQLite file (a SIGKILL mid-transaction leaves a hot journal behind)."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.helpers.faultkit import check_outcome, count_rows, notes_source, sop_notes
from tests.helpers.runhelp import ledger_runs, spawn_run
from tests.helpers.support import experiment_toml
from tests.standin.standin_ollama import spawn_standin

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # the kills land at chosen moments of a run, not of a busy machine

ROUNDS = 20
N = 1200


@pytest.mark.parametrize("kind", ["mysql", "sqlite"])
def test_twenty_random_sigkills_then_a_rerun(tmp_path, kind, request, private_ledger):
    by_uid, table, source = notes_source(kind, sop_notes(N), tmp_path, request)
    rng = random.Random(20)  # the moments differ from round to round, and from run to run of the suite
    server = spawn_standin(latency=0.1, slots=4, invalid_rate=0.1, seed=5)
    exp = tmp_path / "exp.toml"
    exp.write_text(experiment_toml(source=source, hosts=[server.url], run="concurrency = 4",
                                   results='table = "pna_results"\nbatch_size = 3'))
    kept = []
    try:
        for _ in range(ROUNDS):
            proc = spawn_run(exp)
            time.sleep(rng.uniform(0.2, 2.5) + random.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            kept.append(count_rows(table))
        server.configure(latency=0.01)  # the last run only has to finish
        proc = spawn_run(exp)
        out, err = proc.communicate(timeout=180)
    finally:
        server.stop()
    assert proc.returncode == 0, (out, err)
    assert kept[-1] < N and max(kept) > 0, kept  # the kills landed while there was work, and work got done
    statuses = [r["status"] for r in ledger_runs(private_ledger)]
    assert statuses.count("completed") >= 1 and "running" not in statuses
    check_outcome(table, by_uid, private_ledger, label=f"soak {kind}: {ROUNDS} SIGKILLs")
