"""A ledger someone hands you (issue 20, point 6): a journal that is a link to /dev/zero or a FIFO is named, not read;
a ledger on a read-only mount verifies and lists; an index that is a directory is one line; `| head` ends quietly."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys

import pytest

from ledger import Journal
from tests.helpers.faultkit import small_tmpfs
from tests.helpers.support import ROOT

RUN = "01M8ZZZZZZZZZZZZZZZZZZZZZZ"


def cli(*args: str, limit_memory: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    def cap() -> None:
        if limit_memory:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))

    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap)


def a_ledger(where) -> None:
    Journal.create(where, {"experiment": "audited", "total": 0}).close("completed", {"done": 0, "total": 0})


def test_a_journal_that_is_a_link_to_dev_zero_is_named_not_read(tmp_path):
    a_ledger(tmp_path / "l")
    (tmp_path / "l" / "journal" / f"{RUN}.jsonl").symlink_to("/dev/zero")
    res = cli("ledger", "verify", "--ledger", str(tmp_path / "l"), limit_memory=1 << 30)  # 24 GB before the fix
    assert res.returncode == 1, res.stderr
    assert f"journal/{RUN}.jsonl is a symbolic link, not a journal" in res.stdout and "Traceback" not in res.stderr
    listed = cli("ledger", "list", "--json", "--ledger", str(tmp_path / "l"), limit_memory=1 << 30)
    assert listed.returncode == 0 and [r["experiment"] for r in json.loads(listed.stdout)] == ["audited"]


def test_a_journal_that_is_a_fifo_is_named_not_waited_for(tmp_path):
    a_ledger(tmp_path / "l")
    os.mkfifo(tmp_path / "l" / "journal" / f"{RUN}.jsonl")
    res = cli("ledger", "verify", "--ledger", str(tmp_path / "l"), timeout=30)  # forever before the fix
    assert res.returncode == 1 and f"journal/{RUN}.jsonl is not a regular file" in res.stdout
    assert cli("ledger", "list", "--ledger", str(tmp_path / "l"), timeout=30).returncode == 0


@pytest.mark.serial  # mounts a tmpfs
def test_a_ledger_on_a_read_only_mount_verifies_and_lists():
    with small_tmpfs("4m") as mount:
        copy = mount / "ledger"
        a_ledger(copy)
        assert cli("ledger", "list", "--ledger", str(copy)).returncode == 0  # the index, made while writable
        res = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only here: {res.stderr.strip()}")
        try:
            verified = cli("ledger", "verify", "--ledger", str(copy))
            assert verified.returncode == 0 and verified.stdout.startswith(f"ledger {copy}: OK"), verified.stderr
            assert "Traceback" not in verified.stderr and "cannot be written" in verified.stderr
            listed = cli("ledger", "list", "--json", "--ledger", str(copy))
            assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
            assert [r["experiment"] for r in json.loads(listed.stdout)] == ["audited"]
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)


def test_an_index_that_is_a_directory_is_one_line(tmp_path):
    a_ledger(tmp_path / "l")
    (tmp_path / "l" / "ledger.db").mkdir()
    for args in (("ledger", "list"), ("ledger", "verify"), ("ledger", "show", RUN[:6])):
        res = cli(*args, "--ledger", str(tmp_path / "l"))
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and "ledger.db is not a file" in lines[0], (args, res.stderr)


@pytest.mark.slow  # seconds of real time
def test_a_listing_cut_short_by_head_ends_quietly(tmp_path):
    for i in range(2000):  # more than a pipe holds (64 KB): head closes it while the listing is written
        Journal.create(tmp_path / "l", {"experiment": f"e{i}", "total": 0}).close("completed", {"done": 0, "total": 0})
    cli("ledger", "list", "--ledger", str(tmp_path / "l"))  # the index, once
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    done = subprocess.run(f"{shutil.which('python3') or sys.executable} -m app ledger list --ledger {tmp_path / 'l'} "
                          "| head -n 2", shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert len(done.stdout.splitlines()) == 2 and "Traceback" not in done.stderr and "Broken" not in done.stderr, \
        done.stderr
