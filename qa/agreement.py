"""Agreement between annotators on nominal labels. Pure (numpy only; no Django).

Chance-corrected coefficients, 1 for perfect agreement and 0 for agreement at chance level:

- :func:`cohen_kappa`: two coders on the same items;
- :func:`fleiss_kappa`: any number of raters per item, from a table of counts;
- :func:`krippendorff_alpha_nominal`: any coders, any missing values, via the coincidence
  matrix (Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011).

Degenerate data: when the expected agreement is already perfect (every value is the same
category), the coefficients are 0/0; they are defined as 1.0 here, since the coders did agree
on everything (the same choice as NLTK's, and so crowd-kit's, alpha). Data with nothing to
compare raises :class:`ValueError`.

Triples are ``(unit, coder, value)``: one coder's label for one unit (a task, or one matched
shape). Missing values are simply absent triples.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

CoderT = TypeVar("CoderT", bound="SupportsRichComparison")
Triple = tuple[Hashable, Any, Hashable]


def _chance_corrected(observed: float, expected: float) -> float:
    if expected >= 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two coders' labels for the same items (``a[i]`` and ``b[i]``).

    When both coders used one and the same category throughout, kappa is defined as 1.0.
    """
    if len(a) != len(b):
        raise ValueError(f"the coders labelled different numbers of items: {len(a)}, {len(b)}")
    if not a:
        raise ValueError("no items to compare")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return _chance_corrected(observed, expected)


def fleiss_kappa(counts: npt.ArrayLike) -> float:
    """Fleiss' kappa from ``counts`` (items x categories): how many raters chose each category.

    Items may have different numbers of raters: each item with at least two raters contributes
    its own agreement ``P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))`` with equal weight, and
    category shares are taken over all ratings of those items; items with fewer than two
    raters are dropped. With the same number of raters everywhere this is Fleiss' kappa.
    When every rating is in one category, kappa is defined as 1.0.
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"expected an items x categories table, got shape {table.shape}")
    if (table < 0).any():
        raise ValueError("counts must not be negative")
    raters = table.sum(axis=1)
    table, raters = table[raters >= 2], raters[raters >= 2]
    if len(table) == 0:
        raise ValueError("no item has two or more raters")
    per_item = ((table**2).sum(axis=1) - raters) / (raters * (raters - 1))
    shares = table.sum(axis=0) / raters.sum()
    return _chance_corrected(float(per_item.mean()), float((shares**2).sum()))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def krippendorff_alpha_from_triples(triples: Iterable[Triple]) -> float:
    """Krippendorff's alpha for nominal values from ``(unit, coder, value)`` triples.

    Units with fewer than two values are not pairable and are left out. Every value counts,
    so a coder who labelled a unit twice counts twice. When all pairable values are one
    category, alpha is defined as 1.0.
    """
    by_unit: dict[Hashable, list[Hashable]] = defaultdict(list)
    for unit, _coder, value in triples:
        if not _is_missing(value):
            by_unit[unit].append(value)
    categories: dict[Hashable, int] = {}
    pairable = [values for values in by_unit.values() if len(values) >= 2]
    for values in pairable:
        for value in values:
            categories.setdefault(value, len(categories))
    if not pairable:
        raise ValueError("no unit has two or more values")
    # Coincidence matrix: o[c, k] = sum over units of n_uc * n_uk / (n_u - 1), where the
    # diagonal counts ordered pairs of distinct values within a unit (n_uc * (n_uc - 1)).
    per_unit = np.zeros((len(pairable), len(categories)))
    for row, values in enumerate(pairable):
        for value, count in Counter(values).items():
            per_unit[row, categories[value]] = count
    n_u = per_unit.sum(axis=1)
    coincidences = (per_unit.T / (n_u - 1)) @ per_unit
    coincidences -= np.diag((per_unit / (n_u - 1)[:, None]).sum(axis=0))
    n_c = coincidences.sum(axis=1)
    n = n_c.sum()
    observed_disagreement = n - np.trace(coincidences)
    expected_disagreement = (n * n - (n_c**2).sum()) / (n - 1)
    if expected_disagreement <= 0:
        return 1.0
    return float(1.0 - observed_disagreement / expected_disagreement)


def krippendorff_alpha_nominal(units: Sequence[Sequence[Any]] | npt.ArrayLike) -> float:
    """Krippendorff's alpha for nominal values from a reliability data matrix (coders x units).

    Missing values are None or NaN. See :func:`krippendorff_alpha_from_triples`.
    """
    rows = np.asarray(units, dtype=object)
    if rows.ndim != 2:
        raise ValueError(f"expected a coders x units matrix, got shape {rows.shape}")
    triples = [
        (unit, coder, value)
        for coder, row in enumerate(rows)
        for unit, value in enumerate(row)
        if not _is_missing(value)
    ]
    return krippendorff_alpha_from_triples(triples)


def pairwise_cohen(
    triples: Iterable[tuple[Hashable, CoderT, Hashable]], *, min_items: int = 5
) -> dict[tuple[CoderT, CoderT], tuple[float, int]]:
    """Cohen's kappa of every pair of coders with at least ``min_items`` units in common.

    Keys are ``(coder_a, coder_b)`` with ``coder_a < coder_b``; values are ``(kappa, n_items)``.
    If a coder labelled a unit more than once, the last label counts.
    """
    labels: dict[CoderT, dict[Hashable, Hashable]] = defaultdict(dict)
    for unit, coder, value in triples:
        if not _is_missing(value):
            labels[coder][unit] = value
    out: dict[tuple[CoderT, CoderT], tuple[float, int]] = {}
    for first, second in combinations(sorted(labels), 2):
        shared = labels[first].keys() & labels[second].keys()
        if len(shared) < max(min_items, 1):
            continue
        units = list(shared)
        kappa = cohen_kappa([labels[first][u] for u in units], [labels[second][u] for u in units])
        out[(first, second)] = (kappa, len(units))
    return out


def mean_pairwise(pairwise: Mapping[Any, tuple[float, int]]) -> float | None:
    """Mean of pairwise coefficients weighted by their numbers of shared items; None if none."""
    total = sum(n for _, n in pairwise.values())
    if not total:
        return None
    return sum(value * n for value, n in pairwise.values()) / total


def coder_mean_pairwise(
    pairwise: Mapping[tuple[CoderT, CoderT], tuple[float, int]],
) -> dict[CoderT, float]:
    """Each coder's weighted mean coefficient with every coder it was paired with."""
    per_coder: dict[CoderT, dict[tuple[CoderT, CoderT], tuple[float, int]]] = defaultdict(dict)
    for pair, value in pairwise.items():
        for coder in pair:
            per_coder[coder][pair] = value
    means = {coder: mean_pairwise(pairs) for coder, pairs in per_coder.items()}
    return {coder: mean for coder, mean in means.items() if mean is not None}


def confusion_matrix(
    pairs: Iterable[tuple[str | None, str | None]], labels: Sequence[str]
) -> npt.NDArray[np.int64]:
    """Counts of (reference label, candidate label) pairs; rows reference, columns candidate.

    Row and column ``len(labels)`` stand for "none": ``(label, None)`` is a miss and
    ``(None, label)`` an extra.
    """
    index = {label: i for i, label in enumerate(labels)}
    none = len(labels)
    out = np.zeros((none + 1, none + 1), dtype=np.int64)
    for reference, candidate in pairs:
        if reference is None and candidate is None:
            raise ValueError("a pair needs a reference label, a candidate label, or both")
        for label in (reference, candidate):
            if label is not None and label not in index:
                raise ValueError(f"unknown label {label!r}")
        row = none if reference is None else index[reference]
        col = none if candidate is None else index[candidate]
        out[row, col] += 1
    return out
