"""How well a model's scores say how often it is right: reliability bins and calibration
error. Pure (numpy only).

Each predicted object has a score in [0, 1] and is either correct (matched to a gold object of
the same label at the project's IoU threshold; for classification, the gold label) or not. The
scores are cut into ``bins`` equal-width bins; a calibrated model's objects scoring about 0.8
are right about 80% of the time. The expected calibration error (ECE) is the objects' share
in each bin times the gap between the bin's mean score and its accuracy, summed; the maximum
calibration error (MCE) is the largest gap of a bin holding objects; the Brier score is the
mean squared difference between score and outcome. Objects without a score are left out:
there is nothing to calibrate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 10


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    mean_score: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    objects: int
    ece: float | None
    mce: float | None
    brier: float | None
    # Mean score over all objects against their accuracy: above it, the model is
    # over-confident on the whole; below, under-confident.
    mean_score: float | None
    accuracy: float | None
    bins: tuple[CalibrationBin, ...]

    def json(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "objects": self.objects,
            "ece": r(self.ece),
            "mce": r(self.mce),
            "brier": r(self.brier),
            "mean_score": r(self.mean_score),
            "accuracy": r(self.accuracy),
            "bins": [
                {
                    "lower": round(b.lower, 4),
                    "upper": round(b.upper, 4),
                    "count": b.count,
                    "mean_score": r(b.mean_score),
                    "accuracy": r(b.accuracy),
                }
                for b in self.bins
            ],
        }


def calibration(
    scores: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, *, bins: int = BINS
) -> Calibration:
    """Reliability bins, ECE, MCE and Brier score of ``scores`` against ``correct``."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    c = np.asarray(correct, dtype=np.float64)
    if s.shape != c.shape:
        raise ValueError("scores and correct must have the same length")
    edges = np.linspace(0.0, 1.0, bins + 1)
    if not s.size:
        empty = tuple(
            CalibrationBin(float(edges[k]), float(edges[k + 1]), 0, None, None) for k in range(bins)
        )
        return Calibration(0, None, None, None, None, None, empty)
    # A score of exactly 1 belongs in the last bin.
    index = np.minimum((s * bins).astype(np.intp), bins - 1)
    counts = np.bincount(index, minlength=bins)
    score_sums = np.bincount(index, weights=s, minlength=bins)
    hit_sums = np.bincount(index, weights=c, minlength=bins)
    out = []
    gaps = []
    for k in range(bins):
        n = int(counts[k])
        mean = float(score_sums[k] / n) if n else None
        accuracy = float(hit_sums[k] / n) if n else None
        if n:
            gaps.append((n, abs(float(mean) - float(accuracy))))  # type: ignore[arg-type]
        out.append(CalibrationBin(float(edges[k]), float(edges[k + 1]), n, mean, accuracy))
    total = int(s.size)
    return Calibration(
        objects=total,
        ece=sum(n * gap for n, gap in gaps) / total,
        mce=max(gap for _, gap in gaps),
        brier=float(np.mean((s - c) ** 2)),
        mean_score=float(s.mean()),
        accuracy=float(c.mean()),
        bins=tuple(out),
    )
