from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from pathlib import Path

import pytest

from ledger import Journal, Ledger
from ledger.procinfo import pid_start_time
from tests.helpers.ledgerkit import counts_for, make_header, make_units, table_rows

FORK = mp.get_context("fork")
WRITERS, BATCHES, UNITS = 6, 20, 50


def _write_run(ledger_dir: str, n: int) -> None:
    pid = os.getpid()
    total = BATCHES * UNITS
    journal = Journal.create(Path(ledger_dir), make_header(experiment=f"w{n}", pid=pid, pid_start=pid_start_time(pid), total=total))
    for b in range(BATCHES):
        journal.append_units(make_units(b * UNITS, UNITS, prefix=f"w{n}-"))
        journal.checkpoint(counts_for((b + 1) * UNITS, total))
    journal.close("completed", counts_for(total, total))


def _read_loop(ledger_dir: str, stop: mp.synchronize.Event, errors: str) -> None:
    led = Ledger(Path(ledger_dir), read_wait_s=0.2)
    rounds = 0
    try:
        while not stop.is_set() or rounds < 3:
            led.sync(wait_s=0.5)
            for run in led.list_runs():
                assert run["counts"]["done"] <= run["counts"]["total"]
            rounds += 1
    except Exception:  # noqa: BLE001 - any failure in the child must reach the parent
        with open(errors, "a") as f:
            f.write(traceback.format_exc())


@pytest.mark.slow
def test_parallel_writers_and_importers(tmp_path: Path) -> None:
    errors = tmp_path / "errors.txt"
    stop = FORK.Event()
    readers = [FORK.Process(target=_read_loop, args=(str(tmp_path), stop, str(errors))) for _ in range(2)]
    writers = [FORK.Process(target=_write_run, args=(str(tmp_path), n)) for n in range(WRITERS)]
    for p in readers + writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    for p in readers:
        p.join(120)
    assert not errors.exists(), errors.read_text()
    assert [p.exitcode for p in readers + writers] == [0] * (len(readers) + len(writers))

    led = Ledger(tmp_path)
    runs = led.list_runs()
    assert sorted(r["experiment"] for r in runs) == [f"w{n}" for n in range(WRITERS)]
    for run in runs:
        assert run["status"] == "completed"
        assert run["counts"] == counts_for(BATCHES * UNITS, BATCHES * UNITS)
        unit_ids = [u["unit_id"] for u in led.units(run["run_id"])]
        n = run["experiment"][1:]
        assert unit_ids == [f"w{n}-{i:06d}" for i in range(BATCHES * UNITS)]
    assert len(table_rows(led.db_path, "units")) == WRITERS * BATCHES * UNITS
    assert led.journal_errors() == []
    incremental = {t: table_rows(led.db_path, t) for t in ("runs", "units", "journals")}
    led.rebuild()
    assert {t: table_rows(led.db_path, t) for t in ("runs", "units", "journals")} == incremental
