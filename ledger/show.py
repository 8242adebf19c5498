"""`ledger show`: everything the ledger holds about one run, as plain data (see report.terminal.format_show)."""

from __future__ import annotations

from typing import Any

from .answers import answer_fields
from .evals import evals_including
from .runs import load_run, safe_host
from .serverfacts import server_rows


def run_details(db: Any, run_id: str) -> dict[str, Any] | None:
    run = load_run(db, run_id)
    if run is None:
        return None
    conn = db.conn
    run["hosts"] = [safe_host(h) for h in run.get("hosts") or []]
    header = run.get("header") or {}
    if isinstance(header.get("hosts"), list):
        header["hosts"] = [safe_host(h) for h in header["hosts"]]
    run["outcomes"] = dict(conn.execute(
        "select outcome, count(*) from units where run_id = ? group by outcome order by outcome", (run_id,)).fetchall())
    run["invalid_reasons"] = dict(conn.execute(
        "select coalesce(error, '?'), count(*) from units where run_id = ? and outcome = 'invalid' group by error "
        "order by count(*) desc", (run_id,)).fetchall())
    run["server"] = server_rows(header)
    labels = {}
    for f in answer_fields(header.get("answer_schema")):
        if not f.categorical:
            continue
        counts = dict(conn.execute(
            # +outcome: without it SQLite picks the index on outcome and reads every valid unit of the ledger
            "select json_extract(answer, ?) as v, count(*) from units where run_id = ? and +outcome = 'valid' "
            "and v is not null group by v", (f.path(), run_id)).fetchall())
        labels[f.name] = {str(f.value(k)).lower() if f.kind == "bool" else k: n for k, n in counts.items()}
    run["labels"] = labels
    seal = conn.execute("select seq, head, records from chain where kind = 'run' and id = ?", (run_id,)).fetchone()
    run["sealed"] = None if seal is None else {"entry": seal[0] + 1, "journal_head": seal[1], "records": seal[2]}
    run["evals"] = [{k: e.get(k) for k in ("eval_id", "created_at", "field", "runs", "accuracy", "kappa", "kappa_low",
                                           "kappa_high", "macro_f1", "with_gold", "without_gold")}
                    for e in evals_including(conn, run_id)]
    return run
