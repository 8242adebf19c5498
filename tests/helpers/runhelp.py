"""Helpers shared by the run tests: start a headless run in-process or as a real process, read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.support import ROOT


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from app.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def spawn_run(exp: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "app", "--run", str(exp), *extra], cwd=ROOT, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ledger_runs(ledger_dir: Path) -> list[dict]:
    from ledger import Ledger

    return Ledger(ledger_dir).list_runs()


def journal_records(ledger_dir: Path) -> list[dict]:
    out = []
    for path in sorted((ledger_dir / "journal").glob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out
