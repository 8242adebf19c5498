"""Statistics of a study, in plain Python like `agreement`: agreement among repeats (Fleiss' kappa, Krippendorff's
alpha for nominal data), McNemar's test for two cells on the same notes, Wilson's interval for a proportion, and a
percentile bootstrap over notes. The tests check each against statsmodels, the `krippendorff` package and
scikit-learn.

The bootstrap comes in two forms with the same distribution. `bootstrap` resamples the notes themselves: O(notes) a
resample. `bootstrap_counts` takes the notes as how many there are of each kind (a cell of a confusion matrix, the
label counts of a note among repeats), for a statistic that depends on nothing else: a resample of n notes with
replacement is then a multinomial draw of n over the kinds, drawn exactly as a chain of binomials (`binomial`), so a
resample costs O(kinds), not O(notes). With numpy installed (it is not a dependency) the draws are numpy's, the same
distribution, and a LinearStatistic takes all resamples in one matrix product; `sampler()` says which drew them.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from .agreement import Z_95

UnitCounts = Sequence[Counter]  # per note: how many raters (repeats) gave each label
Patterns = Sequence[Mapping[Any, int]]  # distinct per-note label counts, each with a weight (how many notes have it)
USE_NUMPY: bool | None = None  # bootstrap_counts draws with numpy when None and importable, never when False


def fleiss_kappa(units: UnitCounts) -> float | None:
    """Fleiss' kappa (1971) over notes rated by the same number of raters; None when undefined (fewer than two
    notes or raters, or every rating the same label)."""
    return fleiss_statistic(units)([1] * len(units))


def krippendorff_alpha(units: UnitCounts) -> float | None:
    """Krippendorff's alpha for nominal data; notes with fewer than two ratings are not pairable and left out. None
    when undefined (no pairable notes, or one label in all)."""
    return krippendorff_statistic(units)([1] * len(units))


class LinearStatistic:
    """A statistic of how many notes there are of each kind that goes through sums linear in those counts (Fleiss'
    kappa, Krippendorff's alpha, macro-F1 all do): `rows[i]` is what one note of kind i adds to each sum, as
    (sum index, amount) pairs; `finish` turns the sums into the statistic (None where undefined). Called with the
    counts, it is the statistic; bootstrap_counts with numpy takes the sums of every resample in one matrix product."""

    def __init__(self, rows: list[list[tuple[int, float]]], size: int,
                 finish: Callable[[Sequence[float]], float | None]) -> None:
        self.rows, self.size, self.finish = rows, size, finish

    def sums(self, counts: Sequence[int]) -> list[float]:
        out: list[float] = [0] * self.size
        for w, row in zip(counts, self.rows):
            if w:
                for j, x in row:
                    out[j] += w * x
        return out

    def __call__(self, counts: Sequence[int]) -> float | None:
        return self.finish(self.sums(counts))

    def matrix(self, np: Any, kinds: Sequence[int]) -> Any:
        m = np.zeros((len(kinds), self.size))
        for r, i in enumerate(kinds):
            for j, x in self.rows[i]:
                m[r, j] += x
        return m


def fleiss_statistic(patterns: Patterns) -> LinearStatistic:
    """Fleiss' kappa as a function of how many notes have each of `patterns` (label -> raters who gave it). The
    sums: the notes of each number of raters (kappa needs one number: a resample of notes rated by two numbers of
    raters has none), the agreement of the notes, and each label's ratings."""
    raters = [sum(u.values()) for u in patterns]
    sizes = list(dict.fromkeys(raters))
    labels = list(dict.fromkeys(label for u in patterns for label in u))
    index = {label: len(sizes) + 1 + j for j, label in enumerate(labels)}
    agree_at = len(sizes)
    rows = []
    for u, m in zip(patterns, raters):
        agree = (sum(c * c for c in u.values()) - m) / (m * (m - 1)) if m >= 2 else 0.0
        rows.append([(sizes.index(m), 1), (agree_at, agree)] + [(index[label], c) for label, c in u.items()])

    def finish(sums: Sequence[float]) -> float | None:
        used = [k for k in range(len(sizes)) if sums[k]]
        if len(used) != 1 or sizes[used[0]] < 2:
            return None
        m = sizes[used[0]]
        n_units = sums[used[0]]
        p_bar = sums[agree_at] / n_units
        p_e = sum((t / (n_units * m)) ** 2 for t in sums[agree_at + 1:])
        if math.isclose(p_e, 1.0):
            return None
        return (p_bar - p_e) / (1 - p_e)

    return LinearStatistic(rows, agree_at + 1 + len(labels), finish)


def krippendorff_statistic(patterns: Patterns) -> LinearStatistic:
    """Krippendorff's alpha (nominal) as a function of how many notes have each of `patterns`; see fleiss_statistic.
    The sums: the observed disagreement, and each label's ratings in pairable notes. Patterns of fewer than two
    ratings are not pairable: they add nothing, whatever their count."""
    labels = list(dict.fromkeys(label for u in patterns if sum(u.values()) >= 2 for label in u))
    index = {label: 1 + j for j, label in enumerate(labels)}
    rows = []
    for u in patterns:
        m_u = sum(u.values())
        if m_u < 2:
            rows.append([])
            continue
        observed = (m_u * m_u - sum(c * c for c in u.values())) / (m_u - 1)
        rows.append([(0, observed)] + [(index[label], c) for label, c in u.items()])

    def finish(sums: Sequence[float]) -> float | None:
        totals = sums[1:]
        n = sum(totals)
        expected = n * n - sum(c * c for c in totals)
        if n < 2 or expected == 0:
            return None
        return 1 - (n - 1) * sums[0] / expected

    return LinearStatistic(rows, 1 + len(labels), finish)


def patterns_of(units: UnitCounts) -> tuple[list[Counter], list[int]]:
    """The distinct per-note label counts among `units`, and how many notes have each (first seen first)."""
    seen: dict[frozenset, int] = {}
    patterns: list[Counter] = []
    weights: list[int] = []
    for u in units:
        key = frozenset(u.items())
        i = seen.setdefault(key, len(patterns))
        if i == len(patterns):
            patterns.append(u)
            weights.append(0)
        weights[i] += 1
    return patterns, weights


def wilson(k: int, n: int) -> tuple[float | None, float | None]:
    """Wilson's score interval (95%) for k successes in n: sound at small n and near 0 or 1."""
    if n == 0:
        return None, None
    p = k / n
    z2 = Z_95 * Z_95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(b: int, c: int) -> float | None:
    """Two-sided exact p of McNemar's test: b notes only the first cell got right, c only the second (the binomial
    test of b against b + c at 1/2, as statsmodels' mcnemar(exact=True)). None without discordant notes."""
    n = b + c
    if n == 0:
        return None
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), k <= n/2: the largest term, P(X = k), in log space (b + c runs to the tens
    # of thousands on 100,000 notes), times the sum of the terms below it relative to it, each the one above times
    # i / (n - i + 1); they fall off geometrically, so the sum stops once they no longer change it
    lg = math.lgamma
    log_top = lg(n + 1) - lg(k + 1) - lg(n - k + 1) + n * math.log(0.5)
    relative = term = 1.0
    for i in range(k, 0, -1):
        term *= i / (n - i + 1)
        relative += term
        if term < relative * 1e-17:
            break
    return min(1.0, 2 * math.exp(log_top + math.log(relative)))


def bootstrap(stat: Callable[[list[Any]], float | None], items: Sequence[Any], reps: int, seed: int
              ) -> tuple[float | None, float | None]:
    """Percentile 95% interval of `stat` over `reps` resamples of `items` (notes) with replacement; resamples where
    the statistic is undefined are left out. (None, None) when fewer than two notes or too few defined resamples."""
    if len(items) < 2 or reps < 1:
        return None, None
    rng = random.Random(seed)
    n = len(items)
    values = [v for v in (stat([items[rng.randrange(n)] for _ in range(n)]) for _ in range(reps)) if v is not None]
    return _interval(values, reps)


def _interval(values: list[float], reps: int) -> tuple[float | None, float | None]:
    """The 95% percentile interval of the defined resamples; (None, None) when fewer than half were defined."""
    if len(values) < max(2, reps // 2):
        return None, None
    values.sort()
    return _quantile(values, 0.025), _quantile(values, 0.975)


def bootstrap_counts(stat: Callable[[list[int]], float | None], counts: Sequence[int], reps: int, seed: int
                     ) -> tuple[float | None, float | None]:
    """`bootstrap` for notes given as how many there are of each kind (`counts`), for a statistic of those counts
    alone: `stat` gets a resample's counts, in the order of `counts`. A resample of the n = sum(counts) notes with
    replacement is a multinomial draw of n over the kinds with probabilities counts / n, which is what is drawn: the
    same distribution as `bootstrap` over the notes themselves, at O(kinds) a resample. (None, None) as `bootstrap`."""
    n = sum(counts)
    if n < 2 or reps < 1:
        return None, None
    np = _numpy()
    if np is not None:  # the same draws, vectorized: numpy's multinomial is a chain of exact binomials too
        kinds = [i for i, c in enumerate(counts) if c]
        drawn = np.random.default_rng(seed).multinomial(n, np.array([counts[i] for i in kinds]) / n, size=reps)
        if isinstance(stat, LinearStatistic):  # every resample's sums in one product
            values = [v for v in map(stat.finish, (drawn @ stat.matrix(np, kinds)).tolist()) if v is not None]
        else:
            resamples = np.zeros((reps, len(counts)), dtype=np.int64)
            resamples[:, kinds] = drawn
            values = [v for v in map(stat, resamples.tolist()) if v is not None]
    else:
        rng = random.Random(seed)
        draw = _multinomial_plan(counts)
        values = [v for v in (stat(draw(rng, n)) for _ in range(reps)) if v is not None]
    return _interval(values, reps)


def sampler() -> str:
    """What draws bootstrap_counts' resamples, for the record next to the seed: a seed gives the same intervals
    again with the same sampler ("numpy X.Y.Z": its default_rng(seed); "python": random.Random(seed) and `binomial`)."""
    np = _numpy()
    return "python" if np is None else f"numpy {np.__version__}"


def _numpy() -> Any:
    if USE_NUMPY is False:
        return None
    try:
        import numpy  # not a dependency: 1000 resamples of a dozen cells take a second in plain Python, ms in numpy
    except ImportError:
        if USE_NUMPY:
            raise
        return None
    return numpy


def multinomial(rng: random.Random, n: int, counts: Sequence[int]) -> list[int]:
    """n draws with replacement from a population with counts[i] members of kind i: how many of each kind."""
    if n and not sum(counts):
        raise ValueError("nothing to draw from")
    return _multinomial_plan(counts)(rng, n)


def _multinomial_plan(counts: Sequence[int]) -> Callable[[random.Random, int], list[int]]:
    """Multinomial draws as a chain of binomials: the kinds from the most common down, each kind's count a binomial
    draw of the draws left with the kind's share of the population left (exact: conditioning on the kinds before)."""
    if any(c < 0 for c in counts):
        raise ValueError("counts must be non-negative")
    order = sorted((i for i, c in enumerate(counts) if c), key=lambda i: -counts[i])
    plan = []
    left = sum(counts)
    for i in order:
        plan.append((i, counts[i] / left))  # the last kind's share is 1: it takes the draws left
        left -= counts[i]
    k = len(counts)

    def draw(rng: random.Random, n: int) -> list[int]:
        out = [0] * k
        uniform = rng.random
        for i, p in plan:
            if not n:
                break
            x = n if p >= 1.0 else _binomial(uniform, n, p)
            out[i] = x
            n -= x
        return out

    return draw


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw, exact (no normal approximation): the number of successes in n trials of probability p.
    Python 3.12 has random.binomialvariate; 3.11 does not, and this is the same pair of methods, so a seed gives the
    same draws on every Python."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial: n = {n}, p = {p}")
    return _binomial(rng.random, n, p)


def _binomial(uniform: Callable[[], float], n: int, p: float) -> int:
    if n == 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:  # the draw of the failures, so that p <= 1/2 below
        return n - _binomial(uniform, n, 1.0 - p)
    if n * p < 10.0:
        # Devroye (1986), the second waiting time method: the gaps between successes are geometric; count the
        # successes whose trial falls within the first n. O(n p) uniforms.
        log_q = math.log1p(-p)
        x = trial = 0
        while True:
            trial += math.floor(math.log(1.0 - uniform()) / log_q) + 1  # 1 - U is in (0, 1]: never log(0)
            if trial > n:
                return x
            x += 1
    # Hörmann (1993), BTRS: transformed rejection with squeeze, O(1) uniforms on average for n p >= 10.
    spq = math.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = lpq = m = h = 0.0
    ready = False
    while True:
        u = uniform() - 0.5
        us = 0.5 - abs(u)
        if us <= 0.0:  # U = 0 exactly: no transformed point
            continue
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        v = uniform()
        if us >= 0.07 and v <= v_r:  # the squeeze: inside the region where every point is accepted
            return k
        if not ready:
            alpha = (2.83 + 5.1 / b) * spq
            lpq = math.log(p / (1.0 - p))
            m = math.floor((n + 1) * p)  # the mode
            h = math.lgamma(m + 1) + math.lgamma(n - m + 1)
            ready = True
        v *= alpha / (a / (us * us) + b)
        # the acceptance test on the log scale (the paper's step 3.4 compares v itself: a misprint, log v is meant)
        if v <= 0.0 or math.log(v) <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - m) * lpq:
            return k


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def unit_counts(labels_per_unit: Sequence[Sequence[Hashable | None]]) -> list[Counter]:
    """Per note, the count of each label among its raters; a missing rating (None) is left out."""
    return [Counter(v for v in labels if v is not None) for labels in labels_per_unit]
