"""The study's statistics against independent implementations: statsmodels (Fleiss' kappa, McNemar, Wilson), the
`krippendorff` package, and published worked examples."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ledger.stability import bootstrap, fleiss_kappa, krippendorff_alpha, mcnemar, unit_counts, wilson

krippendorff = pytest.importorskip("krippendorff")
inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
proportion = pytest.importorskip("statsmodels.stats.proportion")
np = pytest.importorskip("numpy")

LABELS = ["(1) Likely", "(2) Unlikely", "(3) Unable to say", "(4) LLM output invalid"]


def _random_ratings(rng: random.Random, units: int, raters: int, missing: float = 0.0, skew: float = 0.7) -> list[list]:
    """Ratings that agree more often than chance: each note has a 'true' label most raters give."""
    out = []
    for _ in range(units):
        truth = rng.choice(LABELS)
        row = []
        for _ in range(raters):
            if rng.random() < missing:
                row.append(None)
            else:
                row.append(truth if rng.random() < skew else rng.choice(LABELS))
        out.append(row)
    return out


def _table(counts: list[Counter]) -> np.ndarray:
    return np.array([[c.get(label, 0) for label in LABELS] for c in counts])


@pytest.mark.parametrize("seed,units,raters", [(1, 51, 2), (2, 51, 3), (3, 500, 5), (4, 12, 4)])
def test_fleiss_kappa_matches_statsmodels(seed, units, raters):
    counts = unit_counts(_random_ratings(random.Random(seed), units, raters))
    assert fleiss_kappa(counts) == pytest.approx(inter_rater.fleiss_kappa(_table(counts), method="fleiss"), abs=1e-12)


def test_fleiss_kappa_on_the_textbook_example():
    # The worked example on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories; kappa = 0.210
    rows = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    counts = [Counter({j: n for j, n in enumerate(r) if n}) for r in rows]
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=0.0005)


@pytest.mark.parametrize("seed,units,raters,missing", [(1, 51, 2, 0.0), (2, 51, 3, 0.1), (3, 400, 4, 0.25),
                                                       (4, 30, 5, 0.4)])
def test_krippendorff_alpha_matches_the_krippendorff_package(seed, units, raters, missing):
    ratings = _random_ratings(random.Random(seed), units, raters, missing)
    index = {label: i for i, label in enumerate(LABELS)}
    # the package wants raters as rows, units as columns, nan for missing
    data = np.array([[np.nan if row[r] is None else index[row[r]] for row in ratings] for r in range(raters)],
                    dtype=float)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert krippendorff_alpha(unit_counts(ratings)) == pytest.approx(expected, abs=1e-12)


def test_krippendorff_alpha_on_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", C: nominal data, 4 observers, 12 units,
    # missing values; alpha = 0.743 as published
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[obs[u] for obs in observers] for u in range(12)]
    assert krippendorff_alpha(unit_counts(units)) == pytest.approx(0.743, abs=0.0005)


def test_undefined_agreement_is_none_not_a_number():
    one_label = unit_counts([["a", "a"], ["a", "a"]])
    assert fleiss_kappa(one_label) is None
    assert krippendorff_alpha(one_label) is None
    assert fleiss_kappa([]) is None
    assert krippendorff_alpha(unit_counts([["a", None], [None, "b"]])) is None  # nothing pairable


@pytest.mark.parametrize("b,c", [(0, 5), (3, 9), (10, 10), (25, 40), (1, 0), (700, 760), (12000, 12400)])
def test_mcnemar_exact_matches_statsmodels(b, c):
    table = [[100, b], [c, 100]]
    expected = contingency.mcnemar(table, exact=True).pvalue
    assert mcnemar(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_without_discordant_notes_is_none():
    assert mcnemar(0, 0) is None


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (45, 51), (7, 29), (83_456, 100_000)])
def test_wilson_interval_matches_statsmodels(k, n):
    low, high = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
    assert wilson(k, n) == pytest.approx((low, high), abs=1e-9)


def test_bootstrap_is_reproducible_from_its_seed_and_brackets_the_estimate():
    rng = random.Random(7)
    values = [rng.random() for _ in range(200)]
    mean = sum(values) / len(values)

    def stat(sample):
        return sum(sample) / len(sample)

    first = bootstrap(stat, values, 500, seed=11)
    assert first == bootstrap(stat, values, 500, seed=11)
    assert first != bootstrap(stat, values, 500, seed=12)
    low, high = first
    assert low < mean < high
    # the standard error of a mean of uniforms is 0.2887/sqrt(200) = 0.0204: the 95% interval is about 0.08 wide
    assert 0.06 < high - low < 0.10
    assert bootstrap(stat, values[:1], 500, seed=11) == (None, None)
