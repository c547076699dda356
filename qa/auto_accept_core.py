"""Auto-accept's threshold: the lowest model confidence above which the model's answers are
right often enough, with a stated confidence, to stand without a human. Pure (numpy, scipy).

Each human-checked image gives the model's confidence on it and whether its answer matched the
humans' result. For a threshold ``t`` the images at or above it are ``n`` trials with ``k``
successes; the one-sided Clopper-Pearson lower bound of the accuracy at confidence ``c`` is the
``1 - c`` quantile of Beta(k, n - k + 1) (0 when ``k`` is 0): the accuracy is at least that
with probability ``c`` whatever the true accuracy, without a normal approximation, which is
far off at accuracies near 1. The threshold is the lowest ``t`` whose bound reaches the
target with at least ``min_checked`` images above it. The bound holds for one threshold
fixed in advance; choosing the lowest of many that pass makes it a little optimistic, which
is why spot-checks keep measuring the images accepted after the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta


def lower_bound(successes: int, trials: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion (0 without trials or success)."""
    if trials <= 0 or successes <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def upper_bound(successes: int, trials: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound of a proportion (1 without trials, or when all
    succeeded)."""
    if trials <= 0 or successes >= trials:
        return 1.0
    return float(beta.ppf(confidence, successes + 1, trials - successes))


@dataclass(frozen=True)
class Threshold:
    """The chosen threshold (None: none reaches the target) and the figures of the images
    at or above it (of all checked images when there is none)."""

    threshold: float | None
    checked: int  # images at or above the threshold
    correct: int
    accuracy: float | None
    lower_bound: float
    reason: str  # why there is no threshold; "" when there is one


def choose_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    *,
    target: float,
    confidence: float,
    min_checked: int,
) -> Threshold:
    """The lowest confidence ``t`` such that the images scoring at least ``t`` number at
    least ``min_checked`` and their accuracy's lower bound reaches ``target``."""
    scores = np.asarray(confidences, dtype=float)
    right = np.asarray(correct, dtype=bool)
    total, total_right = len(scores), int(right.sum())
    if total < min_checked:
        return Threshold(
            None, total, total_right, total_right / total if total else None,
            lower_bound(total_right, total, confidence),
            f"{total} human-checked images with a prediction; at least {min_checked} are needed",
        )  # fmt: skip
    order = np.argsort(-scores, kind="stable")
    scores, right = scores[order], right[order]
    hits = np.cumsum(right)
    best: Threshold | None = None
    # Candidates are the distinct scores: at index j the images above are the first j + 1,
    # counting every image tied with the score at j.
    for j in range(total):
        if j + 1 < total and scores[j + 1] == scores[j]:
            continue
        n, k = j + 1, int(hits[j])
        if n < min_checked:
            continue
        bound = lower_bound(k, n, confidence)
        if bound >= target:
            best = Threshold(float(scores[j]), n, k, k / n, bound, "")
    if best is not None:
        return best
    # None passes: report the largest bound any threshold reaches with enough images.
    bounds = [
        (lower_bound(int(hits[j]), j + 1, confidence), j)
        for j in range(min_checked - 1, total)
        if j + 1 == total or scores[j + 1] != scores[j]
    ]
    bound, j = max(bounds)
    return Threshold(
        None, j + 1, int(hits[j]), int(hits[j]) / (j + 1), bound,
        f"no confidence threshold reaches {target:.1%} accuracy at {confidence:.0%} "
        f"confidence: the best, {float(scores[j]):.4f}, has {int(hits[j])} of {j + 1} "
        f"checked images right, a lower bound of {bound:.1%}",
    )  # fmt: skip
