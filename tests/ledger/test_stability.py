"""The study's statistics against independent implementations: statsmodels (Fleiss' kappa, McNemar, Wilson), the
`krippendorff` package, and published worked examples."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from ledger import stability
from ledger.stability import (
    binomial,
    bootstrap,
    bootstrap_counts,
    fleiss_kappa,
    fleiss_statistic,
    krippendorff_alpha,
    krippendorff_statistic,
    mcnemar,
    multinomial,
    patterns_of,
    sampler,
    unit_counts,
    wilson,
)

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


@pytest.mark.parametrize("b,c", [(0, 5), (3, 9), (10, 10), (25, 40), (1, 0), (700, 760), (12000, 12400), (3, 2000),
                                 (40000, 41000), (30000, 30000)])
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


# --- the count-based bootstrap: an exact binomial, multinomial draws as a chain of them, statistics over counts ---

scipy_stats = pytest.importorskip("scipy.stats")

# (n, p): Devroye's waiting times (n p < 10), Hörmann's BTRS (n p >= 10) with a weak squeeze (n p near 10) and a
# strong one, both of them through p > 1/2 (the draw of the failures), and n = 1
BINOMIAL_CASES = [(1, 0.3), (12, 0.25), (40, 0.2), (9, 0.95), (30, 0.4), (200, 0.3), (5000, 0.5), (100_000, 0.013),
                  (1000, 0.9)]


@pytest.mark.parametrize("n,p", BINOMIAL_CASES)
def test_binomial_draws_have_the_binomial_mean_and_variance(n, p):
    rng = random.Random(n)
    draws = 100_000
    xs = [binomial(rng, n, p) for _ in range(draws)]
    mean = sum(xs) / draws
    var = sum((x - mean) ** 2 for x in xs) / (draws - 1)
    assert all(0 <= x <= n for x in xs)
    sd = math.sqrt(n * p * (1 - p))
    assert abs(mean - n * p) < 5 * sd / math.sqrt(draws)
    # the sample variance's standard error is about var * sqrt(2 / draws) (plus the kurtosis term; 6 of them is ample)
    assert abs(var - n * p * (1 - p)) < 6 * n * p * (1 - p) * math.sqrt(2 / draws) + 1e-9


@pytest.mark.parametrize("n,p", BINOMIAL_CASES)
def test_binomial_draws_follow_the_binomial_distribution(n, p):
    """Chi-square against the exact probabilities, tails pooled so that every cell expects 20 draws or more: a
    sampler off by a little in any part of the range (a wrong acceptance test, an off-by-one) fails it."""
    rng = random.Random(7 * n + 1)
    draws = 200_000
    seen = Counter(binomial(rng, n, p) for _ in range(draws))
    dist = scipy_stats.binom(n, p)
    lo, hi = int(dist.ppf(1e-6)), int(dist.isf(1e-6)) + 1
    cells = [(None, lo - 1)] + [(k, k) for k in range(lo, hi)] + [(hi, None)]  # (None, x): k <= x; (x, None): k >= x
    expected, observed = [], []
    for a, b in cells:
        if a is None:
            e, o = dist.cdf(b), sum(c for k, c in seen.items() if k <= b)
        elif b is None:
            e, o = dist.sf(a - 1), sum(c for k, c in seen.items() if k >= a)
        else:
            e, o = dist.pmf(a), seen.get(a, 0)
        if expected and expected[-1] * draws < 20:  # pool into the cell before
            expected[-1] += e
            observed[-1] += o
        else:
            expected.append(e)
            observed.append(o)
    while len(expected) > 1 and expected[-1] * draws < 20:
        expected[-2] += expected.pop()
        observed[-2] += observed.pop()
    e = np.array(expected) * draws
    chi2 = float(((np.array(observed) - e) ** 2 / e).sum())
    assert scipy_stats.chi2.sf(chi2, len(e) - 1) > 1e-4, (chi2, len(e))


def test_binomial_edges():
    rng = random.Random(1)
    assert binomial(rng, 0, 0.5) == 0
    assert binomial(rng, 10, 0.0) == 0
    assert binomial(rng, 10, 1.0) == 10
    with pytest.raises(ValueError):
        binomial(rng, -1, 0.5)
    with pytest.raises(ValueError):
        binomial(rng, 5, 1.5)


def test_multinomial_draws_have_the_multinomial_moments():
    counts = [500, 0, 300, 150, 45, 5]  # a kind with no members is never drawn
    total = sum(counts)
    n = 2000
    rng = random.Random(3)
    draws = [multinomial(rng, n, counts) for _ in range(20_000)]
    assert all(sum(d) == n and d[1] == 0 for d in draws)
    x = np.array(draws, dtype=float)
    p = np.array(counts) / total
    assert np.all(np.abs(x.mean(axis=0) - n * p) < 5 * np.sqrt(n * p * (1 - p) / len(draws)) + 1e-12)
    cov = np.cov(x, rowvar=False)
    theory = n * (np.diag(p) - np.outer(p, p))  # Cov(X_i, X_j) = -n p_i p_j off the diagonal
    assert np.allclose(cov, theory, rtol=0.05, atol=0.05 * n * p.max() * 0.1)
    assert multinomial(rng, 0, counts) == [0] * len(counts)


def test_weighted_statistics_are_the_statistics_of_the_notes_they_stand_for():
    ratings = _random_ratings(random.Random(9), 300, 3, missing=0.2)
    counts = unit_counts(ratings)
    patterns, weights = patterns_of(counts)
    assert sum(weights) == len(counts) and len(patterns) < len(counts)
    assert krippendorff_statistic(patterns)(weights) == pytest.approx(krippendorff_alpha(counts), abs=1e-12)
    complete = [c for c in counts if sum(c.values()) == 3]
    patterns, weights = patterns_of(complete)
    assert fleiss_statistic(patterns)(weights) == pytest.approx(fleiss_kappa(complete), abs=1e-12)
    assert fleiss_statistic(patterns)([0] * len(patterns)) is None


@pytest.mark.parametrize("use_numpy", [False, True])
@pytest.mark.parametrize("which", ["fleiss", "krippendorff"])
def test_the_bootstrap_over_counts_gives_the_intervals_of_the_bootstrap_over_notes(use_numpy, which, monkeypatch):
    """Resampling the notes and drawing their counts are one distribution: with 4000 resamples each, the interval
    ends agree to within the bootstrap's own noise (about 0.005 here); a draw from the wrong distribution (say,
    every kind equally likely, or without replacement) lands well outside."""
    monkeypatch.setattr(stability, "USE_NUMPY", use_numpy)
    ratings = _random_ratings(random.Random(21), 200, 3, missing=0.15 if which == "krippendorff" else 0.0)
    counts = unit_counts(ratings)
    stat, make = (fleiss_kappa, fleiss_statistic) if which == "fleiss" else (krippendorff_alpha, krippendorff_statistic)
    by_notes = bootstrap(stat, counts, 4000, seed=5)
    patterns, weights = patterns_of(counts)
    by_counts = bootstrap_counts(make(patterns), weights, 4000, seed=5)
    assert by_counts == pytest.approx(by_notes, abs=0.02)
    assert by_counts == bootstrap_counts(make(patterns), weights, 4000, seed=5)  # the seed makes it reproducible
    assert by_counts != bootstrap_counts(make(patterns), weights, 4000, seed=6)
    width = by_notes[1] - by_notes[0]
    assert 0.1 < width < 0.4  # a real interval, so agreeing to 0.02 says something
    assert bootstrap_counts(make(patterns), [1] + [0] * (len(weights) - 1), 100, seed=5) == (None, None)


def test_the_sampler_is_named_for_the_record(monkeypatch):
    monkeypatch.setattr(stability, "USE_NUMPY", False)
    assert sampler() == "python"
    monkeypatch.setattr(stability, "USE_NUMPY", None)
    assert sampler() == f"numpy {np.__version__}"
