"""Per cell of a study: why its invalid answers failed (counted from its runs' units) and the GPU-hours its runs
used (run time x the GPUs of the server jobs each run recorded), in `ledger study` and its terminal text."""

from __future__ import annotations

from datetime import datetime

from ledger import Journal, Ledger
from ledger.report.terminal import format_study
from ledger.study import study_report

SCHEMA = {"type": "object", "properties": {"response": {"enum": ["yes", "no"]}}}


def _run(ledger_dir, cell: str, units: list[dict], server_jobs=None) -> None:
    header = {"experiment": f"s/{cell}", "model": cell.split("/")[0], "answer_schema": SCHEMA,
              "fallback": {"response": "no"},
              "study": {"name": "s", "cell": cell, "model": cell.split("/")[0], "prompt": "p", "repeat": 1, "seed": 1,
                        "index": 1 if cell.startswith("a") else 2, "cells": 2}}
    if server_jobs is not None:
        header["server_jobs"] = server_jobs
    journal = Journal.create(ledger_dir, header)
    journal.append_units(units)
    counts = {"total": len(units), "done": len(units),
              "valid": sum(u["outcome"] == "valid" for u in units), "invalid": sum(u["outcome"] == "invalid" for u in units)}
    journal.close("completed", counts)


def _units(n: int, invalid: dict[int, str]) -> list[dict]:
    return [{"id": str(i), "outcome": "invalid" if i in invalid else "valid", "error": invalid.get(i),
             "answer": None if i in invalid else {"response": "yes" if i % 2 else "no"}, "attempts": 1,
             "latency_ms": 10.0, "tokens_in": 5, "tokens_out": 2} for i in range(n)]


def test_each_cell_says_why_its_answers_were_invalid_and_what_gpu_time_it_used(tmp_path):
    _run(tmp_path, "a/p/r1", _units(10, {1: "schema", 2: "schema", 3: "thinking"}), server_jobs=[{"job_id": "7", "gpus": 2}])
    _run(tmp_path, "b/p/r1", _units(10, {}))
    led = Ledger(tmp_path)
    gold = {str(i): "yes" for i in range(10)}
    report = led.read(lambda db: study_report(db, "s", gold, {"column": "gold", "map": {}}, "response", reps=0), None)
    a, b = report["cells"]
    assert a["invalid_reasons"] == {"schema": 2, "thinking": 1} and list(a["invalid_reasons"]) == ["schema", "thinking"]
    assert b["invalid_reasons"] == {}
    run = led.list_runs(study="s", experiment="s/a/p/r1")[0]
    seconds = (datetime.fromisoformat(run["ended_at"].replace("Z", "+00:00"))
               - datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))).total_seconds()
    assert a["gpu_hours"] == round(2 * seconds / 3600, 3) and b["gpu_hours"] is None
    text = format_study(report | {"reference": {"kind": "gold", "labels": 10, "adjudicated": 0}}, 20)
    assert "invalid in a/p/r1: schema 2, thinking 1 — " in text
    assert f"GPU-hours: a/p/r1 {a['gpu_hours']:.2f}; {a['gpu_hours']:.2f} in all" in text


def test_a_study_whose_runs_recorded_no_gpus_says_so(tmp_path):
    _run(tmp_path, "a/p/r1", _units(4, {}))
    led = Ledger(tmp_path)
    report = led.read(lambda db: study_report(db, "s", {}, {"column": "gold", "map": {}}, "response", reps=0), None)
    text = format_study(report | {"reference": {"kind": "gold", "labels": 0, "adjudicated": 0}}, 20)
    assert "GPU-hours: not recorded (no run of the study recorded the GPUs of its server jobs)" in text
