"""The ledger's own statistics against scikit-learn and statsmodels (test-only dependencies) and against a
textbook table whose answer is known."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support
from statsmodels.stats.inter_rater import cohens_kappa

from ledger.agreement import Confusion, accuracy, averages, class_scores, cohen_kappa, confusion

LABELS = ("(1) Likely", "(2) Unlikely", "(3) Unable to say")


def test_textbook_table():
    # 50 proposals read by two readers: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no. p_o = 0.7, p_e = 0.5, kappa = 0.4.
    c = Confusion(("yes", "no"), ((20, 5), (10, 15)))
    k = cohen_kappa(c)
    assert k.kappa == pytest.approx(0.4) and accuracy(c) == pytest.approx(0.7)
    sm = cohens_kappa([[20, 5], [10, 15]])
    assert (k.se, k.low, k.high) == (pytest.approx(sm.std_kappa), pytest.approx(sm.kappa_low), pytest.approx(sm.kappa_upp))


def pairs(seed: int, n: int, labels=LABELS, agree=0.6):
    rng = random.Random(seed)
    a = [rng.choice(labels) for _ in range(n)]
    b = [x if rng.random() < agree else rng.choice(labels) for x in a]
    return a, b


@pytest.mark.parametrize("seed", range(25))
def test_random_tables_match_the_reference_libraries(seed):
    a, b = pairs(seed, n=random.Random(seed).randint(5, 400), agree=random.Random(seed + 1).random())
    c = confusion(zip(a, b), LABELS)
    assert c.n == len(a) and list(c.labels) == [x for x in LABELS if x in set(a) | set(b)]
    k = cohen_kappa(c)
    if len(c.labels) < 2:
        assert k.kappa is None
        return
    assert k.kappa == pytest.approx(cohen_kappa_score(a, b))
    sm = cohens_kappa([list(r) for r in c.matrix])
    assert (k.low, k.high) == (pytest.approx(sm.kappa_low), pytest.approx(sm.kappa_upp))
    scores = class_scores(c)
    p, r, f, s = precision_recall_fscore_support(a, b, labels=list(c.labels), zero_division=0)
    assert [x.precision for x in scores] == pytest.approx(list(p))
    assert [x.recall for x in scores] == pytest.approx(list(r))
    assert [x.f1 for x in scores] == pytest.approx(list(f))
    assert [x.support for x in scores] == list(s)
    avg = averages(scores)
    for name in ("macro", "weighted"):
        want = precision_recall_fscore_support(a, b, labels=list(c.labels), zero_division=0, average=name)
        assert [avg[name]["precision"], avg[name]["recall"], avg[name]["f1"]] == pytest.approx(list(want[:3]))


def test_a_label_one_rater_never_uses():
    # the run never answers (3): its precision and F1 are 0 (zero_division=0), recall too; support counts gold
    a = ["(1) Likely"] * 5 + ["(2) Unlikely"] * 5 + ["(3) Unable to say"] * 3
    b = ["(1) Likely"] * 4 + ["(2) Unlikely"] * 6 + ["(2) Unlikely"] * 3
    c = confusion(zip(a, b), LABELS)
    scores = class_scores(c)
    assert (scores[2].precision, scores[2].recall, scores[2].f1, scores[2].support) == (0.0, 0.0, 0.0, 3)
    assert cohen_kappa(c).kappa == pytest.approx(cohen_kappa_score(a, b))


@pytest.mark.parametrize(("a", "b"), [([], []), (["x"] * 9, ["x"] * 9)])
def test_kappa_is_undefined_without_variety(a, b):
    c = confusion(zip(a, b))
    assert cohen_kappa(c).kappa is None and cohen_kappa(c).low is None


def test_perfect_agreement_has_a_zero_width_interval():
    a = ["yes", "no"] * 10
    k = cohen_kappa(confusion(zip(a, a)))
    assert k.kappa == pytest.approx(1.0) and k.low == pytest.approx(1.0) and k.high == pytest.approx(1.0)


def test_bool_labels_keep_their_declared_order():
    c = confusion([(False, True), (True, True), (False, False)], (True, False))
    assert c.labels == (True, False) and c.matrix == ((1, 0), (1, 1))
