"""Does the model bias the crowd? The comparison of answers given with pre-labels and without
(the held-out share), pure: gold scores by the mean with Welch's interval, time per task by the
median with a bootstrap interval. No Django import."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261203  # fixed: the same data always gives the same interval
CONFIDENCE = 0.95


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def welch(with_: Sequence[float], without: Sequence[float]) -> dict[str, Any] | None:
    """The difference of means (with minus without), its 95% interval by Welch's t and the
    two-sided p-value; None with fewer than two values on a side."""
    a, b = np.asarray(with_, float), np.asarray(without, float)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"estimate": _round(diff), "ci95": [_round(diff), _round(diff)],
                "p_value": 1.0 if diff == 0 else 0.0}  # fmt: skip
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return {"estimate": _round(diff), "ci95": [_round(diff - t * se), _round(diff + t * se)],
            "p_value": _round(p)}  # fmt: skip


def median_difference(with_: Sequence[float], without: Sequence[float]) -> dict[str, Any] | None:
    """The difference of medians (with minus without) and its 95% percentile bootstrap
    interval (each side resampled on its own); None with fewer than two values on a side."""
    a, b = np.asarray(with_, float), np.asarray(without, float)
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ma = np.median(a[rng.integers(0, len(a), (BOOTSTRAP_RESAMPLES, len(a)))], axis=1)
    mb = np.median(b[rng.integers(0, len(b), (BOOTSTRAP_RESAMPLES, len(b)))], axis=1)
    lo, hi = np.quantile(ma - mb, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return {"estimate": _round(float(np.median(a) - np.median(b)), 2),
            "ci95": [_round(float(lo), 2), _round(float(hi), 2)]}  # fmt: skip


def arm(gold_scores: Sequence[float], seconds: Sequence[float], answers: int) -> dict[str, Any]:
    return {
        "answers": answers,
        "gold_answers": len(gold_scores),
        "gold_score_mean": _round(float(np.mean(gold_scores))) if len(gold_scores) else None,
        "timed_answers": len(seconds),
        "median_seconds": _round(float(np.median(seconds)), 2) if len(seconds) else None,
    }


def gold_flag(difference: dict[str, Any] | None) -> str | None:
    """What the dashboard flags: ``"lower_with_prelabels"`` when the 95% interval of the gold
    score difference lies below 0 (the model leads the crowd astray),
    ``"higher_with_prelabels"`` when above, None when it holds 0 or there is too little gold."""
    if difference is None:
        return None
    low, high = difference["ci95"]
    if high is not None and high < 0:
        return "lower_with_prelabels"
    if low is not None and low > 0:
        return "higher_with_prelabels"
    return None


def compare(
    with_gold: Sequence[float],
    without_gold: Sequence[float],
    with_seconds: Sequence[float],
    without_seconds: Sequence[float],
    *,
    with_answers: int,
    without_answers: int,
    with_gold_tasks: Sequence[float] | None = None,
    without_gold_tasks: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Both arms, the differences between them (with minus without) and the flag.

    ``*_gold_tasks``: each gold task's mean gold score on that side. The holdout draw
    withholds pre-labels by task, so the task is the unit the comparison is made over: a gold
    image many workers answered counts once, and a side drawn with few (perhaps easy or hard)
    gold images does not pass for a large sample. Without them, each answer is its own unit."""
    gold = welch(
        with_gold if with_gold_tasks is None else with_gold_tasks,
        without_gold if without_gold_tasks is None else without_gold_tasks,
    )
    return {
        "with_prelabels": arm(with_gold, with_seconds, with_answers),
        "without_prelabels": arm(without_gold, without_seconds, without_answers),
        "gold_score_difference": gold,
        "gold_score_flag": gold_flag(gold),
        "median_seconds_difference": median_difference(with_seconds, without_seconds),
    }
