"""Agreement statistics from a confusion matrix, in plain Python (no numpy, scipy or scikit-learn at run time).

Rows are the first rater (run A, or the gold standard), columns the second (run B, or the run under evaluation). The
tests check every figure against scikit-learn and statsmodels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Z_95 = 1.959963984540054  # the 0.975 quantile of the standard normal


@dataclass(frozen=True)
class Confusion:
    labels: tuple[Any, ...]
    matrix: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        return sum(map(sum, self.matrix))

    @property
    def agree(self) -> int:
        return sum(self.matrix[i][i] for i in range(len(self.labels)))


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with its asymptotic standard error (Fleiss, Cohen & Everitt 1969, as statsmodels computes it)
    and the normal 95% interval. kappa is None when it is undefined: no pairs, or both raters used one category."""

    kappa: float | None
    se: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ClassScore:
    label: Any
    precision: float
    recall: float
    f1: float
    support: int


def label_order(values: Iterable[Hashable], preferred: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The labels that occur, in the order of `preferred` (an answer's choices), then the rest by their text."""
    seen = set(values)
    ordered = [v for v in preferred if v in seen]
    rest = sorted((v for v in seen if v not in set(ordered)), key=lambda v: (type(v).__name__, str(v)))
    return tuple(ordered + rest)


def confusion(pairs: Iterable[tuple[Any, Any]], preferred: Sequence[Any] = ()) -> Confusion:
    return confusion_from_counts(Counter(pairs), preferred)


def confusion_from_counts(counts: Mapping[tuple[Any, Any], int], preferred: Sequence[Any] = ()) -> Confusion:
    """The matrix of (first, second) -> how many; labels that occur, `preferred` first."""
    labels = label_order([a for a, _ in counts] + [b for _, b in counts], preferred)
    index = {label: i for i, label in enumerate(labels)}
    rows = [[0] * len(labels) for _ in labels]
    for (a, b), n in counts.items():
        rows[index[a]][index[b]] += n
    return Confusion(labels, tuple(tuple(r) for r in rows))


def cohen_kappa(c: Confusion) -> Kappa:
    n = c.n
    if n == 0:
        return Kappa(None, None, None, None)
    k = len(c.labels)
    p = [[cell / n for cell in row] for row in c.matrix]
    rows = [sum(p[i]) for i in range(k)]
    cols = [sum(p[i][j] for i in range(k)) for j in range(k)]
    observed = sum(p[i][i] for i in range(k))
    expected = sum(rows[i] * cols[i] for i in range(k))
    if math.isclose(expected, 1.0):
        return Kappa(None, None, None, None)
    kappa = (observed - expected) / (1 - expected)
    # Large-sample variance of kappa under the alternative (not under kappa = 0): the interval is about kappa.
    a = sum(p[i][i] * (1 - (rows[i] + cols[i]) * (1 - kappa)) ** 2 for i in range(k))
    b = (1 - kappa) ** 2 * sum(p[i][j] * (cols[i] + rows[j]) ** 2 for i in range(k) for j in range(k) if i != j)
    c_term = (kappa - expected * (1 - kappa)) ** 2
    variance = max(0.0, (a + b - c_term) / (1 - expected) ** 2 / n)
    se = math.sqrt(variance)
    return Kappa(kappa, se, kappa - Z_95 * se, kappa + Z_95 * se)


def class_scores(c: Confusion) -> list[ClassScore]:
    """Precision, recall and F1 per label, the second rater (columns) predicting the first (rows); 0 where a ratio
    has no denominator (scikit-learn's zero_division=0)."""
    k = len(c.labels)
    out = []
    for i, label in enumerate(c.labels):
        tp = c.matrix[i][i]
        predicted = sum(c.matrix[r][i] for r in range(k))
        support = sum(c.matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (predicted + support) if predicted + support else 0.0
        out.append(ClassScore(label, precision, recall, f1, support))
    return out


def averages(scores: list[ClassScore]) -> dict[str, dict[str, float]]:
    """Macro (every label counts the same) and weighted (by support) means of precision, recall and F1."""
    total = sum(s.support for s in scores)
    out = {}
    for name, weight in (("macro", lambda s: 1 / len(scores)), ("weighted", lambda s: s.support / total if total else 0.0)):
        out[name] = {m: sum(getattr(s, m) * weight(s) for s in scores) if scores else 0.0
                     for m in ("precision", "recall", "f1")}
    return out


def accuracy(c: Confusion) -> float | None:
    return c.agree / c.n if c.n else None
