"""The report of one run, or of several runs of one experiment (shards of an array job, an interrupted run and its
resumption), as plain data. Renderers (markdown, html, tabular) only lay it out; the TUI can show the same dict.

Everything here comes from the index, which never holds note text or free-text answers. Host addresses lose any
user:password part (runs.safe_host) before they reach a report.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ..answers import AnswerField, answer_fields
from ..chain import head
from ..clock import parse_iso
from ..evals import evals_for
from ..runs import load_run_set, safe_host
from ..serverfacts import remote_text, server_rows
from .svg import nice_max
from .tripod import tripod_items

PERCENTILES = (50, 90, 95, 99)
HISTOGRAM_BINS = 24
TIMELINE_POINTS = 400  # per run: enough for a chart, bounded for a run of a million notes


def build_report(db: Any, run_ids: list[str]) -> dict[str, Any]:
    runs = load_run_set(db, run_ids)
    conn = db.conn
    first = runs[0]
    header = first.get("header") or {}
    labelled = [f for f in answer_fields(header.get("answer_schema")) if f.categorical]
    latest, latencies = _units(conn, runs, labelled)
    ledger_head = head(conn)
    report: dict[str, Any] = {
        "title": f"notes-tui run report: {first['experiment']}",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "ledger_head": None if ledger_head is None else {"hash": ledger_head.hash, "entries": ledger_head.entries},
        "experiment": {"name": first["experiment"], "description": first.get("description") or ""},
        "toml": _tomls(runs),
        "prompt": {
            "system": header.get("system_prompt"),
            "user_template": header.get("user_template"),
            "answer_schema": header.get("answer_schema"),
            "prompt_hash": first.get("prompt_hash"),
            "max_attempts": header.get("max_attempts"),
            "fallback": header.get("fallback"),
        },
        "model": _model(first, header),
        "options": first.get("options") or header.get("options") or {},
        "source": {**(header.get("source") or {}), "results_table": first.get("results_table")},
        "runs": [_run(conn, run) for run in runs],
        "flow": _flow(runs, latest),
        "throughput": _throughput(runs),
        "distributions": _distributions(labelled, latest),
        "latency_ms": _latency(latencies),
        "timeline": [_timeline(conn, run) for run in runs],
        "evals": evals_for(conn, [r["run_id"] for r in runs]),
    }
    remote = [r for r in runs if (r.get("header") or {}).get("allow_remote")]
    if remote:  # one run that may have sent notes outside the cluster is said of the whole report
        rows = [row for row in report["model"]["server"] if row[0] != "remote"]
        report["model"]["server"] = rows + [["remote", f"{remote_text(remote[0]['header'])} "
                                                       f"({len(remote)} of {len(runs)} runs)"]]
    report["tripod"] = tripod_items(report)
    return report


def _model(run: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    details = header.get("model_details") if isinstance(header.get("model_details"), dict) else {}
    return {
        "backend": run.get("backend"),
        "name": run.get("model"),
        "digest": run.get("model_digest"),
        "quantization": run.get("quantization") or details.get("quantization_level"),
        "parameter_size": run.get("parameter_size") or details.get("parameter_size"),
        "family": details.get("family"),
        "format": details.get("format"),
        "server_version": run.get("server_version"),
        "hosts": sorted({safe_host(h) for r in [run] for h in (r.get("hosts") or [])}),
        "server": [list(row) for row in server_rows(header) if row[0] != "server"],  # think, context, remote, …
    }


def _tomls(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct experiment file the runs were made from (an edit between runs that changed no prompt, e.g.
    batch_size, still shows)."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = run.get("toml_sha256") or ""
        entry = out.setdefault(key, {"sha256": run.get("toml_sha256"), "text": run.get("toml_text"),
                                     "path": (run.get("header") or {}).get("toml_path"), "runs": []})
        entry["runs"].append(run["run_id"])
    return list(out.values())


def _gpu_hours(run: dict[str, Any]) -> float | None:
    """Run time x GPUs of the server jobs it used, where the run recorded them (`server_jobs`: [{"gpus": n}, …])."""
    jobs = (run.get("header") or {}).get("server_jobs")
    if not isinstance(jobs, list) or not jobs or run.get("duration_s") is None:
        return None
    gpus = sum(j.get("gpus") or 0 for j in jobs if isinstance(j, dict) and isinstance(j.get("gpus"), (int, float)))
    return round(gpus * run["duration_s"] / 3600, 3) if gpus else None


def _run(conn: Any, run: dict[str, Any]) -> dict[str, Any]:
    header = run.get("header") or {}
    counts = run["counts"]
    duration = run.get("duration_s")
    seal = conn.execute("select seq, head from chain where kind = 'run' and id = ?", (run["run_id"],)).fetchone()
    return {
        "run_id": run["run_id"],
        "status": run["status"],
        "user": run.get("user"),
        "hostname": run.get("hostname"),
        "slurm": {k: v for k, v in (header.get("slurm") or {}).items() if v},
        "shard": run.get("shard"),
        "started_at": run.get("started_at"),
        "ended_at": run.get("ended_at"),
        "duration_s": duration,
        "gpu_hours": _gpu_hours(run),
        "counts": counts,
        "notes_per_s": round(counts["done"] / duration, 3) if duration and counts.get("done") else None,
        "tool_version": run.get("tool_version"),
        "concurrency_per_host": header.get("concurrency_per_host"),
        "toml_sha256": run.get("toml_sha256"),
        "last_error": run.get("last_error"),
        "journal_error": run.get("journal_error"),
        "sealed": None if seal is None else {"entry": seal[0] + 1, "journal_head": seal[1]},
    }


# a unit's row in `latest`: (outcome, attempts, truncated, latency_ms, raw value of each labelled field...)
OUTCOME, ATTEMPTS, TRUNCATED, FIRST_FIELD = 0, 1, 2, 4


def _units(conn: Any, runs: list[dict[str, Any]], fields: list[AnswerField]) -> tuple[dict[str, tuple], list[float]]:
    """The latest outcome of every unit across the runs (a later run's answer replaces an earlier one, as it does in
    the results table) and the latency of every request-bearing unit row (each one cost a model call)."""
    latest: dict[str, tuple] = {}
    latencies: list[float] = []
    labels = "".join(", json_extract(answer, ?)" for _ in fields)
    sql = f"select unit_id, outcome, attempts, truncated, latency_ms{labels} from units where run_id = ?"
    for run in runs:
        rows = conn.execute(sql, [f.path() for f in fields] + [run["run_id"]]).fetchall()
        latest.update((row[0], row[1:]) for row in rows)
        latencies += [row[4] for row in rows if row[1] in ("valid", "invalid") and row[4] is not None]
    return latest, latencies


def _flow(runs: list[dict[str, Any]], latest: dict[str, tuple]) -> dict[str, Any]:
    """Where every unit ended, counted once (its latest outcome), next to the sum of what the runs did."""
    outcomes = {"valid": 0, "invalid": 0, "empty": 0, "error": 0}
    outcomes.update(Counter(u[OUTCOME] for u in latest.values()))
    summed = {key: sum((r["counts"].get(key) or 0) for r in runs)
              for key in ("total", "done", "valid", "invalid", "retried", "empty", "truncated", "errors",
                          "tokens_in", "tokens_out")}
    return {
        "to_do_first_run": runs[0]["counts"].get("total"),
        "units": len(latest),
        "answered": outcomes["valid"] + outcomes["invalid"],
        **outcomes,
        "retried": sum(1 for u in latest.values() if (u[ATTEMPTS] or 0) > 1),
        "truncated": sum(1 for u in latest.values() if u[TRUNCATED]),
        "runs_sum": summed,
    }


def _throughput(runs: list[dict[str, Any]]) -> dict[str, Any]:
    starts = [parse_iso(r.get("started_at")) for r in runs]
    ends = [parse_iso(r.get("ended_at") or r.get("last_seen_at")) for r in runs]
    done = sum(r["counts"].get("done") or 0 for r in runs)
    busy = sum(r.get("duration_s") or 0 for r in runs)
    span = (max(e for e in ends if e) - min(s for s in starts if s)).total_seconds() if any(ends) and any(starts) else None
    return {
        "done": done,
        "run_seconds": round(busy, 3),
        "wall_seconds": None if span is None else round(span, 3),
        "notes_per_s": round(done / busy, 3) if busy else None,
        "notes_per_s_wall": round(done / span, 3) if span else None,
    }


def _distributions(fields: list[AnswerField], latest: dict[str, tuple]) -> list[dict[str, Any]]:
    """For each choice and bool field: the labels of the valid answers, in declared order, and how many units had
    no label (invalid: the fallback was written; empty or error: nothing was asked or written)."""
    out = []
    outcomes = Counter(u[OUTCOME] for u in latest.values())
    for k, f in enumerate(fields, start=FIRST_FIELD):
        found = Counter(f.value(u[k]) for u in latest.values() if u[OUTCOME] == "valid" and u[k] is not None)
        counts: dict[Any, int] = {label: found.pop(label, 0) for label in f.labels}
        counts.update(found)  # values outside the declared ones cannot pass validation, but never hide them
        without = {key: outcomes.get(key, 0) for key in ("invalid", "empty", "error")}
        out.append({"field": f.name, "kind": f.kind, "labels": [{"label": lab, "n": n} for lab, n in counts.items()],
                    "without_label": without})
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _latency(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    values.sort()
    top = values[-1]
    width = nice_max(top) / HISTOGRAM_BINS  # bins of a round width, so the axis ends on a round number
    bins = [0] * HISTOGRAM_BINS
    for v in values:
        bins[min(HISTOGRAM_BINS - 1, int(v / width))] += 1
    out: dict[str, Any] = {"n": len(values), "mean": round(sum(values) / len(values), 3), "max": round(top, 3)}
    out.update({f"p{q}": round(percentile(values, q), 3) for q in PERCENTILES})
    out["histogram"] = [{"from": round(i * width, 3), "to": round((i + 1) * width, 3), "n": n} for i, n in enumerate(bins)]
    return out


def _timeline(conn: Any, run: dict[str, Any]) -> dict[str, Any]:
    """Units done over time since the run's start: the batch records (units committed) and the checkpoints every
    few seconds (units answered), whichever says more at each moment."""
    start = parse_iso(run.get("started_at"))
    rows = conn.execute("select t, units, done from timeline where run_id = ? order by seq", (run["run_id"],)).fetchall()
    points: list[tuple[float, int]] = [(0.0, 0)] if rows else []
    committed = done = 0
    for t, units, checkpoint in rows:
        at = parse_iso(t)
        committed += units or 0
        done = max(done, committed, checkpoint or 0)
        if start is not None and at is not None:
            points.append((round(max(0.0, (at - start).total_seconds()), 3), done))
    if len(points) > TIMELINE_POINTS:
        step = len(points) / TIMELINE_POINTS
        points = [points[int(i * step)] for i in range(TIMELINE_POINTS - 1)] + [points[-1]]
    return {"run_id": run["run_id"], "started_at": run.get("started_at"), "points": points}
