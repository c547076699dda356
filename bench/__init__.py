"""Benchmarks: ``python -m bench [name ...]`` (``make bench``); see ``bench/__main__.py``."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``share`` of the values
    at or below it (``values`` need not be sorted; not empty)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * share) - 1, 0)]
