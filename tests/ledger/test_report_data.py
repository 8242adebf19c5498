"""Report figures that real runs do not vary enough to check: GPU-hours, percentiles, hosts with a password in them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ledger import Ledger
from ledger.report import render
from ledger.report.data import build_report
from ledger.show import run_details
from tests.helpers.ledgerkit import counts_for, forge_journal, make_header, make_units

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["no", "yes"], "type": "string"},
                                            "score": {"type": "integer"}}}


def forged(tmp_path, **header):
    units = make_units(0, 200)
    records = [("2024-05-01T10:00:00.000Z", {"type": "header", "header": make_header(answer_schema=SCHEMA, **header)})]
    for b in range(4):
        records.append((f"2024-05-01T10:{10 * (b + 1):02d}:00.000Z", {"type": "batch", "units": units[b * 50:(b + 1) * 50]}))
    records.append(("2024-05-01T11:00:00.000Z", {"type": "close", "status": "completed", "counts": counts_for(200, 200),
                                                 "last_error": None}))
    forge_journal(tmp_path, "01HZZZZZZZZZZZZZZZZZZZZZZZ", records)
    led = Ledger(tmp_path)
    return led, led.read(lambda db: build_report(db, ["01HZZZZZZZZZZZZZZZZZZZZZZZ"]), None), units


def test_figures_from_the_units(tmp_path):
    _, report, units = forged(tmp_path, server_jobs=[{"job_id": "77", "gpus": 2}, {"job_id": "78", "gpus": 1}])
    [run] = report["runs"]
    assert run["duration_s"] == 3600 and run["gpu_hours"] == pytest.approx(3.0)  # 1 h x 3 GPUs
    sent = [u["latency_ms"] for u in units if u["outcome"] in ("valid", "invalid")]
    lat = report["latency_ms"]
    for q in (50, 90, 95, 99):
        assert lat[f"p{q}"] == pytest.approx(np.percentile(sent, q), abs=1e-3)
    assert lat["n"] == len(sent) and lat["max"] == max(sent)
    [dist] = report["distributions"]
    want = {lab: sum(1 for u in units if u["outcome"] == "valid" and u["answer"]["label"] == lab) for lab in ("no", "yes")}
    assert {x["label"]: x["n"] for x in dist["labels"]} == want
    assert dist["without_label"] == {k: sum(1 for u in units if u["outcome"] == k) for k in ("invalid", "empty", "error")}
    assert report["timeline"][0]["points"] == [(0.0, 0), (600.0, 50), (1200.0, 100), (1800.0, 150), (2400.0, 200),
                                               (3600.0, 200)]
    assert report["tripod"][-1]["answered_by"] == "this report"  # 12, compute: GPU-hours are recorded
    assert "3.000" in render(report, "md")


def test_a_password_in_a_host_address_goes_nowhere(tmp_path):
    led, report, _ = forged(tmp_path, hosts=["http://alice:Secret-Pw-1@gpu1:11434"])
    assert report["model"]["hosts"] == ["http://gpu1:11434"]
    shown = led.read(lambda db: run_details(db, "01HZZZZZZZZZZZZZZZZZZZZZZZ"), None)
    everything = json.dumps(shown) + "".join(render(report, fmt) for fmt in ("md", "html", "csv", "json"))
    assert "Secret-Pw-1" not in everything and "gpu1:11434" in everything


def test_shards_and_server_jobs_as_the_slurm_runs_record_them(tmp_path):
    jobs = [{"job_id": "1230409", "cluster": "gpu", "url": "http://gpu1:11434", "node": "gpu-n57", "gpus": 1,
             "partition": "l40s"}]
    led, report, _ = forged(tmp_path, shard={"index": 2, "count": 4}, server_jobs=jobs)
    [run] = report["runs"]
    assert run["shard"] == "2/4" and run["gpu_hours"] == pytest.approx(1.0)
    assert "| 2/4 |" in render(report, "md")
