"""A simulated model: the predictions a model version would give an image. Pure.

It finds each true object with its class's recall (``recall``, per class, or one number for
all), except the objects it misses every time (``systematic``: those smaller than
``small_side`` of the image's scale, the way a detector trained at one resolution loses small
things); its shapes stray by ``jitter`` of the object's side; it gives the wrong class
``confusion`` of the time, and adds ``false_marks`` shapes a picture (Poisson) where nothing
is. Every kind of project has its model: a detector's boxes; a segmenter's polygons (each
vertex strays) or masks (the mask moves and grows or shrinks); a pose model's keypoints (each
visible point strays; its false marks are a true pose of the picture, of its own class, put
elsewhere; it never confuses classes, each its own skeleton); a classifier's one class, the
true one with the recall, else another.

Scores: every item gets a raw confidence, drawn from ``Beta(8, 1.5)`` for a real object and
``Beta(2, 5)`` for a false mark. ``calibration="calibrated"`` turns it into the probability
that the item is right given that raw value (Bayes with the two densities and the share of
real boxes), so a box scoring 0.8 is right 80% of the time; ``"over-confident"`` raises that
probability to the power 0.25 (0.5 becomes 0.84, 0.2 becomes 0.67), as detectors trained
with cross-entropy tend to be; ``"under-confident"`` squares it.

Every image draws from a random stream seeded by the model's seed and the image's key, so a
model answers the same image the same way whatever else it was asked.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.stats import beta as beta_dist

from qa.regions import polygon_area
from qa.sim.crowd import _decode, _encode, _shifted, extent

Item = dict[str, Any]
REAL_SCORE = (8.0, 1.5)
FALSE_SCORE = (2.0, 5.0)
CALIBRATIONS = ("calibrated", "over-confident", "under-confident")


@dataclass(frozen=True)
class SimModel:
    recall: float | Mapping[str, float] = 0.85
    calibration: str = "calibrated"
    false_marks: float = 0.3
    jitter: float = 0.04
    confusion: float = 0.02
    # Objects whose side (square root of the box's area) is below this share of the image's
    # scale are never found.
    small_side: float = 0.0
    seed: int = 0
    labels: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration is one of {', '.join(CALIBRATIONS)}")

    def class_recall(self, label: str) -> float:
        if isinstance(self.recall, Mapping):
            return float(self.recall.get(label, 0.0))
        return float(self.recall)

    def _score(self, rng: random.Random, real: bool, share_real: float) -> float:
        a, b = REAL_SCORE if real else FALSE_SCORE
        raw = rng.betavariate(a, b)
        p_real = share_real * float(beta_dist.pdf(raw, *REAL_SCORE))
        p_false = (1 - share_real) * float(beta_dist.pdf(raw, *FALSE_SCORE))
        calibrated = p_real / (p_real + p_false) if p_real + p_false else 0.5
        if self.calibration == "over-confident":
            return calibrated**0.25
        if self.calibration == "under-confident":
            return calibrated**2
        return calibrated

    def predict(
        self, key: Any, truth: Sequence[Item], width: int, height: int, kind: str = "bbox"
    ) -> list[Item]:
        """Items of ``kind`` with ``score`` for an image of ``truth`` (items of that kind)."""
        rng = random.Random(f"{self.seed}:{key}")
        labels = list(self.labels) or sorted({item["label"] for item in truth}) or ["object"]
        if kind == "classification":
            return self._classify(rng, truth, labels)
        scale = math.sqrt(width * height)
        shapes = _Shapes(kind, width, height)
        found: list[tuple[Item, bool]] = []
        for obj in truth:
            _, _, w, h = extent(kind, obj)
            if math.sqrt(w * h) < self.small_side * scale:
                continue
            if rng.random() >= self.class_recall(obj["label"]):
                continue
            moved = shapes.strayed(obj, rng, self.jitter, (w, h))
            if moved is None:
                continue
            label = obj["label"]
            # A pose model's class is its skeleton: it does not confuse them.
            if kind != "keypoints" and rng.random() < self.confusion and len(labels) > 1:
                label = rng.choice([lb for lb in labels if lb != label])
            found.append(({"label": label, **moved}, True))
        for _ in range(_poisson(rng, self.false_marks)):
            stray = shapes.stray(rng, truth)
            if stray is not None:
                # A stray pose keeps the class of the pose it copies (its skeleton).
                found.append(({"label": rng.choice(labels), **stray}, False))
        n_real = sum(1 for _, real in found if real)
        share = (n_real + 1) / (len(found) + 2)
        items = [{**item, "score": round(self._score(rng, real, share), 4)} for item, real in found]
        rng.shuffle(items)
        return items

    def _classify(self, rng: random.Random, truth: Sequence[Item], labels: list[str]) -> list[Item]:
        """One class: the true one with its class's recall, else another (a false mark)."""
        if not truth:
            return []
        right = truth[0]["label"]
        real = rng.random() < self.class_recall(right) or len(labels) < 2
        label = right if real else rng.choice([lb for lb in labels if lb != right])
        return [{"label": label, "score": round(self._score(rng, real, 0.5), 4)}]


class _Shapes:
    """A kind's geometry, as the model draws it on an image of ``width`` x ``height``."""

    def __init__(self, kind: str, width: int, height: int) -> None:
        if kind not in ("bbox", "polygon", "keypoints", "mask"):
            raise ValueError(f"no simulated model of {kind!r} projects")
        self.kind, self.width, self.height = kind, width, height

    def _point(self, x: float, y: float) -> list[float]:
        return [round(min(max(x, 0.0), self.width - 1.0), 2),
                round(min(max(y, 0.0), self.height - 1.0), 2)]  # fmt: skip

    def strayed(
        self, obj: Item, rng: random.Random, jitter: float, size: tuple[float, float]
    ) -> Item | None:
        """The object as the model finds it: each coordinate off by ``jitter`` of its side."""
        w, h = size
        if self.kind == "bbox":
            x, y = obj["bbox"][0], obj["bbox"][1]
            e = [rng.gauss(0, jitter) for _ in range(4)]
            x0, y0 = x + e[0] * w, y + e[1] * h
            x1, y1 = x + w + e[2] * w, y + h + e[3] * h
            return {"bbox": _clipped(x0, y0, x1, y1, self.width, self.height)}
        if self.kind == "polygon":
            points = [self._point(px + rng.gauss(0, jitter) * w, py + rng.gauss(0, jitter) * h)
                      for px, py in obj["points"]]  # fmt: skip
            return {"points": points} if polygon_area(points) > 1 else None
        if self.kind == "keypoints":
            return {"keypoints": [
                [*self._point(kx + rng.gauss(0, jitter) * w, ky + rng.gauss(0, jitter) * h), 2]
                if v else [0.0, 0.0, 0]
                for kx, ky, v in obj["keypoints"]
            ]}  # fmt: skip
        mask = _decode(obj["rle"])
        dx, dy = round(rng.gauss(0, jitter) * w), round(rng.gauss(0, jitter) * h)
        mask = _shifted(mask, dx, dy)
        grow = round(rng.gauss(0, jitter / 2) * math.sqrt(w * h))
        if grow:
            kernel = np.ones((2 * abs(grow) + 1, 2 * abs(grow) + 1), dtype=np.uint8)
            mask = np.asarray((cv2.dilate if grow > 0 else cv2.erode)(mask, kernel), np.uint8)
        return {"rle": _encode(mask)} if mask.any() else None

    def stray(self, rng: random.Random, truth: Sequence[Item]) -> Item | None:
        """A shape where nothing is."""
        w, h = rng.uniform(0.03, 0.3) * self.width, rng.uniform(0.03, 0.3) * self.height
        x, y = rng.uniform(0, self.width - w), rng.uniform(0, self.height - h)
        if self.kind == "bbox":
            return {"bbox": [x, y, w, h]}
        if self.kind == "polygon":
            return {"points": [self._point(x + w / 2, y), self._point(x + w, y + h),
                               self._point(x, y + h)]}  # fmt: skip
        if self.kind == "keypoints":
            if not truth:
                return None
            # A pose of the picture's, moved: the layout of a real one, in the wrong place.
            pose = rng.choice(list(truth))
            px, py, _, _ = extent(self.kind, pose)
            return {"label": pose["label"], "keypoints": [
                [*self._point(kx - px + x, ky - py + y), 2] if v else [0.0, 0.0, 0]
                for kx, ky, v in pose["keypoints"]
            ]}  # fmt: skip
        mask = np.zeros((self.height, self.width), dtype=np.uint8)
        mask[int(y) : int(y + h) + 1, int(x) : int(x + w) + 1] = 1
        return {"rle": _encode(mask)}


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: small means only."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _clipped(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> list[float]:
    x0, y0 = min(max(x0, 0.0), width - 2.0), min(max(y0, 0.0), height - 2.0)
    x1, y1 = min(max(x1, x0 + 1), float(width)), min(max(y1, y0 + 1), float(height))
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def model_parse(spec: str, *, seed: int = 0, labels: Sequence[str] = ()) -> SimModel:
    """``recall=0.85,calibration=over-confident,small=0.05,false=0.3`` (``crowdsim --model``);
    ``recall`` may be per class: ``recall=circle:0.9/star:0.6``."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name == "recall":
            if ":" in value:
                values["recall"] = {
                    label: float(r) for label, r in (c.split(":", 1) for c in value.split("/"))
                }
            else:
                values["recall"] = float(value)
        elif name == "calibration":
            values["calibration"] = value.strip()
        elif name == "small":
            values["small_side"] = float(value)
        elif name == "false":
            values["false_marks"] = float(value)
        elif name == "jitter":
            values["jitter"] = float(value)
        else:
            raise ValueError(
                f"unknown model setting {name!r} (recall, calibration, small, false, jitter)"
            )
    return SimModel(seed=seed, labels=tuple(labels), **values)
