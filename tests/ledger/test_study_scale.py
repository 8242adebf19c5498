"""`ledger study` reads every cell's labels in bulk (a byte a note and cell) and bootstraps over counts, so that 12
cells x 100,000 notes take about a second (bench/study_scale.py). These tests hold it to what it replaced: the same
figures as the note-by-note computation below (the one study.py had, over latest_labels and per-note dicts) on a
ledger written through the real journal with every awkward case: a resumed cell, notes some cells never answered,
invalid answers with and without a fallback, empty answers and errors, a valid answer without the field and one
outside the schema, numeric and bool fields, gold for a note no cell answered, ids that sort as numbers and as text,
and an id holding the separator of the bulk read; and a second study whose cells differ in schema. Every figure is
checked both from the rows the importer stores for closed runs (study_scans, study_labels: m005) and from the scan of
the units those rows replace, which must give exactly the same report."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3
from collections import Counter
from itertools import combinations

import pytest

import ledger.study as study
from ledger import Journal, Ledger
from ledger import stability as stab
from ledger.agreement import accuracy, averages, class_scores, cohen_kappa, confusion
from ledger.evaluate import latest_labels
from ledger.stability import bootstrap, fleiss_kappa, krippendorff_alpha, mcnemar, unit_counts, wilson
from ledger.study import _joint, load_cells, scorable_field, study_notes, study_report

CHOICES = ["yes", "no", "maybe"]
SCHEMA = {"type": "object", "properties": {"response": {"enum": CHOICES}, "flag": {"type": "boolean"},
                                           "score": {"enum": [1, 2, 3]}}}
# (model, prompt, repeat, fallback of response); A/p/r1 runs twice (resumed)
CELLS = [("A", "p", 1, "maybe"), ("A", "p", 2, "maybe"), ("A", "p", 3, None), ("A", "q", 1, "maybe"),
         ("B", "p", 1, "no"), ("B", "p", 2, "maybe"), ("B", "q", 1, "maybe"),  # B/q/r1 recorded no unit
         ("B", "r", 1, "no")]  # B/r/r1: mostly errors
IDS = [str(i) for i in range(60)] + ["007", "x-1", "note b"]
ODD_ID = "a\x1fb"  # holds the separator of the bulk read: that run is read row by row
REPS = 2000
# study "m": cells whose schemas differ from the first cell's (what the study's field is) and from each other
PROPS = SCHEMA["properties"]
MIXED = [
    ("A", "p", 1, SCHEMA),
    ("A", "p", 2, {"properties": {"response": {"enum": ["maybe", "yes", "no", "perhaps"]}, "flag": PROPS["flag"],
                                  "score": {"type": "boolean"}}}),  # other order, a label more; score as a bool
    ("A", "p", 3, {"properties": {"response": {"enum": ["yes", "no"]}, "flag": {"enum": ["yes", "no"]},
                                  "score": {"enum": ["1", "2", "3"]}}}),  # a label fewer; strings for bools, ints
    ("B", "p", 1, {"properties": {"response": {"type": "string"}, "flag": {"enum": [True, False]},
                                  "score": PROPS["score"]}}),  # not categorical here: scanned
    ("B", "p", 2, SCHEMA),  # resumed: the second run with the schema of A/p/r2
]


def _answer(rng: random.Random, truth: str) -> dict:
    label = truth if rng.random() < 0.7 else rng.choice(CHOICES)
    return {"response": label, "flag": label == "yes" if rng.random() < 0.8 else rng.random() < 0.5,
            "score": CHOICES.index(label) + 1}


def _unit(rng: random.Random, uid: str, truth: str) -> dict:
    # every unit took time and tokens, errors and empty answers too (what the cells' means leave out); a few say none
    usage = {"latency_ms": None if rng.random() < 0.05 else 100 + rng.random() * 50,
             "tokens_in": None if rng.random() < 0.05 else 900 + int(rng.random() * 100), "tokens_out": 20 + uid.count("1")}
    x = rng.random()
    if x < 0.06:
        return {"id": uid, "outcome": "invalid", "answer": None, **usage}
    if x < 0.09:
        return {"id": uid, "outcome": "empty", "answer": None, **usage}
    if x < 0.11:
        return {"id": uid, "outcome": "error", "answer": None, "error": "timeout", **usage}
    answer = _answer(rng, truth)
    if x < 0.13:
        answer.pop("response")  # valid, but without the field: empty for it (an answer for latency and tokens)
    elif x < 0.15:
        answer["response"] = "perhaps"  # outside the schema: read again from its row
        answer["score"] = 2.0
    return {"id": uid, "outcome": "valid", "answer": answer, **usage}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    rng = random.Random(5)
    truth = {u: rng.choice(CHOICES) for u in IDS + [ODD_ID, ""]}
    ledger_dir = tmp_path_factory.mktemp("study-scale") / "ledger"
    second = 0

    def run(cell: tuple, ids: list[str], errors: float = 0.0, name: str = "s", schema: dict = SCHEMA,
            index: int | None = None) -> None:
        nonlocal second
        model, prompt, repeat, fallback = cell
        second += 1
        header = {"experiment": f"{name}/{model}/{prompt}/r{repeat}", "model": model, "answer_schema": schema,
                  "fallback": {"response": fallback, "score": 3} if fallback else {},
                  "started_at": f"2026-01-01T00:00:{second:02d}.000Z",
                  "study": {"name": name, "cell": f"{model}/{prompt}/r{repeat}", "model": model, "prompt": prompt,
                            "repeat": repeat, "seed": repeat, "index": index or CELLS.index(cell) + 1,
                            "cells": len(CELLS)}}
        journal = Journal.create(ledger_dir, header)
        units = [_unit(rng, u, truth[u]) for u in ids]
        for k, outcome in enumerate(("invalid", "empty", "error") if units else ()):  # one of each in every run
            units[(second * 7 + k * 5) % len(units)].update(outcome=outcome, answer=None)
        for u in units:
            if rng.random() < errors:
                u.update(outcome="error", answer=None)
        for start in range(0, len(units), 7):
            journal.append_units(units[start: start + 7])
        journal.close("completed", {"total": len(units), "done": len(units)})

    # A/p/r1, resumed: the first run answered 0..39, the second 30..62 again (its answers count for 30..39)
    run(CELLS[0], IDS[:40])
    run(CELLS[0], IDS[30:])
    run(CELLS[1], [u for u in IDS if u not in ("3", "4", "5", "note b")])  # never answered these
    run(CELLS[2], IDS)
    run(CELLS[3], IDS[::-1])  # the same notes in another order: placed by id, not by position
    run(CELLS[4], IDS)
    run(CELLS[5], IDS + [ODD_ID, ""])  # "": an id can be empty
    run(CELLS[6], [])
    run(CELLS[7], IDS, errors=0.6)
    for index, (model, prompt, repeat, schema) in enumerate(MIXED, start=1):
        cell = (model, prompt, repeat, "maybe" if index % 2 else None)
        if index == len(MIXED):
            run(cell, IDS[:20], name="m", index=index)  # resumed: the earlier run in the study's schema
            schema = MIXED[1][3]
        run(cell, IDS[index:], name="m", schema=schema, index=index)
    led = Ledger(ledger_dir)
    led.sync()
    gold = {u: truth[u] for u in IDS[5:] + [ODD_ID]}
    gold["gold-only"] = "no"  # a note no cell answered
    gold.pop("12")
    gold.pop("x-1")
    return led, gold


def _gold_for(gold: dict, field: str) -> dict:
    if field == "response":
        return gold
    if field == "flag":
        return {u: v == "yes" for u, v in gold.items()}
    return {u: CHOICES.index(v) + 1 for u, v in gold.items()}


# --- the note-by-note computation study.py did before (its figures are what the bulk path must give) ------------------

def _order(uid: str) -> tuple:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)


def reference(db, name: str, gold: dict, field: str, reps: int, seed: int, offset: int = 0, limit: int | None = None,
              different_only: bool = False) -> dict:
    cells = load_cells(db, name)
    spec = scorable_field(cells, field)
    preferred = list(spec.labels)
    labels, rows = {}, []
    for cell in cells:
        fallback = (cell["header"].get("fallback") or {}).get(spec.name)
        run_ids = [r["run_id"] for r in cell["runs"]]
        cell_map, outcomes = latest_labels(db, run_ids, spec, fallback)
        labels[cell["cell"]] = cell_map
        pairs = [(gold[u], v) for u, v in cell_map.items() if u in gold]
        c = confusion(pairs, preferred)
        kappa = cohen_kappa(c)
        marks = ",".join("?" * len(run_ids))
        usage = next(iter(db.query(f"select avg(latency_ms) as latency_ms, avg(tokens_in) as tokens_in, avg(tokens_out) "
                                   f"as tokens_out from units where run_id in ({marks}) and outcome in ('valid', 'invalid')",
                                   run_ids)))
        answered = outcomes["valid"] + outcomes["invalid"]

        def f1(sample):
            cs = confusion(sample, preferred)
            return averages(class_scores(cs))["macro"]["f1"] if cs.n else None

        f1_low, f1_high = bootstrap(f1, pairs, reps, seed)
        rows.append({
            "cell": cell["cell"], "run_id": cell["run_id"], "runs": run_ids, "n": c.n, "answered": answered,
            "labels_answered": len(set(cell_map.values())), "valid": outcomes["valid"], "invalid": outcomes["invalid"],
            "empty": outcomes["empty"], "errors": outcomes["error"],
            "valid_pct": 100.0 * outcomes["valid"] / answered if answered else None,
            "accuracy": accuracy(c), "accuracy_low": wilson(c.agree, c.n)[0], "accuracy_high": wilson(c.agree, c.n)[1],
            "macro_f1": f1(pairs), "macro_f1_low": f1_low, "macro_f1_high": f1_high,
            "kappa": kappa.kappa, "kappa_low": kappa.low, "kappa_high": kappa.high, **usage})
    best = max((r for r in rows if r["accuracy"] is not None), key=lambda r: (r["accuracy"], r["n"]), default=None)
    c = confusion(((gold[u], v) for u, v in labels[best["cell"]].items() if u in gold), preferred)
    groups: dict = {}
    for cell in cells:
        groups.setdefault((cell["model"], cell["prompt"]), []).append(cell["cell"])
    stability = []
    for (model, prompt), names in groups.items():
        if len(names) < 2:
            continue
        units = sorted({u for n in names for u in labels[n]}, key=_order)
        counts = unit_counts([[labels[n].get(u) for n in names] for u in units])
        complete = [x for x in counts if sum(x.values()) == len(names)]
        fk_low, fk_high = bootstrap(fleiss_kappa, complete, reps, seed)
        ka_low, ka_high = bootstrap(krippendorff_alpha, counts, reps, seed)
        unanimous = sum(1 for x in complete if len(x) == 1)
        stability.append({"model": model, "prompt": prompt, "cells": names, "repeats": len(names), "n": len(complete),
                          "n_pairable": sum(1 for x in counts if sum(x.values()) >= 2),
                          "fleiss_kappa": fleiss_kappa(complete), "fleiss_low": fk_low, "fleiss_high": fk_high,
                          "krippendorff_alpha": krippendorff_alpha(counts), "alpha_low": ka_low, "alpha_high": ka_high,
                          "unanimous": unanimous, "unanimous_pct": 100.0 * unanimous / len(complete)})
    paired = []
    for a, b in combinations([x["cell"] for x in cells if x["repeat"] == 1], 2):
        common = [u for u in labels[a] if u in labels[b]]
        with_gold = [u for u in common if u in gold]
        only_a = sum(1 for u in with_gold if labels[a][u] == gold[u] and labels[b][u] != gold[u])
        only_b = sum(1 for u in with_gold if labels[b][u] == gold[u] and labels[a][u] != gold[u])
        k = cohen_kappa(confusion((labels[a][u], labels[b][u]) for u in common))
        paired.append({"a": a, "b": b, "n": len(with_gold), "n_common": len(common), "only_a_correct": only_a,
                       "only_b_correct": only_b, "mcnemar_p": mcnemar(only_a, only_b),
                       "agreement": sum(1 for u in common if labels[a][u] == labels[b][u]) / len(common)
                       if common else None,
                       "kappa": k.kappa, "kappa_low": k.low, "kappa_high": k.high})
    notes = []
    for u in sorted(set(gold) | {u for m in labels.values() for u in m}, key=_order):
        row = {n: labels[n].get(u) for n in labels}
        given = [v for v in row.values() if v is not None]
        g = gold.get(u)
        different = len(set(given)) > 1 or (g is not None and any(v != g for v in given))
        if different_only and not different:
            continue
        notes.append({"unit": u, "gold": g, "labels": row, "different": different})
    return {"cells": rows, "best_cell": best["cell"],
            "best_confusion": {"cell": best["cell"], "labels": list(c.labels), "matrix": [list(r) for r in c.matrix]},
            "stability": stability, "paired": paired, "notes_total": len(notes),
            "notes_different": sum(1 for n in notes if n["different"]),
            "notes": notes[offset: None if limit is None else offset + limit]}


BOOTSTRAPPED = ("macro_f1_low", "macro_f1_high", "fleiss_low", "fleiss_high", "alpha_low", "alpha_high")


def _differences(want, got, path: str = "", boot_tol: float = 0.0) -> list[str]:
    """Where `got` differs from `want` (keys `want` has; floats to 1e-9, bootstrap ends to boot_tol)."""
    if isinstance(want, dict):
        out = []
        for k, v in want.items():
            if k not in got:
                out.append(f"{path}.{k}: missing")
            elif k in BOOTSTRAPPED:
                if (v is None) != (got[k] is None) or (v is not None and abs(v - got[k]) > boot_tol):
                    out.append(f"{path}.{k}: {v!r} vs {got[k]!r}")
            else:
                out += _differences(v, got[k], f"{path}.{k}", boot_tol)
        return out
    if isinstance(want, list):
        if len(want) != len(got):
            return [f"{path}: {len(want)} items vs {len(got)}"]
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in _differences(a, b, f"{path}[{i}]", boot_tol)]
    if isinstance(want, float) or isinstance(got, float):
        ok = want is not None and got is not None and math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12)
        return [] if ok else [f"{path}: {want!r} vs {got!r}"]
    return [] if (want == got and type(want) is type(got)) else [f"{path}: {want!r} vs {got!r}"]


def _scanned(monkeypatch, source: str) -> list[str]:
    """Read the labels from the stored rows ("stored") or by scanning the units ("scan"); the runs scanned."""
    scanned: list[str] = []
    real_scan = study._scan

    def counting(db, char, params, run_id, usage):
        scanned.append(run_id)
        return real_scan(db, char, params, run_id, usage)

    monkeypatch.setattr(study, "_scan", counting)
    if source == "scan":
        monkeypatch.setattr(study, "_stored_scan", lambda *args: None)
    return scanned


def _run_ids(led, name: str, **where) -> set[str]:
    """The runs of a study (with `units` holding `unit`: those with that unit)."""
    sql = "select distinct run_id from units where run_id in (select run_id from runs where study = ?)"
    params = [name]
    if "unit" in where:
        sql += " and unit_id = ?"
        params.append(where["unit"])
    return led.read(lambda db: {r[0] for r in db.conn.execute(sql, params)}, set())


@pytest.mark.parametrize("source", ["stored", "scan"])
@pytest.mark.parametrize("field", ["response", "flag", "score"])
@pytest.mark.parametrize("use_numpy", [False, True])
def test_every_figure_is_the_note_by_note_one(ledger, field, use_numpy, source, monkeypatch):
    if use_numpy:
        pytest.importorskip("numpy")
    monkeypatch.setattr(stab, "USE_NUMPY", use_numpy)
    scanned = _scanned(monkeypatch, source)
    led, gold = ledger
    gold = _gold_for(gold, field)
    want = led.read(lambda db: reference(db, "s", gold, field, REPS, 11), None)
    got = led.read(lambda db: study_report(db, "s", gold, {"column": "g"}, field, reps=REPS, seed=11), None)
    assert _differences(want, got, boot_tol=0.06) == []
    # stored: only the run holding ODD_ID is scanned (its ids do not split back; the run with no unit has a row)
    assert set(scanned) == ({next(iter(_run_ids(led, "s", unit=ODD_ID)))} if source == "stored"
                            else {r for c in got["cells"] for r in c["runs"]})
    assert got["bootstrap"] == {"reps": REPS, "seed": 11, "over": "notes", "sampler": stab.sampler()}
    assert got["bootstrap"]["sampler"].startswith("numpy" if use_numpy else "python")
    # the awkward cases are in the ledger, not only in the code
    cells = {c["cell"]: c for c in got["cells"]}
    assert len(cells["A/p/r1"]["runs"]) == 2
    assert all(c["invalid"] and c["empty"] and c["errors"] for c in cells.values() if c["cell"] != "B/q/r1")
    assert cells["B/r/r1"]["errors"] > 30
    assert cells["B/q/r1"]["answered"] == 0 and cells["B/q/r1"]["accuracy"] is None
    if field == "response":
        assert "perhaps" in {v for n in got["notes"] for v in n["labels"].values()}
        assert "(invalid answer)" in {v for n in got["notes"] for v in n["labels"].values()}  # A/p/r3: no fallback
        assert {n["unit"] for n in got["notes"]} >= {"gold-only", "007", "7", "x-1", ODD_ID}


@pytest.mark.parametrize("source", ["stored", "scan"])
@pytest.mark.parametrize("field", ["response", "flag", "score"])
def test_cells_whose_schemas_differ(ledger, field, source, monkeypatch):
    """Study "m": each run's stored characters are its own schema's, mapped to the study's (a label another order,
    one more or less, a bool where the study has a choice and back, a field that is text in one cell)."""
    monkeypatch.setattr(stab, "USE_NUMPY", False)
    scanned = _scanned(monkeypatch, source)
    led, gold = ledger
    gold = _gold_for(gold, field)
    want = led.read(lambda db: reference(db, "m", gold, field, REPS, 11), None)
    got = led.read(lambda db: study_report(db, "m", gold, {"column": "g"}, field, reps=REPS, seed=11), None)
    assert _differences(want, got, boot_tol=0.06) == []
    b_p_r1 = next(c["run_id"] for c in got["cells"] if c["cell"] == "B/p/r1")
    assert set(scanned) == ({b_p_r1} if source == "stored" and field == "response" else set() if source == "stored"
                            else _run_ids(led, "m"))
    if field == "response":
        assert {"perhaps", "maybe", "yes", "no"} <= {v for n in got["notes"] for v in n["labels"].values()}


@pytest.mark.parametrize("name,field", [(n, f) for n in ("s", "m") for f in ("response", "flag", "score")])
def test_the_stored_rows_give_exactly_the_scans_report(ledger, name, field, monkeypatch):
    led, gold = ledger
    gold = _gold_for(gold, field)

    def both() -> list[dict]:
        return [led.read(lambda db: study_report(db, name, gold, {}, field, reps=500, seed=2, limit=9, offset=3), None),
                led.read(lambda db: study_notes(db, name, gold, field, limit=None, different_only=True), None)]

    stored = both()
    monkeypatch.setattr(study, "_stored_scan", lambda *args: None)
    assert both() == stored


@pytest.mark.parametrize("source", ["stored", "scan"])
def test_the_figures_do_not_depend_on_the_bulk_reads_shortcuts(ledger, source, monkeypatch):
    """Same answers, read the slow way: every cell placed by id (as a resumed cell is), no run lining up."""
    _scanned(monkeypatch, source)
    led, gold = ledger
    fast = led.read(lambda db: study_report(db, "s", gold, {}, "response", reps=300, seed=3), None)
    real_scan, real_stored = study._scan, study._stored_scan

    def placed_by_id(read):
        if read is None:
            return None
        joined, ids, text, sums = read
        ids = (joined.split(study.SEP) if text else []) if ids is None else ids
        return None, ids, text, sums  # as if read row by row: placed by id

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study, "_scan", lambda *args: placed_by_id(real_scan(*args)))
        mp.setattr(study, "_stored_scan", lambda *args: placed_by_id(real_stored(*args)))
        slow = led.read(lambda db: study_report(db, "s", gold, {}, "response", reps=300, seed=3), None)
    assert slow == fast


# --- the stored rows: made at import, trusted only where they are the run's latest ------------------------------------

def _copy(led: Ledger, to) -> Ledger:
    shutil.copytree(led.ledger_dir, to / "ledger", ignore=shutil.ignore_patterns("ledger.lease*"))
    return Ledger(to / "ledger")


def _stored_rows(led: Ledger) -> dict[str, list]:
    conn = sqlite3.connect(led.db_path)
    try:
        return {t: conn.execute(f"select * from {t} order by run_id{', field' if t == 'study_labels' else ''}").fetchall()
                for t in ("study_scans", "study_labels")}
    finally:
        conn.close()


def _all_figures(led: Ledger, gold: dict) -> list[dict]:
    def every(db) -> list[dict]:
        return [study_report(db, name, _gold_for(gold, field), {}, field, reps=200, seed=4, limit=None)
                for name in ("s", "m") for field in ("response", "flag", "score")]

    return led.read(every, [])


def test_a_rebuilt_ledger_and_one_migrated_from_before_the_stored_rows_give_the_same_figures(ledger, tmp_path):
    led, gold = ledger
    want = _all_figures(led, gold)
    rows = _stored_rows(led)
    closed = led.read(lambda db: {r[0] for r in db.conn.execute("select run_id from runs where study is not null")},
                      set())
    assert {r[0] for r in rows["study_scans"]} == closed  # every run of both studies is closed
    assert len(rows["study_labels"]) > 2 * len(closed)

    rebuilt = _copy(led, tmp_path / "rebuilt")
    rebuilt.rebuild()
    assert _stored_rows(rebuilt) == rows  # what the import stores depends on the journals alone
    assert _all_figures(rebuilt, gold) == want

    old = _copy(led, tmp_path / "old")  # an index as notes-tui wrote it before m005
    conn = sqlite3.connect(old.db_path)
    conn.execute("drop table study_scans")
    conn.execute("drop table study_labels")
    conn.execute("delete from _ledger_migrations where name = 'm005_study_scans'")
    conn.commit()
    conn.close()
    as_it_is = Ledger(old.ledger_dir, auto_sync=False)  # read before anyone migrates it: every run scanned
    assert _all_figures(as_it_is, gold) == want
    assert old.sync()  # the next import migrates it and stores every closed run's row
    assert _stored_rows(old) == rows
    assert _all_figures(old, gold) == want


def test_a_row_from_another_line_of_the_journal_is_not_read_and_is_stored_again(ledger, tmp_path):
    led, gold = ledger
    want = _all_figures(led, gold)
    rows = _stored_rows(led)
    copy = _copy(led, tmp_path)
    frozen = Ledger(copy.ledger_dir, auto_sync=False)
    conn = sqlite3.connect(copy.db_path)
    conn.execute("update study_labels set chars = replace(replace(chars, '0', '1'), '~', '!')")  # yes -> no, ...
    conn.commit()
    assert _all_figures(frozen, gold) != want  # the rows are what is read
    conn.execute("update study_scans set seq = seq - 1")  # as if records came after they were worked out
    conn.commit()
    assert _all_figures(frozen, gold) == want  # not the journal's latest: scanned
    conn.close()
    assert copy.sync()
    assert _stored_rows(copy) == rows  # worked out again


def test_a_running_run_has_no_row_until_it_closes(tmp_path):
    header = {"experiment": "x", "model": "A", "answer_schema": SCHEMA, "started_at": "2026-01-01T00:00:00.000Z",
              "study": {"name": "t", "cell": "A/p/r1", "model": "A", "prompt": "p", "repeat": 1, "index": 1}}
    journal = Journal.create(tmp_path, header)
    journal.append_units([{"id": str(i), "outcome": "valid", "answer": {"response": CHOICES[i % 3], "flag": True}}
                          for i in range(10)])
    led = Ledger(tmp_path)
    gold = {str(i): "yes" for i in range(10)}
    assert led.sync()
    assert _stored_rows(led) == {"study_scans": [], "study_labels": []}
    running = led.read(lambda db: study_report(db, "t", gold, {}, "response", reps=0), None)
    assert running["cells"][0]["n"] == 10 and running["cells"][0]["accuracy"] == pytest.approx(0.4)
    journal.close("completed", {"total": 10, "done": 10})
    assert led.sync()
    rows = _stored_rows(led)
    assert [r[:3] for r in rows["study_scans"]] == [(journal.run_id, 2, 10)]  # seq 2: the close
    assert [(r[1], r[3]) for r in rows["study_labels"]] == [("flag", "0000000000"), ("response", "0120120120"),
                                                            ("score", ",,,,,,,,,,")]  # no score: NO_FIELD
    closed = led.read(lambda db: study_report(db, "t", gold, {}, "response", reps=0), None)
    assert closed["cells"][0] | {"status": "running"} == running["cells"][0] | {"status": "running"}


def test_a_crashed_run_gets_its_row_once_it_is_known_to_have_crashed(tmp_path):
    from ledger.procinfo import this_host

    header = {"experiment": "x", "model": "A", "answer_schema": SCHEMA, "started_at": "2026-01-01T00:00:00.000Z",
              "hostname": this_host(), "pid": 2 ** 22 + 12345, "pid_start": 1,  # no such process
              "study": {"name": "t", "cell": "A/p/r1", "model": "A", "prompt": "p", "repeat": 1, "index": 1}}
    journal = Journal.create(tmp_path, header)
    journal.append_units([{"id": str(i), "outcome": "valid", "answer": {"response": CHOICES[i % 3]}} for i in range(7)])
    led = Ledger(tmp_path)
    assert led.sync()  # the status it shows is worked out after the import: crashed from now on
    assert _stored_rows(led)["study_scans"] == []
    assert led.sync()
    assert [r[:3] for r in _stored_rows(led)["study_scans"]] == [(journal.run_id, 1, 7)]
    report = led.read(lambda db: study_report(db, "t", {}, {}, "response", reps=0, limit=None), None)
    assert report["cells"][0]["status"] == "crashed" and report["notes"][1]["labels"] == {"A/p/r1": "no"}


def test_an_answer_sqlite_cannot_read_does_not_stop_the_import(tmp_path):
    header = {"experiment": "x", "model": "A", "answer_schema": SCHEMA, "started_at": "2026-01-01T00:00:00.000Z",
              "study": {"name": "t", "cell": "A/p/r1", "model": "A", "prompt": "p", "repeat": 1, "index": 1}}
    journal = Journal.create(tmp_path, header)
    journal.append_units([{"id": "1", "outcome": "valid", "answer": {"response": "yes", "x": float("nan")}}])
    journal.close("completed", {"total": 1, "done": 1})
    led = Ledger(tmp_path)
    assert led.sync()
    assert [r[:4] for r in _stored_rows(led)["study_scans"]] == [(journal.run_id, 2, None, None)]  # scanned each time
    with pytest.raises(sqlite3.OperationalError, match="malformed JSON"):  # what `ledger study` said before m005
        led.read(lambda db: study_report(db, "t", {}, {}, "response", reps=0), None)


@pytest.mark.parametrize("different_only", [False, True])
@pytest.mark.parametrize("offset,limit", [(0, None), (0, 7), (5, 7), (40, 100), (100, 5)])
def test_pages_of_the_note_table(ledger, offset, limit, different_only):
    led, gold = ledger
    want = led.read(lambda db: reference(db, "s", gold, "response", 0, 1, offset, limit, different_only), None)
    everything = led.read(lambda db: reference(db, "s", gold, "response", 0, 1), None)["notes_total"]
    report = led.read(lambda db: study_report(db, "s", gold, {}, "response", reps=0, offset=offset, limit=limit,
                                              different_only=different_only), None)
    page = led.read(lambda db: study_notes(db, "s", gold, "response", offset=offset, limit=limit,
                                           different_only=different_only), None)
    for got in (report, page):
        assert got["notes"] == want["notes"]
        assert (got["notes_total"], got["notes_different"]) == (want["notes_total"], want["notes_different"])
        assert got["notes_all"] == everything  # whatever the filter
        assert got["offset"] == offset
    if limit is None and offset == 0 and not different_only:
        assert [n["unit"] for n in page["notes"]][:3] == ["0", "1", "2"]
        units = [n["unit"] for n in page["notes"]]
        assert units.index("007") == units.index("7") - 1  # 7 as a number, then "007" < "7" as text
        assert [n["unit"] for n in page["notes"]][-5:] == ["", ODD_ID, "gold-only", "note b", "x-1"]


@pytest.mark.parametrize("seed,size,columns", [(1, 4, 1), (2, 4, 2), (3, 6, 3), (4, 5, 4), (5, 40, 3), (6, 256, 2)])
def test_joint_counts_are_a_counter_of_the_columns(seed, size, columns):
    """Folding columns into bytes (and, past 256 combinations, a Counter) counts what zip would."""
    rng = random.Random(seed)
    n = 5000
    weights = [rng.random() ** 3 for _ in range(size)]
    cols = [bytes(rng.choices(range(size), weights, k=n)) for _ in range(columns)]
    assert _joint(cols, size) == dict(Counter(zip(*cols)))
    assert _joint([b""] * columns, size) == {}
