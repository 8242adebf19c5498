"""The demo study on the real SmolLM2 (two prompt variants × 2 repeats, the first 12 demo notes), and every figure
`ledger study` gives recomputed independently from the results table and the CSV's gold labels: scikit-learn for
accuracy, macro-F1 and Cohen's kappa, statsmodels for Wilson's interval, Fleiss' kappa and McNemar's test, the
`krippendorff` package for alpha."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sqlite3
from collections import Counter

import pytest

from tests.engine.test_embedded_model import have_local_extra
from tests.helpers.runhelp import cli
from tests.helpers.support import ROOT, need

pytestmark = pytest.mark.slow
metrics = pytest.importorskip("sklearn.metrics")
inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
proportion = pytest.importorskip("statsmodels.stats.proportion")
krippendorff = pytest.importorskip("krippendorff")
np = pytest.importorskip("numpy")

STUDY = "demo-pneumonia-study"
CELLS = ["embedded/v1/r1", "embedded/v1/r2", "embedded/v2/r1", "embedded/v2/r2"]
NOTES = 12


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    need(have_local_extra(), "the local extra is not installed (pip install -e '.[local]')")
    work = tmp_path_factory.mktemp("demo-study")
    (work / "data").mkdir()
    shutil.copy(ROOT / "experiments" / "data" / "demo_notes.csv", work / "data" / "demo_notes.csv")
    shutil.copy(ROOT / "experiments" / "demo-study.toml", work / "demo-study.toml")
    return work


def _answers(db) -> dict[str, dict[str, str]]:
    conn = sqlite3.connect(db)
    out: dict[str, dict[str, str]] = {}
    for experiment, note_id, response in conn.execute("SELECT experiment, note_id, response FROM demo_study_results"):
        out.setdefault(experiment.removeprefix(f"{STUDY}/"), {})[str(note_id)] = response
    conn.close()
    return out


def _gold(work) -> dict[str, str]:
    with open(work / "data" / "demo_notes.csv", newline="", encoding="utf-8") as f:
        return {row["note_id"]: row["gold_label"] for row in csv.DictReader(f)}


def _same(ours, theirs):
    if ours is None:
        return theirs is None or (isinstance(theirs, float) and math.isnan(theirs))
    return ours == pytest.approx(theirs, abs=1e-9)


def test_the_demo_study_on_the_real_model_and_each_figure_recomputed(demo_study, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NOTES_TUI_LEDGER", str(tmp_path / "ledger"))
    exp = demo_study / "demo-study.toml"
    code, out, err = cli(capsys, "--run", str(exp), "--limit", str(NOTES))
    assert code == 0, err
    assert f"study {STUDY}: 4 cells, 4 run now, 0 complete before" in out

    code, text, err = cli(capsys, "ledger", "study", STUDY, "--bootstrap", "200")
    assert code == 0, err
    for heading in ("cells against the reference:", "stability across repeats", "paired cells", "notes where cells"):
        assert heading in text
    assert "caution: under 30 notes" in text  # 12 notes: said plainly

    code, out, err = cli(capsys, "ledger", "study", STUDY, "--json", "--bootstrap", "200")
    assert code == 0, err
    doc = json.loads(out)
    answers, gold = _answers(demo_study / "data" / "demo.db"), _gold(demo_study)
    assert [c["cell"] for c in doc["cells"]] == CELLS and set(answers) == set(CELLS)
    assert doc["bootstrap"] == {"reps": 200, "seed": doc["bootstrap"]["seed"], "over": "notes",
                                "sampler": doc["bootstrap"]["sampler"]}
    assert doc["bootstrap"]["sampler"].startswith(("numpy ", "python"))

    for cell in doc["cells"]:
        mine = answers[cell["cell"]]
        units = sorted(mine, key=int)
        y_true, y_pred = [gold[u] for u in units], [mine[u] for u in units]
        assert cell["n"] == len(units) == NOTES
        assert _same(cell["accuracy"], metrics.accuracy_score(y_true, y_pred))
        assert _same(cell["macro_f1"], metrics.f1_score(y_true, y_pred, average="macro", zero_division=0))
        assert _same(cell["kappa"], metrics.cohen_kappa_score(y_true, y_pred))
        low, high = proportion.proportion_confint(sum(t == p for t, p in zip(y_true, y_pred)), len(units),
                                                  method="wilson")
        assert (cell["accuracy_low"], cell["accuracy_high"]) == pytest.approx((low, high), abs=1e-9)
        if cell["macro_f1_low"] is not None:
            assert cell["macro_f1_low"] <= cell["macro_f1"] + 1e-9 and cell["macro_f1"] - 1e-9 <= cell["macro_f1_high"]

    for st in doc["stability"]:
        r1, r2 = answers[f"embedded/{st['prompt']}/r1"], answers[f"embedded/{st['prompt']}/r2"]
        units = sorted(set(r1) & set(r2), key=int)
        labels = sorted({r1[u] for u in units} | {r2[u] for u in units})
        table = np.array([[Counter((r1[u], r2[u]))[lab] for lab in labels] for u in units])
        assert _same(st["fleiss_kappa"], inter_rater.fleiss_kappa(table, method="fleiss"))
        data = np.array([[labels.index(r[u]) for u in units] for r in (r1, r2)], dtype=float)
        if len(labels) > 1:
            assert _same(st["krippendorff_alpha"], krippendorff.alpha(reliability_data=data,
                                                                       level_of_measurement="nominal"))
        assert st["n"] == len(units)

    [pair] = doc["paired"]
    a, b = answers[pair["a"]], answers[pair["b"]]
    only_a = sum(1 for u in a if a[u] == gold[u] and b[u] != gold[u])
    only_b = sum(1 for u in a if b[u] == gold[u] and a[u] != gold[u])
    assert (pair["only_a_correct"], pair["only_b_correct"]) == (only_a, only_b)
    if only_a + only_b:
        assert _same(pair["mcnemar_p"], contingency.mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue)
    units = sorted(a, key=int)
    assert _same(pair["kappa"], metrics.cohen_kappa_score([a[u] for u in units], [b[u] for u in units]))

    notes = {n["unit"]: n for n in doc["notes"]}
    assert set(notes) == set(gold)  # every note with a gold label is a row, answered or not
    for u, n in notes.items():
        assert n["gold"] == gold[u]
        assert n["labels"] == {c: answers[c].get(u) for c in CELLS}
        given = [v for v in n["labels"].values() if v is not None]
        assert n["different"] == (len(set(given)) > 1 or any(v != gold[u] for v in given))

