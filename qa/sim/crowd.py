"""Simulated workers: they turn a task's truth into an answer with their own skill. Pure.

A worker sees what an API client sees (the kind, the labels and their keypoint names, the
image size and the task's ``region``) plus the truth of the whole image, which only the
simulator knows. They clip the truth to the region (coordinates stay full-image pixels),
then answer with their behaviour's skill:

- ``careful``: right labels, 1.5 px of jitter, rare misses and extra shapes, slow;
- ``sloppy``: more wrong labels, 4 px of jitter, misses 10% and adds shapes, faster;
- ``spammer``: answers that ignore the image, clicked through ten times faster than a
  careful worker's: random (odd-numbered spammers) or always the same (even-numbered: the
  first label, or nothing marked);
- ``adversary``: careful on a share of its tasks and deliberately wrong on the rest. It
  would like to answer only gold carefully, but gold looks like any other task to an API
  client, so it cannot tell which tasks to be careful on;
- ``dropout``: careful, but now and then takes a lease and leaves without answering.

Pre-labels: a worker anchors on the model's objects to the degree ``anchoring`` (0..1). Given
a lease's pre-labels (shapes of the project's kind, or a class), it keeps each one as it is
with that probability, the model's mistakes with it (a wrong label, a stray shape, a
misplaced one); otherwise it judges it: it redraws the object the pre-label marks (the one
whose bounding box it overlaps most) with its own skill, or deletes a pre-label that marks
nothing. An object the model missed is left missed with that same probability, else drawn
as the worker would without pre-labels. A task held out (no
pre-labels) is answered on the worker's own. Keeping a pre-label takes a fraction
(``VERIFY_SHARE``) of the time drawing it would, so answers with pre-labels are faster. Spammers
and an adversary's dishonest answers ignore pre-labels.

Masks are painted: a worker's mask is the true one moved by about half its jitter and grown
or shrunk at its edge by about as much; an extra mask is a square of random size; and since
a semantic project takes no overlapping masks, every answer's masks are made disjoint (a
later mask gives up the pixels an earlier one holds), whatever the project's mode.

Time per task is lognormal around a median that depends on the kind and on what the worker
marks (``TIMES``: seconds a task plus seconds a shape or point drawn), scaled by the
behaviour's pace and by the worker's own speed (some people are quicker than others). Every
worker draws from its own random streams seeded by the run's seed and its name, so a run is
repeatable.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from qa.regions import clip_polygon, polygon_area

Item = dict[str, Any]
MAX_EXTRA = 3  # extra shapes one answer may add
MIN_VISIBLE = 0.25  # of an object's area (or keypoints) inside the region for a worker to mark it


@dataclass(frozen=True)
class Skill:
    accuracy: float  # chance a label is right
    jitter: float  # standard deviation of each coordinate, pixels
    miss_rate: float  # chance an object is left out
    false_positive_rate: float  # chance (repeated) of marking something that is not there


@dataclass(frozen=True)
class Behaviour:
    name: str
    skill: Skill
    pace: float  # times ``TIMES``' medians: a careful worker takes 1, a spammer a fraction
    spread: float = 0.4  # sigma of the lognormal time per task
    skip_rate: float = 0.0
    dropout_rate: float = 0.0  # chance to abandon a leased task and leave
    honest_share: float = 1.0  # share of tasks answered with skill; the rest deliberately wrong
    spammer: bool = False


@dataclass(frozen=True)
class Times:
    task: float  # median seconds to look at a task and hand it in, whatever is marked
    mark: float  # median seconds per shape drawn (or point placed, for keypoints)


# Median times of a careful worker, from published annotation studies (the generated scenes
# hold 2-6 simple shapes, so the per-object figures are the low end of those for photos):
# - classification: picking one of 4 classes of the dominant shape; Papadopoulos et al.,
#   "We don't need no bounding-boxes" (CVPR 2016) measure 1.6 s for a yes/no verification of
#   one class, and choosing among several classes takes a few seconds;
# - bbox: Papadopoulos et al., "Extreme clicking for efficient object annotation" (ICCV 2017)
#   measure 7.0 s per box by extreme clicking and 34.5 s for the classic drag-and-adjust method
#   (Su et al. 2012, 25.5 s without quality checks); 8 s per box for these simple shapes;
# - polygon: Lin et al., "Microsoft COCO" (ECCV 2014) report about 79 s per instance outline
#   on photos; Benenson et al., "Large-scale interactive object segmentation with human
#   annotators" (CVPR 2019) tens of seconds per polygon; 20 s per shape of 3-10 vertices here;
# - keypoints: a point is one click, about 1.75 s each in extreme clicking (4 clicks in 7 s);
#   2 s a point, as a worker also has to find and name it;
# - mask: Benenson et al. (CVPR 2019) find painting or correcting a mask takes about as long
#   as a polygon of the same object; 20 s a shape.
TIMES: dict[str, Times] = {
    "classification": Times(task=3.0, mark=0.0),
    "bbox": Times(task=3.0, mark=8.0),
    "polygon": Times(task=3.0, mark=20.0),
    "keypoints": Times(task=3.0, mark=2.0),
    "mask": Times(task=3.0, mark=20.0),
}
WORKER_SPEED_SPREAD = 0.25  # sigma of a worker's own lognormal speed factor
# Checking and keeping a pre-label takes this share of the time drawing it would: published
# studies of model-assisted box annotation find pre-labels cut drawing time by 25-75%
# (e.g. Papadopoulos et al. 2016, box verification at 1.6 s against 7-35 s drawing).
VERIFY_SHARE = 0.25
PRELABEL_MATCH_IOU = 0.5  # a pre-label "marks" the true object it overlaps this much


CAREFUL = Skill(accuracy=0.97, jitter=1.5, miss_rate=0.02, false_positive_rate=0.02)
BEHAVIOURS: dict[str, Behaviour] = {
    "careful": Behaviour("careful", CAREFUL, pace=1.0, skip_rate=0.01),
    "sloppy": Behaviour(
        "sloppy",
        Skill(accuracy=0.85, jitter=4.0, miss_rate=0.1, false_positive_rate=0.08),
        pace=0.65,
        spread=0.5,
        skip_rate=0.03,
    ),
    "spammer": Behaviour("spammer", Skill(0.0, 0.0, 0.0, 0.0), pace=0.1, spread=0.3, spammer=True),
    "adversary": Behaviour("adversary", CAREFUL, pace=0.8, honest_share=0.35),
    "dropout": Behaviour("dropout", CAREFUL, pace=1.1, spread=0.6, dropout_rate=0.2),
}


def crowd_parse(spec: str) -> list[tuple[str, int]]:
    """``"careful:6,sloppy:3"`` -> ``[("careful", 6), ("sloppy", 3)]``; ValueError saying what
    is wrong otherwise."""
    crowd: list[tuple[str, int]] = []
    seen: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        name = name.strip()
        if name not in BEHAVIOURS:
            raise ValueError(
                f"Unknown behaviour {name!r} in the crowd; use {', '.join(BEHAVIOURS)}."
            )
        if name in seen:
            raise ValueError(f"Behaviour {name!r} is given twice in the crowd.")
        seen.add(name)
        try:
            number = int(count) if count.strip() else 1
        except ValueError:
            raise ValueError(f"{part!r}: the count after ':' must be a whole number.") from None
        if not 0 <= number <= 1000:
            raise ValueError(f"{part!r}: between 0 and 1000 workers per behaviour.")
        if number:
            crowd.append((name, number))
    if not crowd:
        raise ValueError('The crowd is empty; give e.g. "careful:6,sloppy:3,spammer:2".')
    return crowd


@dataclass(frozen=True)
class TaskView:
    """What an API client sees of a leased task."""

    kind: str
    keypoints: Mapping[str, Sequence[str]]  # label -> keypoint names, in the project's order
    width: int
    height: int
    region: Sequence[float]  # [x, y, w, h]

    @property
    def labels(self) -> list[str]:
        return list(self.keypoints)


def _clip_box(box: Sequence[float], region: Sequence[float]) -> list[float]:
    rx, ry, rw, rh = region
    x0, y0 = max(box[0], rx), max(box[1], ry)
    x1, y1 = min(box[0] + box[2], rx + rw), min(box[1] + box[3], ry + rh)
    return [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)]


def visible(kind: str, truth: Sequence[Item], region: Sequence[float]) -> list[Item]:
    """The truth as seen through the region: shapes clipped to it (those mostly outside are
    left out), keypoints outside it absent."""
    out: list[Item] = []
    for item in truth:
        if kind == "bbox":
            box = item["bbox"]
            clipped = _clip_box(box, region)
            if clipped[2] * clipped[3] >= MIN_VISIBLE * box[2] * box[3] > 0:
                out.append({**item, "bbox": clipped})
        elif kind == "polygon":
            points = clip_polygon(item["points"], region)
            whole = polygon_area(item["points"])
            if len(points) >= 3 and polygon_area(points) >= MIN_VISIBLE * whole > 0:
                out.append({**item, "points": points})
        elif kind == "keypoints":
            rx, ry, rw, rh = region
            points = [
                [x, y, v] if v and rx <= x <= rx + rw and ry <= y <= ry + rh else [0.0, 0.0, 0]
                for x, y, v in item["keypoints"]
            ]
            labelled = sum(1 for k in item["keypoints"] if k[2])
            shown = sum(1 for k in points if k[2])
            if shown and shown >= MIN_VISIBLE * labelled:
                out.append({**item, "keypoints": points})
        else:
            out.append(dict(item))
    return out


class SimWorker:
    """One simulated worker: a behaviour and its own random stream."""

    def __init__(
        self, behaviour: Behaviour, number: int, *, seed: int, anchoring: float = 0.0
    ) -> None:
        if not 0.0 <= anchoring <= 1.0:
            raise ValueError("anchoring is between 0 and 1")
        self.behaviour = behaviour
        self.number = number
        self.anchoring = anchoring
        self.name = f"sim-{behaviour.name}-{number}"
        self.rng = random.Random(f"worker:{seed}:{self.name}")
        # Half of the spammers always give the same answer, the others random ones.
        self.constant = behaviour.spammer and number % 2 == 0
        # A stream of its own, so that the speed does not shift the answers' draws.
        self.speed = random.Random(f"speed:{seed}:{self.name}").lognormvariate(
            0.0, WORKER_SPEED_SPREAD
        )

    def __repr__(self) -> str:
        return f"<SimWorker {self.name}>"

    def median_seconds(self, kind: str = "classification", marks: int = 0, kept: int = 0) -> float:
        """This worker's median time for a task of ``kind`` where it marks ``marks`` shapes
        (points, for keypoints) and keeps ``kept`` pre-labels as they are."""
        times = TIMES[kind]
        work = times.task + times.mark * (marks + VERIFY_SHARE * kept)
        return work * self.behaviour.pace * self.speed

    def seconds(self, kind: str = "classification", marks: int = 0, kept: int = 0) -> float:
        """How long the next task takes, in seconds (see ``median_seconds``)."""
        median = self.median_seconds(kind, marks, kept)
        return self.rng.lognormvariate(math.log(median), self.behaviour.spread)

    def abandons(self) -> bool:
        return self.rng.random() < self.behaviour.dropout_rate

    def skips(self) -> bool:
        return self.rng.random() < self.behaviour.skip_rate

    def answer(
        self, view: TaskView, truth: Sequence[Item], prelabels: Sequence[Item] = ()
    ) -> list[Item]:
        """The worker's ``annotations`` for the task whose image has ``truth``, shown the
        lease's ``prelabels``. Items kept from a pre-label name it (``"prelabel": k``), as
        the workspace sends them; ``marks`` and ``kept`` count drawn and kept items."""
        out = self._answer(view, truth, prelabels)
        return _disjoint(out) if view.kind == "mask" else out

    def _answer(
        self, view: TaskView, truth: Sequence[Item], prelabels: Sequence[Item] = ()
    ) -> list[Item]:
        b = self.behaviour
        if b.spammer:
            return self._spam(view)
        honest = self.rng.random() < b.honest_share
        if honest and prelabels:
            return self._anchored(view, truth, prelabels)
        if view.kind == "classification":
            right = truth[0]["label"]
            if honest and self.rng.random() < b.skill.accuracy:
                return [{"label": right}]
            return [{"label": self._other(view, right)}]
        seen = visible(view.kind, truth, view.region)
        if not honest:
            # Something for every object, all of it wrong: wrong labels in the wrong places.
            return [
                {**self._random_item(view), "label": self._other(view, item["label"])}
                if view.kind != "keypoints"
                else self._random_item(view)
                for item in seen
            ] or [self._random_item(view)]
        out = []
        for item in seen:
            if self.rng.random() < b.skill.miss_rate:
                continue
            drawn = self._jittered(view, item)
            if drawn is None:
                continue
            if view.kind != "keypoints" and self.rng.random() >= b.skill.accuracy:
                drawn["label"] = self._other(view, item["label"])
            out.append(drawn)
        for _ in range(MAX_EXTRA):
            if self.rng.random() >= b.skill.false_positive_rate:
                break
            out.append(self._random_item(view))
        return out

    def _anchored(
        self, view: TaskView, truth: Sequence[Item], prelabels: Sequence[Item]
    ) -> list[Item]:
        """An honest answer to a task shown pre-labels (see the module's docstring)."""
        skill = self.behaviour.skill
        a = self.anchoring
        if view.kind == "classification":
            if self.rng.random() < a:
                return [{"label": prelabels[0]["label"], "prelabel": 0}]
            right = truth[0]["label"]
            label = right if self.rng.random() < skill.accuracy else self._other(view, right)
            return [{"label": label}]
        seen = visible(view.kind, truth, view.region)
        covered: set[int] = set()
        out: list[Item] = []
        for k, pre in enumerate(prelabels):
            target = _best_match(view.kind, pre, seen, covered)
            if target is not None:
                covered.add(target)
            if self.rng.random() < a:
                out.append({**_shown(pre), "prelabel": k})
                continue
            if target is None or self.rng.random() < skill.miss_rate:
                continue  # a stray shape deleted (or a real one the worker missed)
            drawn = self._jittered(view, seen[target])
            if drawn is None:
                continue
            if view.kind != "keypoints" and self.rng.random() >= skill.accuracy:
                drawn["label"] = self._other(view, seen[target]["label"])
            out.append({**drawn, "prelabel": k})  # the pre-label, corrected
        for index, item in enumerate(seen):
            if index in covered or self.rng.random() < a:
                continue  # marked by a pre-label, or trusted the model that missed it
            if self.rng.random() < skill.miss_rate:
                continue
            drawn = self._jittered(view, item)
            if drawn is None:
                continue
            if view.kind != "keypoints" and self.rng.random() >= skill.accuracy:
                drawn["label"] = self._other(view, item["label"])
            out.append(drawn)
        for _ in range(MAX_EXTRA):
            if self.rng.random() >= skill.false_positive_rate:
                break
            out.append(self._random_item(view))
        return out

    # --- Pieces ---------------------------------------------------------------------------------

    def _other(self, view: TaskView, label: str) -> str:
        others = [x for x in view.labels if x != label]
        return self.rng.choice(others) if others else label

    def _spam(self, view: TaskView) -> list[Item]:
        if view.kind == "classification":
            label = view.labels[0] if self.constant else self.rng.choice(view.labels)
            return [{"label": label}]
        if self.constant:
            return []  # "nothing to mark here", every time
        return [self._random_item(view) for _ in range(self.rng.randint(0, 3))]

    def _bounds(self, view: TaskView) -> tuple[float, float, float, float]:
        rx, ry, rw, rh = view.region
        return (
            max(0.0, float(rx)),
            max(0.0, float(ry)),
            min(float(view.width), float(rx + rw)),
            min(float(view.height), float(ry + rh)),
        )

    def _point(self, view: TaskView, x: float, y: float) -> list[float]:
        x0, y0, x1, y1 = self._bounds(view)
        return [round(min(max(x, x0), x1), 2), round(min(max(y, y0), y1), 2)]

    def _random_item(self, view: TaskView) -> Item:
        x0, y0, x1, y1 = self._bounds(view)
        label = self.rng.choice(view.labels)
        size = max(4.0, min(x1 - x0, y1 - y0) * self.rng.uniform(0.05, 0.3))
        cx = self.rng.uniform(x0 + size / 2, max(x0 + size / 2, x1 - size / 2))
        cy = self.rng.uniform(y0 + size / 2, max(y0 + size / 2, y1 - size / 2))
        if view.kind == "bbox":
            left, top = self._point(view, cx - size / 2, cy - size / 2)
            right, bottom = self._point(view, cx + size / 2, cy + size / 2)
            return {"label": label, "bbox": [left, top, right - left, bottom - top]}
        if view.kind == "mask":
            left, top = self._point(view, cx - size / 2, cy - size / 2)
            right, bottom = self._point(view, cx + size / 2, cy + size / 2)
            mask = np.zeros((view.height, view.width), dtype=np.uint8)
            mask[
                int(top) : max(int(bottom), int(top) + 1),
                int(left) : max(int(right), int(left) + 1),
            ] = 1
            return {"label": label, "rle": _encode(mask)}
        if view.kind == "polygon":
            return {
                "label": label,
                "points": [
                    self._point(view, cx, cy - size / 2),
                    self._point(view, cx + size / 2, cy + size / 2),
                    self._point(view, cx - size / 2, cy + size / 2),
                ],
            }
        names = view.keypoints[label]
        return {
            "label": label,
            "keypoints": [
                [*self._point(view, self.rng.uniform(x0, x1), self.rng.uniform(y0, y1)), 2]
                for _ in names
            ],
        }

    def _jittered(self, view: TaskView, item: Item) -> Item | None:
        jitter = self.behaviour.skill.jitter
        gauss = self.rng.gauss
        if view.kind == "bbox":
            x, y, w, h = item["bbox"]
            left, top = self._point(view, x + gauss(0, jitter), y + gauss(0, jitter))
            right, bottom = self._point(view, x + w + gauss(0, jitter), y + h + gauss(0, jitter))
            if right - left < 1 or bottom - top < 1:
                return None
            return {"label": item["label"], "bbox": [left, top, right - left, bottom - top]}
        if view.kind == "polygon":
            points = [self._point(view, px + gauss(0, jitter), py + gauss(0, jitter))
                      for px, py in item["points"]]  # fmt: skip
            if polygon_area(points) <= 1:
                return None
            return {"label": item["label"], "points": points}
        if view.kind == "mask":
            return self._painted(item, jitter)
        keypoints = [
            [*self._point(view, kx + gauss(0, jitter), ky + gauss(0, jitter)), int(v)]
            if v
            else [0.0, 0.0, 0]
            for kx, ky, v in item["keypoints"]
        ]
        return {"label": item["label"], "keypoints": keypoints}

    def _painted(self, item: Item, jitter: float) -> Item | None:
        """The true mask moved and grown or shrunk by about the worker's jitter."""
        mask = _decode(item["rle"])
        dx, dy = (round(self.rng.gauss(0, jitter / 2)) for _ in range(2))
        mask = _shifted(mask, dx, dy)
        grow = round(self.rng.gauss(0, jitter / 2))
        if grow:
            kernel = np.ones((2 * abs(grow) + 1, 2 * abs(grow) + 1), dtype=np.uint8)
            morph = cv2.dilate if grow > 0 else cv2.erode
            mask = np.asarray(morph(mask, kernel), dtype=np.uint8)
        if not mask.any():
            return None
        return {"label": item["label"], "rle": _encode(mask)}


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def extent(kind: str, item: Item) -> list[float]:
    """An item's bounding box, [x, y, w, h], whatever its kind's geometry (a keypoint item's:
    of its visible points)."""
    if kind == "bbox":
        return [float(v) for v in item["bbox"]]
    if kind == "mask":
        rows, cols = np.nonzero(_decode(item["rle"]))
        if not len(rows):
            return [0.0, 0.0, 0.0, 0.0]
        return [float(cols.min()), float(rows.min()), float(cols.max() - cols.min() + 1),
                float(rows.max() - rows.min() + 1)]  # fmt: skip
    points = item["points"] if kind == "polygon" else [p for p in item["keypoints"] if p[2]]
    if not points:
        return [0.0, 0.0, 0.0, 0.0]
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _best_match(kind: str, pre: Item, seen: Sequence[Item], taken: set[int]) -> int | None:
    """The true object (index in ``seen``, not yet taken) that a pre-label marks: the one
    whose bounding box overlaps the pre-label's most, by at least ``PRELABEL_MATCH_IOU``."""
    box = extent(kind, pre)
    best, best_iou = None, PRELABEL_MATCH_IOU
    for index, item in enumerate(seen):
        if index in taken:
            continue
        iou = _iou(box, extent(kind, item))
        if iou >= best_iou:
            best, best_iou = index, iou
    return best


def _decode(rle: Mapping[str, Any]) -> npt.NDArray[np.uint8]:
    from qa.exports.formats import decode_mask

    return np.ascontiguousarray(decode_mask(dict(rle)))


def _encode(mask: npt.NDArray[np.uint8]) -> dict[str, Any]:
    from qa.consensus.polygons import _encode as encode

    return encode(mask)


def _shifted(mask: npt.NDArray[np.uint8], dx: int, dy: int) -> npt.NDArray[np.uint8]:
    """The mask moved by (dx, dy) pixels; what leaves the image is lost."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _disjoint(items: list[Item]) -> list[Item]:
    """Masks that share no pixel: each gives up what an earlier one holds; emptied ones go."""
    if len(items) < 2:
        return items
    taken: npt.NDArray[np.bool_] | None = None
    out: list[Item] = []
    for item in items:
        mask = _decode(item["rle"]) > 0
        if taken is None:
            taken = np.zeros_like(mask)
        mask &= ~taken
        if mask.any():
            taken |= mask
            out.append({**item, "rle": _encode(mask.astype(np.uint8))})
    return out


def marks(kind: str, answer: Sequence[Item], prelabels: Sequence[Item] = ()) -> int:
    """What a worker drew in an answer, for its time: shapes, or placed points for keypoints;
    pre-labels kept as they were shown are not drawn (see ``kept``)."""
    if kind == "classification":
        return 0
    if kind == "keypoints":
        return sum(1 for item in answer for point in item["keypoints"] if point[2])
    return len(answer) - kept(answer, prelabels)


GEOMETRY = ("bbox", "points", "keypoints", "rle")  # an item's shape, by kind


def _shown(pre: Item) -> Item:
    """A pre-label as the workspace puts it in an answer: its label and shape, as shown."""
    return {key: pre[key] for key in ("label", *GEOMETRY) if key in pre}


def kept(answer: Sequence[Item], prelabels: Sequence[Item]) -> int:
    """How many items of the answer are pre-labels kept exactly as shown."""
    count = 0
    for item in answer:
        k = item.get("prelabel")
        if k is None or not 0 <= k < len(prelabels):
            continue
        pre = prelabels[k]
        if all(item.get(key) == pre.get(key) for key in ("label", *GEOMETRY)):
            count += 1
    return count


def crowd_make(
    crowd: Sequence[tuple[str, int]], *, seed: int, anchoring: float = 0.0
) -> list[SimWorker]:
    """The workers of a crowd spec, numbered from 1 within each behaviour, each anchoring on
    pre-labels to the degree ``anchoring``."""
    return [
        SimWorker(BEHAVIOURS[name], number, seed=seed, anchoring=anchoring)
        for name, count in crowd
        for number in range(1, count + 1)
    ]
