from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import stat
import time
from pathlib import Path

import pytest

import ledger.lease as lease_mod
from ledger import Journal, Ledger
from ledger.lease import Lease, LeaseLost, read_snapshot
from ledger.procinfo import pid_start_time, this_host
from tests.helpers.ledgerkit import make_header, make_units

FORK = mp.get_context("fork")


def dead_pid() -> int:
    proc = FORK.Process(target=lambda: None)
    proc.start()
    proc.join()
    assert proc.pid is not None
    return proc.pid


def write_lease(path: Path, **info: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    content = {"host": this_host(), "pid": os.getpid(), "pid_start": None, "acquired": now, "heartbeat": now}
    content.update(info)
    path.write_text(json.dumps(content))


def test_lease_file_content_and_mode(tmp_path: Path) -> None:
    lease = Lease(tmp_path / "ledger.lease")
    assert lease.acquire()
    info = json.loads((tmp_path / "ledger.lease").read_text())
    assert info["host"] == this_host() and info["pid"] == os.getpid()
    assert info["pid_start"] == pid_start_time(os.getpid())
    assert {"acquired", "heartbeat"} <= set(info)
    assert stat.S_IMODE(os.stat(tmp_path / "ledger.lease").st_mode) == 0o600
    mtime = os.stat(tmp_path / "ledger.lease").st_mtime_ns
    time.sleep(0.02)
    lease.heartbeat()
    assert os.stat(tmp_path / "ledger.lease").st_mtime_ns > mtime
    assert json.loads((tmp_path / "ledger.lease").read_text())["heartbeat"] >= info["heartbeat"]
    assert not Lease(tmp_path / "ledger.lease").acquire(wait_s=0)  # held by a live process: us
    lease.release()
    assert not (tmp_path / "ledger.lease").exists()


@pytest.mark.parametrize(
    "info",
    [
        pytest.param({"pid": "dead"}, id="dead-pid"),
        pytest.param({"pid_start": 1}, id="pid-reused"),
        pytest.param({"host": "elsewhere", "heartbeat": time.time() - 3600}, id="old-heartbeat"),
    ],
)
def test_stale_lease_is_taken_over(tmp_path: Path, info: dict) -> None:
    if info.get("pid") == "dead":
        info = {"pid": dead_pid()}
    led = Ledger(tmp_path)
    write_lease(led.lease_path, **info)
    if info.get("host") == "elsewhere":
        os.utime(led.lease_path, (time.time() - 3600,) * 2)  # the file server saw no heartbeat either
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 3))
    assert led.sync(wait_s=2)
    assert not led.lease_path.exists()
    assert len(led.units(journal.run_id)) == 3
    assert not [p for p in tmp_path.iterdir() if ".stale." in p.name or p.name.endswith(".break")]


def test_fresh_lease_of_other_host_or_unwritten_lease_blocks(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    write_lease(led.lease_path, host="elsewhere", pid=1)
    assert not led.sync(wait_s=0.1)
    led.lease_path.write_bytes(b"")  # created, content not written yet: judged by mtime, which is fresh
    assert not led.sync(wait_s=0.1)
    os.utime(led.lease_path, (time.time() - 120,) * 2)
    assert led.sync(wait_s=0.1)


def _hold(lease_path: str, held: mp.synchronize.Event, go: mp.synchronize.Event) -> None:
    lease = Lease(Path(lease_path))
    assert lease.acquire(5)
    held.set()
    go.wait(30)
    lease.release()


@pytest.mark.slow
def test_live_holder_blocks_sync_then_readers_read_as_is(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    first = Journal.create(tmp_path, make_header())
    assert led.sync()
    held, go = FORK.Event(), FORK.Event()
    proc = FORK.Process(target=_hold, args=(str(led.lease_path), held, go))
    proc.start()
    try:
        assert held.wait(10)
        Journal.create(tmp_path, make_header())
        t0 = time.monotonic()
        assert led.sync(wait_s=0.2) is False
        assert 0.2 <= time.monotonic() - t0 < 2
        assert [r["run_id"] for r in led.list_runs()] == [first.run_id]  # the index as it is
    finally:
        go.set()
        proc.join(10)
    assert led.sync(wait_s=2)
    assert len(led.list_runs()) == 2


def test_release_and_check_only_touch_our_own_lease(tmp_path: Path) -> None:
    path = tmp_path / "ledger.lease"
    lease = Lease(path)
    assert lease.acquire()
    path.unlink()  # taken over behind our back: someone removed it and holds a new one
    write_lease(path, pid=os.getpid(), token="theirs")
    assert not lease.still_ours()
    with pytest.raises(LeaseLost):
        lease.check()
    lease.release()
    assert json.loads(path.read_text())["token"] == "theirs"


def test_lost_lease_rolls_the_import_back(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, make_header())
    journal.append_units(make_units(0, 3))
    led = Ledger(tmp_path, auto_sync=False)
    assert led.sync()
    journal.append_units(make_units(3, 3))
    lease = Lease(led.lease_path)
    assert lease.acquire()
    led.lease_path.unlink()
    write_lease(led.lease_path, token="theirs")
    with pytest.raises(LeaseLost):
        led._import_into(led.db_path, lease)
    lease.release()
    assert len(led.units(journal.run_id)) == 3


def test_breaker_puts_back_a_lease_it_did_not_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.lease"
    write_lease(path, pid=dead_pid())
    judged = read_snapshot(path)
    assert judged is not None and lease_mod.is_stale(judged)
    real_rename = os.rename

    def rename_after_a_takeover(src: object, dst: object) -> None:
        # Just before our rename, another process completes a whole take-over and holds a fresh lease.
        if Path(str(src)) == path:
            os.unlink(path)
            write_lease(path, token="fresh")
        real_rename(src, dst)

    monkeypatch.setattr(lease_mod.os, "rename", rename_after_a_takeover)
    assert lease_mod.remove_if_unchanged(path, judged) is False
    monkeypatch.undo()
    assert json.loads(path.read_text())["token"] == "fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.lease"]


def _contend(lease_path: str, inside: str, log: str, corpse: int, rounds: int, start: mp.synchronize.Barrier) -> None:
    for i in range(rounds):
        start.wait(60)  # every round starts with all processes finding the same stale lease at once
        lease = Lease(Path(lease_path))
        if not lease.acquire(wait_s=60):
            _log(log, f"TIMEOUT {os.getpid()}\n")
            continue
        try:
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            _log(log, f"VIOLATION {os.getpid()}\n")
            lease.release()
            continue
        _log(log, f"in {os.getpid()} {i}\n")
        time.sleep(random.uniform(0.001, 0.005))
        os.close(fd)
        os.unlink(inside)
        # Die while holding it: make the lease a dead process's, and walk away without releasing.
        lease._info.update(pid=corpse, pid_start=None)
        lease._rewrite()
        os.close(lease._fd)  # type: ignore[arg-type]
        lease._fd = None


def _log(path: str, line: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    os.write(fd, line.encode())
    os.close(fd)


@pytest.mark.slow
def test_concurrent_takeover_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    procs_n, rounds = 8, 20
    lease_path, inside, log = tmp_path / "ledger.lease", tmp_path / "inside", tmp_path / "log"
    corpse = dead_pid()
    write_lease(lease_path, pid=corpse)  # everybody starts by finding the same stale lease
    start = FORK.Barrier(procs_n)
    procs = [
        FORK.Process(target=_contend, args=(str(lease_path), str(inside), str(log), corpse, rounds, start)) for _ in range(procs_n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    lines = log.read_text().splitlines()
    assert not [line for line in lines if not line.startswith("in ")]
    assert len(lines) == procs_n * rounds
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("log", "ledger.lease")]
    assert leftovers == []
