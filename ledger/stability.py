"""Statistics of a study, in plain Python like `agreement`: agreement among repeats (Fleiss' kappa, Krippendorff's
alpha for nominal data), McNemar's test for two cells on the same notes, Wilson's interval for a proportion, and a
percentile bootstrap over notes. The tests check each against statsmodels, the `krippendorff` package and
scikit-learn."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .agreement import Z_95

UnitCounts = Sequence[Counter]  # per note: how many raters (repeats) gave each label


def fleiss_kappa(units: UnitCounts) -> float | None:
    """Fleiss' kappa (1971) over notes rated by the same number of raters; None when undefined (fewer than two
    notes or raters, or every rating the same label)."""
    if not units:
        return None
    m = sum(units[0].values())
    if m < 2 or any(sum(u.values()) != m for u in units):
        return None
    n_units = len(units)
    totals: Counter = Counter()
    agree = 0.0
    for u in units:
        totals.update(u)
        agree += (sum(c * c for c in u.values()) - m) / (m * (m - 1))
    p_bar = agree / n_units
    p_e = sum((t / (n_units * m)) ** 2 for t in totals.values())
    if math.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha(units: UnitCounts) -> float | None:
    """Krippendorff's alpha for nominal data; notes with fewer than two ratings are not pairable and left out. None
    when undefined (no pairable notes, or one label in all)."""
    pairable = [u for u in units if sum(u.values()) >= 2]
    totals: Counter = Counter()
    observed = 0.0
    for u in pairable:
        m_u = sum(u.values())
        totals.update(u)
        observed += (m_u * m_u - sum(c * c for c in u.values())) / (m_u - 1)
    n = sum(totals.values())
    expected = n * n - sum(c * c for c in totals.values())
    if n < 2 or expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


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
    # log-space terms: b + c runs to the tens of thousands on 100,000 notes
    log_half_n = n * math.log(0.5)
    lg = math.lgamma
    tail = sum(math.exp(lg(n + 1) - lg(i + 1) - lg(n - i + 1) + log_half_n) for i in range(k + 1))
    return min(1.0, 2 * tail)


def bootstrap(stat: Callable[[list[Any]], float | None], items: Sequence[Any], reps: int, seed: int
              ) -> tuple[float | None, float | None]:
    """Percentile 95% interval of `stat` over `reps` resamples of `items` (notes) with replacement; resamples where
    the statistic is undefined are left out. (None, None) when fewer than two notes or too few defined resamples."""
    if len(items) < 2 or reps < 1:
        return None, None
    rng = random.Random(seed)
    n = len(items)
    values = []
    for _ in range(reps):
        v = stat([items[rng.randrange(n)] for _ in range(n)])
        if v is not None:
            values.append(v)
    if len(values) < max(2, reps // 2):
        return None, None
    values.sort()
    return _quantile(values, 0.025), _quantile(values, 0.975)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def unit_counts(labels_per_unit: Sequence[Sequence[Hashable | None]]) -> list[Counter]:
    """Per note, the count of each label among its raters; a missing rating (None) is left out."""
    return [Counter(v for v in labels if v is not None) for labels in labels_per_unit]
