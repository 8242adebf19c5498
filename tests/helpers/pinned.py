"""What the snapshot tests pin: the clock, the round trip a probe reads, and for screens 3–5 a ledger with nothing left
to chance: forged journals with fixed ids and times (one run still running: it names this test process, so the ledger
sees it alive), and a live feed with fixed lines."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from app.cluster.health import Prober
from tests.helpers.ledgerkit import forge_journal, make_header

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class PinnedRoundTrip(Prober):
    async def probe(self, url: str):
        health = await super().probe(url)
        return dataclasses.replace(health, rtt_ms=3.0) if health.rtt_ms is not None else health


SCHEMA = {"type": "object", "properties": {
    "response": {"enum": ["(1) Likely", "(2) Unlikely", "(3) Unable to say"], "type": "string"},
    "explanation": {"type": "string", "maxLength": 200}}, "required": ["response", "explanation"]}
CHOICES = SCHEMA["properties"]["response"]["enum"]
RUNNING = "01KB1Q8W4E7MJ2ZC9XN5RT3HGD"


def _units(n: int, start: int = 0) -> list[dict]:
    return [{"id": str(i), "outcome": "valid" if i % 9 else "invalid", "answer": {"response": CHOICES[i % 3]},
             "attempts": 1 if i % 9 else 2, "latency_ms": 180.0 + i % 40, "tokens_in": 420 + i % 50,
             "tokens_out": 31, "truncated": i % 50 == 7, "error": None if i % 9 else "schema", "host": "gpu-a"}
            for i in range(start, start + n)]


def _counts(done: int, total: int) -> dict:
    invalid = len([i for i in range(done) if i % 9 == 0])
    return {"total": total, "done": done, "valid": done - invalid, "invalid": invalid, "retried": invalid,
            "empty": 0, "truncated": len([i for i in range(done) if i % 50 == 7]), "errors": 0,
            "tokens_in": done * 440, "tokens_out": done * 31}


def _run(ledger: Path, run_id: str, started: str, ended: str | None, status: str | None, done: int, total: int,
         **header) -> None:
    h = make_header(experiment="pna-v1", description="pneumonia, prompt v1", model="llama3:latest",
                    answer_schema=SCHEMA, total=total, started_at=started, slurm={}, **header)
    records = [(started, {"type": "header", "header": h}),
               (started, {"type": "batch", "units": _units(done), "counts": _counts(done, total)})]
    if status is not None:
        records.append((ended, {"type": "close", "status": status, "counts": _counts(done, total),
                                "last_error": "SIGTERM" if status == "interrupted" else None}))
    forge_journal(ledger, run_id, records)


def pinned_ledger(ledger: Path) -> None:
    other = {"hostname": "login1", "pid": 4242, "pid_start": 1, "user": "researcher"}
    _run(ledger, "01KB3F2V9A6HQ1WX8ME4ND7KPS", "2026-11-30T09:00:00.000Z", "2026-11-30T09:12:30.000Z", "completed",
         400, 400, **other)
    _run(ledger, "01KB3K7T0C5RB9YJ2LG6QW8FVA", "2026-11-30T10:00:00.000Z", "2026-11-30T10:04:10.000Z",
         "interrupted", 150, 400, model_digest="sha256:" + "12" * 32, **other)
    # still running: this process, on this host, so the ledger's pid check finds it alive
    _run(ledger, RUNNING, "2026-11-30T08:00:00.000Z", None, None, 100, 400,
         pid=os.getpid(), user="researcher")
    feed = ledger / "live" / f"{RUNNING}.jsonl"
    feed.parent.mkdir(parents=True, exist_ok=True)
    t0 = 1796112000.0  # 2026-11-30 08:00:00 UTC
    lines = [{"type": "feed", "provisional": True, "v": 1, "run": RUNNING, "journal": f"journal/{RUNNING}.jsonl",
              "experiment": "pna-v1", "total": 400, "model": "llama3:latest", "t": t0}]
    for second in range(1, 7):
        for u in _units(20, (second - 1) * 20):
            lines.append({"type": "unit", **u, "t": t0 + second - 0.5})
        lines.append({"type": "progress", "counts": _counts(second * 20, 400), "in_flight": 8,
                      "elapsed_s": float(second), "rate": 20.0, "t": t0 + second})
    feed.write_text("".join(json.dumps(x) + "\n" for x in lines))
