"""`notes-tui server history` as a user runs it, with a stand-in `sacct` on PATH: the table and its totals, --json,
--since checked, and exit 2 with one line where sacct cannot answer (not installed, accounting off, slurmdbd
down) — a site's setup, not a failure of the command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cluster.history import DELIMITER, FIELDS
from tests.helpers.support import ROOT

ROWS = [
    dict(JobID="501", State="CANCELLED by 1000", Submit="2026-12-05T08:00:00", Start="2026-12-05T08:00:02",
         End="2026-12-05T10:00:02", ElapsedRaw="7200", AllocTRES="billing=16,cpu=16,gres/gpu:l40s=1,gres/gpu=1,"
         "mem=125G,node=1", Partition="l40s", NodeList="gpu-n57", JobName="ollama-l40s", Comment=""),
    dict(JobID="502", State="TIMEOUT", Submit="2026-12-07T08:00:00", Start="2026-12-07T08:00:01",
         End="2026-12-07T08:30:01", ElapsedRaw="1800", AllocTRES="cpu=16,gres/gpu=2,mem=125G,node=1",
         Partition="a100", NodeList="gpu-n12", JobName="llmserver-vllm", Comment="openai:gpu-n12:40001"),
    dict(JobID="503", State="COMPLETED", Submit="2026-12-07T09:00:00", Start="2026-12-07T09:00:01",
         End="2026-12-07T09:05:01", ElapsedRaw="300", AllocTRES="cpu=1,mem=1G,node=1", Partition="smp",
         NodeList="smp-n1", JobName="notes-pna", Comment=""),  # a run job: not listed
]


def fake_sacct(folder: Path, stdout: str = "", stderr: str = "", code: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "out.txt").write_text(stdout)
    (folder / "err.txt").write_text(stderr)
    script = folder / "sacct"
    cat = shutil.which("cat")  # the PATH of the command holds this folder alone
    script.write_text(f"#!/bin/sh\necho \"$@\" > {folder / 'argv.txt'}\n{cat} {folder / 'out.txt'}\n"
                      f"{cat} {folder / 'err.txt'} >&2\nexit {code}\n")
    script.chmod(0o755)
    return folder


def history(path: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path)
    env.pop("CI", None)
    return subprocess.run([sys.executable, "-m", "app", "server", "history", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_table_the_totals_and_the_json(tmp_path, private_ledger):
    from ledger.serverjobs import write_record

    write_record(private_ledger, {"job_id": "501", "cluster": None, "gpus": 1, "busy_s": 1800, "idle_s": 5400,
                                  "gpu_hours": {"used": 0.5, "idle": 1.5, "starting": 0.0, "held": 2.0}})
    bin_dir = fake_sacct(tmp_path / "bin", "".join(DELIMITER.join(r[f] for f in FIELDS) + "\n" for r in ROWS))
    done = history(str(bin_dir), "--since", "2026-12-01")
    assert done.returncode == 0, done.stderr
    argv = (bin_dir / "argv.txt").read_text().split()
    assert argv[:1] == ["--user"] and "-X" in argv and "-P" in argv and argv[-2:] == ["-S", "2026-12-01T00:00:00"]
    lines = done.stdout.splitlines()
    assert lines[0] == "server jobs since 2026-12-01 00:00 (sacct; the cluster's local time): 2, 3.00 GPU-hours"
    row = next(x for x in lines if x.startswith("501 ")).split()
    assert row[1:3] == ["ollama-l40s", "CANCELLED"] and row[-6:] == ["2h00m", "1", "2.00", "0.50", "1.50", "gpu-n57"]
    row = next(x for x in lines if x.startswith("502 ")).split()
    assert row[1:3] == ["llmserver-vllm", "TIMEOUT"] and row[-6:] == ["30m00s", "2", "1.00", "-", "-", "gpu-n12"]
    assert not any(x.startswith("503 ") for x in lines)
    assert any(x.startswith("2026-12-05 Sat") and x.split()[2:] == ["1", "2h00m", "2.00", "0.50", "1.50", "1", "of",
                                                                     "1"] for x in lines)
    assert any(x.startswith("2026-W49 (Nov 30 – Dec 06)") for x in lines)
    assert any(x.startswith("2026-W50 (Dec 07 – Dec 13)") for x in lines)

    doc = json.loads(history(str(bin_dir), "--json").stdout)
    assert [j["job_id"] for j in doc["jobs"]] == ["501", "502"] and doc["total"]["gpu_hours"] == 3.0
    assert doc["jobs"][0]["ledger"]["gpu_hours"]["idle"] == 1.5 and doc["jobs"][1]["kind"] == "openai-compatible"


@pytest.mark.parametrize("stderr, words", [
    ("Slurm accounting storage is disabled\n", "this Slurm keeps no job accounting"),
    ("sacct: error: Problem talking to the database: Connection refused\n",
     "sacct cannot reach Slurm's accounting database"),
])
def test_no_accounting_is_one_line_and_exit_2(tmp_path, stderr, words):
    bin_dir = fake_sacct(tmp_path / "bin", stderr=stderr, code=1)
    for extra in ((), ("--json",)):
        done = history(str(bin_dir), *extra)
        assert done.returncode == 2 and done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert line.startswith("notes-tui: error: ") and words in line


def test_no_sacct_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = history(str(empty))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("notes-tui: error: sacct (Slurm's job accounting) is not installed here — run "
                                   "notes-tui server history on a login node of the cluster")


def test_a_since_that_is_no_time_is_refused_before_sacct_runs(tmp_path):
    bin_dir = fake_sacct(tmp_path / "bin")
    done = history(str(bin_dir), "--since", "yesterday-ish")
    assert done.returncode == 2 and "write 7d, 2w" in done.stderr and not (bin_dir / "argv.txt").exists()
