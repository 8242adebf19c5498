from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger import Journal, Ledger
from ledger.procinfo import pid_start_time
from ledger.report.terminal import format_runs_table, runs_to_json
from ledger.status import STALE_AFTER_S
from tests.helpers.ledgerkit import counts_for, forge_journal, make_header, make_units

FORK = mp.get_context("fork")


def _writer(ledger_dir: str, ready: FORK.Event) -> None:  # type: ignore[name-defined]
    pid = os.getpid()
    journal = Journal.create(Path(ledger_dir), make_header(pid=pid, pid_start=pid_start_time(pid)))
    journal.append_units(make_units(0, 10))
    journal.checkpoint(counts_for(10, 100))
    ready.set()
    signal.pause()


@pytest.mark.slow
def test_killed_writer_is_crashed_live_one_is_running(tmp_path: Path) -> None:
    ready = FORK.Event()
    proc = FORK.Process(target=_writer, args=(str(tmp_path), ready))
    proc.start()
    try:
        assert ready.wait(10)
        led = Ledger(tmp_path)
        (run,) = led.list_runs()
        assert run["status"] == "running" and run["pid"] == proc.pid
        assert [r["run_id"] for r in led.list_runs(status="running")] == [run["run_id"]]
        assert led.list_runs(status="crashed") == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        (run,) = led.list_runs()
        assert run["status"] == "crashed"
        assert run["duration_s"] is not None
        assert [r["run_id"] for r in led.list_runs(status="crashed")] == [run["run_id"]]
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def test_same_host_pid_reused_is_crashed(tmp_path: Path) -> None:
    # Our own pid is alive, but with another start time it is another process.
    Journal.create(tmp_path, make_header(pid=os.getpid(), pid_start=1))
    Journal.create(tmp_path, make_header(pid=os.getpid(), pid_start=None, experiment="no-start-time"))
    statuses = {r["experiment"]: r["status"] for r in Ledger(tmp_path).list_runs()}
    assert statuses == {"smoke": "crashed", "no-start-time": "running"}


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def test_other_host_judged_by_age_of_last_record(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(seconds=STALE_AFTER_S + 60), now - timedelta(seconds=30)
    header = make_header(hostname="node-elsewhere-17", pid=1)
    for run_id, last in (("01AAAAAAAAAAAAAAAAAAAAAAAA", old), ("01BBBBBBBBBBBBBBBBBBBBBBBB", recent)):
        forge_journal(
            tmp_path,
            run_id,
            [
                (_iso(now - timedelta(hours=2)), {"type": "header", "header": header}),
                (_iso(last), {"type": "checkpoint", "counts": counts_for(5, 100)}),
            ],
        )
    closed = forge_journal(
        tmp_path,
        "01CCCCCCCCCCCCCCCCCCCCCCCC",
        [
            (_iso(now - timedelta(hours=3)), {"type": "header", "header": header}),
            (_iso(now - timedelta(hours=2)), {"type": "close", "status": "completed", "counts": counts_for(5, 5)}),
        ],
    )
    runs = {r["run_id"]: r for r in Ledger(tmp_path).list_runs()}
    assert runs["01AAAAAAAAAAAAAAAAAAAAAAAA"]["status"] == "crashed"
    assert runs["01BBBBBBBBBBBBBBBBBBBBBBBB"]["status"] == "running"
    assert runs[closed.stem]["status"] == "completed"
    # Never stored: the index keeps the recorded status only.
    run = Ledger(tmp_path, auto_sync=False).get_run("01AAAAAAAAAAAAAAAAAAAAAAAA")
    assert run["recorded_status"] == "running" and run["status"] == "crashed"


def test_list_filters_order_and_formatting(tmp_path: Path) -> None:
    for i, (exp, status) in enumerate([("a", "completed"), ("b", "failed"), ("a", "interrupted")]):
        journal = Journal.create(tmp_path, make_header(experiment=exp, started_at=f"2024-05-0{i + 1}T10:00:00.000Z"))
        journal.append_units(make_units(0, 4))
        journal.close(status, counts_for(4, 4), last_error="boom" if status == "failed" else None)
    led = Ledger(tmp_path)
    runs = led.list_runs()
    assert [r["status"] for r in runs] == ["interrupted", "failed", "completed"]  # newest first
    assert [r["status"] for r in led.list_runs(experiment="a")] == ["interrupted", "completed"]
    assert [r["last_error"] for r in led.list_runs(status="failed")] == ["boom"]
    assert len(led.list_runs(limit=2)) == 2
    assert set(runs[0]) >= {"run_id", "experiment", "model", "model_digest", "status", "counts", "started_at",
                            "ended_at", "duration_s", "last_error", "hostname", "pid"}  # fmt: skip
    table = format_runs_table(runs).splitlines()
    assert table[0].split() == ["id", "experiment", "model", "status", "done/total", "valid", "invalid", "empty",
                                "truncated", "errors", "started", "duration"]  # fmt: skip
    assert len(table) == 4 and "4/4" in table[1] and "2024-05-03 10:00Z" in table[1]
    assert len({line.index("llama3.2:1b") for line in table[1:]}) == 1  # aligned
    assert json.loads(runs_to_json(runs)) == runs
    assert format_runs_table([]) == "no runs recorded"
