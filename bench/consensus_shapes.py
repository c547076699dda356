"""Box consensus on simulated crowds: our merges against their peers. Pure, no Django.

Used by the consensus benchmark (``rows(quick)``); every row has the keys ``kind``,
``dataset``, ``method``, ``accuracy_or_f1``, ``mean_iou``, ``seconds``, ``speedup``,
``target``.

The crowd (seeded numpy RNG): each image has ground-truth objects, and five workers answer it:
four honest ones drawn from a pool of workers with fixed skills, who jitter shapes in
proportion to their size, miss about 10% of the objects, add an extra shape about 5% of the
time and give a wrong label about 5% of the time (all scaled by skill), and one spammer who
draws random shapes. Each worker's weight is their true accuracy plus the error of an
estimate (as a gold-based score would give), fixed per worker. Answers are handed to both
sides as the database hands them over: parsed JSON.

- **bbox**: ``merge_boxes_batch`` against ``ensemble_boxes.weighted_boxes_fusion`` (each
  worker one model, weight = reliability, score 1 per box, coordinates normalised, iou_thr
  0.5). WBF's fused score is its weighted support (the cluster's weights over all models'
  weights), so it is filtered like our quorum. Two comparisons: both at 0.5, and each method's
  threshold (WBF's score, our quorum; 0.20 to 0.80 by 0.05) tuned for F1 on a separately
  seeded crowd of 2,000 images (500 quick), the fairest threshold WBF can have. Accuracy is F1
  at IoU 0.5 with the label required to match; ``mean_iou`` is over those matched pairs;
  ``seconds`` is the best wall time of three runs (one in quick mode) over the whole set,
  conversion from the items included on both sides; ``speedup`` = WBF's time / ours; target:
  F1 >= WBF's and speedup >= 10.
  A last bbox row times ``method="em"`` (the worker model learnt by EM) on the same images,
  beside the quorum's time; target: F1 >= quorum 0.5's and at most twice its time.
- **bbox, crowd profiles** (``PROFILES``): crowds of other shapes (all careful; careful and
  sloppy mixed; 3 and 5 a picture from 60 of continuously varied skill; 1-2 spammers a
  picture; workers who miss 40%; crowded pictures of 10-30 tiny to large objects; workers who
  systematically swap pairs of classes; spammers on 30% of pictures; workers who draw every
  box shifted or loose), worker ids kept across images as on a project. Each:
  ``method="em"`` with its defaults, quorum 0.5, quorum 0.35, and WBF at score 0.5 and at
  the score tuned for F1 on the truth of a separately seeded crowd of the same profile; F1
  and IoU as above; target of the EM row: F1 and mean IoU both >= tuned WBF's.
The polygon and keypoint rows are in :mod:`bench.consensus_polygons` and
:mod:`bench.consensus_keypoints`, on crowds of their own drawn from the same pool of workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from ensemble_boxes import weighted_boxes_fusion  # type: ignore[import-untyped]

from qa.consensus.boxes import merge_boxes_batch
from qa.geometry import Pair, box_iou, match

FloatArray = npt.NDArray[np.float64]
Item = dict[str, Any]
Answers = list[Any]  # [worker, weight, items] per worker, as parsed from JSON

SEED = 20_240_611
TUNING_SEED = SEED + 1
CLASSES = ("car", "person", "bicycle", "dog", "sign")
# Per class: typical width / height, and typical side as a share of the image's diagonal.
ASPECT = np.array([1.8, 0.4, 1.4, 1.3, 1.0])
SIDE = np.array([0.18, 0.15, 0.12, 0.10, 0.05])
IMAGE_SIZES = ((640, 480), (1024, 768), (1280, 720), (1920, 1080))
WORKERS_PER_IMAGE = 5
HONEST_POOL, SPAMMER_POOL = 100, 20
THRESHOLDS = np.round(np.arange(0.20, 0.801, 0.05), 2)
SPEEDUP_TARGET = 10.0


def rows(quick: bool) -> list[dict[str, Any]]:
    return box_rows(quick) + box_profile_rows(quick)


def row(
    kind: str,
    dataset: str,
    method: str,
    f1: float,
    mean_iou: float,
    seconds: float,
    speedup: float | None,
    target: str,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "dataset": dataset,
        "method": method,
        "accuracy_or_f1": round(f1, 4),
        "mean_iou": round(mean_iou, 4),
        "seconds": round(seconds, 4),
        "speedup": None if speedup is None else round(speedup, 2),
        "target": target,
    }


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls, and the last result (dropped before each next call,
    so freeing it is not timed)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


# The crowd


@dataclass(frozen=True)
class Pool:
    """Workers with fixed skills, and the weights a gold-based estimate would give them."""

    skill: FloatArray
    weight: FloatArray
    spammer_weight: FloatArray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Pool:
        skill = np.clip(rng.beta(8, 2, HONEST_POOL), 0.5, 0.99)
        spammer_accuracy = rng.uniform(0.05, 0.3, SPAMMER_POOL)
        return cls(
            skill=skill,
            weight=np.clip(skill + rng.normal(0, 0.05, HONEST_POOL), 0.05, 1.0),
            spammer_weight=np.clip(spammer_accuracy + rng.normal(0, 0.05, SPAMMER_POOL), 0.05, 1.0),
        )

    def workers(self, rng: np.random.Generator) -> list[tuple[str, float, float | None]]:
        """Five workers for one image, in random order: (id, weight, skill or None if spammer)."""
        honest = rng.choice(HONEST_POOL, WORKERS_PER_IMAGE - 1, replace=False).tolist()
        chosen: list[tuple[str, float, float | None]] = [
            (f"w{i}", float(self.weight[i]), float(self.skill[i])) for i in honest
        ]
        spammer = int(rng.integers(SPAMMER_POOL))
        chosen.insert(
            int(rng.integers(WORKERS_PER_IMAGE)),
            (f"s{spammer}", float(self.spammer_weight[spammer]), None),
        )
        return chosen


def other_label(rng: np.random.Generator, label: str) -> str:
    return CLASSES[(CLASSES.index(label) + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)]


def as_parsed_json(answers: list[Answers]) -> list[Answers]:
    parsed: list[Answers] = json.loads(json.dumps(answers))
    return parsed


# Boxes


@dataclass(frozen=True)
class BoxImage:
    width: int
    height: int
    truth: list[Item]


def box_crowd(n_images: int, seed: int) -> tuple[list[BoxImage], list[Answers]]:
    rng = np.random.default_rng(seed)
    pool = Pool.draw(rng)
    images: list[BoxImage] = []
    answers: list[Answers] = []
    for _ in range(n_images):
        width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        truth = _true_boxes(rng, width, height)
        images.append(BoxImage(width, height, truth))
        answers.append(
            [
                [worker, weight, _box_answer(rng, truth, skill, width, height)]
                for worker, weight, skill in pool.workers(rng)
            ]
        )
    return images, as_parsed_json(answers)


def _true_boxes(rng: np.random.Generator, width: int, height: int) -> list[Item]:
    boxes: list[Item] = []
    for _ in range(int(rng.integers(1, 9))):
        c = int(rng.integers(len(CLASSES)))
        side = SIDE[c] * np.exp(rng.normal(0, 0.4)) * np.sqrt(width * height)
        aspect = ASPECT[c] * np.exp(rng.normal(0, 0.2))
        w = min(side * np.sqrt(aspect), width * 0.9)
        h = min(side / np.sqrt(aspect), height * 0.9)
        if boxes and rng.random() < 0.3:
            # Next to an earlier object, partly overlapping it (a crowd, a parking lot).
            px, py, pw, ph = boxes[int(rng.integers(len(boxes)))]["bbox"]
            angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.9)
            cx = px + pw / 2 + np.cos(angle) * distance * pw
            cy = py + ph / 2 + np.sin(angle) * distance * ph
        else:
            cx, cy = rng.uniform(w / 2, width - w / 2), rng.uniform(h / 2, height - h / 2)
        boxes.append(
            {
                "label": CLASSES[c],
                "bbox": _clipped(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, width, height),
            }
        )
    return boxes


def _clipped(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> list[float]:
    x0, y0 = float(np.clip(x0, 0, width - 2)), float(np.clip(y0, 0, height - 2))
    x1, y1 = float(np.clip(x1, x0 + 1, width)), float(np.clip(y1, y0 + 1, height))
    return [x0, y0, x1 - x0, y1 - y0]


def _random_box(rng: np.random.Generator, width: int, height: int) -> Item:
    w, h = rng.uniform(0.03, 0.4) * width, rng.uniform(0.03, 0.4) * height
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return {"label": CLASSES[int(rng.integers(len(CLASSES)))], "bbox": [x, y, w, h]}


def _box_answer(
    rng: np.random.Generator, truth: list[Item], skill: float | None, width: int, height: int
) -> list[Item]:
    if skill is None:
        return [_random_box(rng, width, height) for _ in range(int(rng.integers(1, 9)))]
    miss, confusion, extra = 0.5 * (1 - skill), 0.25 * (1 - skill), 0.25 * (1 - skill)
    jitter = 0.02 + 0.15 * (1 - skill)  # per edge, as a share of the box's side
    items: list[Item] = []
    for obj in truth:
        if rng.random() < miss:
            continue
        x, y, w, h = obj["bbox"]
        e = rng.normal(0, jitter, 4) * [w, h, w, h]
        label = other_label(rng, obj["label"]) if rng.random() < confusion else obj["label"]
        items.append(
            {
                "label": label,
                "bbox": _clipped(x + e[0], y + e[1], x + w + e[2], y + h + e[3], width, height),
            }
        )
        if rng.random() < extra:
            if rng.random() < 0.5:  # the same object marked twice, shifted
                dx = rng.uniform(0.3, 0.6) * w * rng.choice([-1, 1])
                items.append(
                    {"label": label, "bbox": _clipped(x + dx, y, x + w + dx, y + h, width, height)}
                )
            else:
                items.append(_random_box(rng, width, height))
    return items


def _wbf(images: Sequence[BoxImage], answers: Sequence[Answers]) -> list[list[tuple[Item, float]]]:
    ids = {label: i for i, label in enumerate(CLASSES)}
    out: list[list[tuple[Item, float]]] = []
    for image, crowd in zip(images, answers, strict=True):
        scale = np.array([image.width, image.height, image.width, image.height], dtype=np.float64)
        boxes, scores, labels, weights = [], [], [], []
        for _, weight, items in crowd:
            xywh = np.array([item["bbox"] for item in items], dtype=np.float64).reshape(-1, 4)
            xywh[:, 2:] += xywh[:, :2]
            boxes.append(xywh / scale)
            scores.append(np.ones(len(items)))
            labels.append([ids[item["label"]] for item in items])
            weights.append(weight)
        fused, fused_scores, fused_labels = weighted_boxes_fusion(
            boxes, scores, labels, weights=weights, iou_thr=0.5, skip_box_thr=1e-4
        )
        corners = fused * scale
        out.append(
            [
                (
                    {"label": CLASSES[int(lab)], "bbox": [c[0], c[1], c[2] - c[0], c[3] - c[1]]},
                    float(s),
                )
                for c, s, lab in zip(
                    corners.tolist(), fused_scores.tolist(), fused_labels.tolist(), strict=True
                )
            ]
        )
    return out


def score_items(
    truth: Sequence[Sequence[Item]],
    found: Sequence[Sequence[Item]],
    similarity: Callable[[int, Sequence[Item], Sequence[Item]], FloatArray],
    threshold: float,
) -> tuple[float, float, float]:
    """F1 over all images (a match needs the label and similarity >= threshold), the mean
    similarity of the matched pairs, and the mean similarity per true object (0 if missed)."""
    hits, n_truth, n_found, total = 0, 0, 0, 0.0
    for index, (gold, ours) in enumerate(zip(truth, found, strict=True)):
        n_truth += len(gold)
        n_found += len(ours)
        if not gold or not ours:
            continue
        for pair in matched_pairs(gold, ours, similarity(index, gold, ours), threshold):
            hits += 1
            total += pair.similarity
    f1 = 2 * hits / (n_truth + n_found) if n_truth + n_found else 1.0
    return f1, total / hits if hits else 0.0, total / n_truth if n_truth else 0.0


def matched_pairs(
    gold: Sequence[Item], ours: Sequence[Item], similarity: FloatArray, threshold: float
) -> tuple[Pair, ...]:
    """The one-to-one matches of one image: same label, similarity at least ``threshold``."""
    same = np.array([[g["label"] == o["label"] for o in ours] for g in gold])
    return match(np.where(same, similarity, 0.0), threshold).pairs


def _box_similarity(index: int, gold: Sequence[Item], ours: Sequence[Item]) -> FloatArray:
    return box_iou([g["bbox"] for g in gold], [o["bbox"] for o in ours])


def _score_boxes(
    images: Sequence[BoxImage], found: Sequence[Sequence[Item]]
) -> tuple[float, float]:
    f1, matched_iou, _ = score_items([image.truth for image in images], found, _box_similarity, 0.5)
    return f1, matched_iou


def _tune(images: Sequence[BoxImage], scored: Sequence[Sequence[tuple[Item, float]]]) -> float:
    """The threshold on the objects' scores (support) that gives the best F1."""
    best, best_f1 = float(THRESHOLDS[0]), -1.0
    for threshold in THRESHOLDS.tolist():
        f1, _ = _score_boxes(
            images, [[i for i, s in objs if s >= threshold - 1e-9] for objs in scored]
        )
        if f1 > best_f1:
            best, best_f1 = threshold, f1
    return best


def _ours_scored(answers: Sequence[Answers]) -> list[list[tuple[Item, float]]]:
    return [
        [(obj.to_item(), obj.support) for obj in objs]
        for objs in merge_boxes_batch(answers, quorum=0.0)
    ]


def box_rows(quick: bool) -> list[dict[str, Any]]:
    n_images, n_tuning = (1000, 500) if quick else (10_000, 2000)
    repeats = 1 if quick else 3
    tuning_images, tuning_answers = box_crowd(n_tuning, TUNING_SEED)
    wbf_threshold = _tune(tuning_images, _wbf(tuning_images, tuning_answers))
    our_quorum = _tune(tuning_images, _ours_scored(tuning_answers))

    images, answers = box_crowd(n_images, SEED)
    dataset = f"{n_images} images, 1-8 boxes, 5 classes, 5 workers (1 spammer)"
    wbf_seconds, fused = best_time(lambda: _wbf(images, answers), repeats)
    out: list[dict[str, Any]] = []
    for label, wbf_cut, quorum in (
        ("same threshold", 0.5, 0.5),
        ("tuned thresholds", wbf_threshold, our_quorum),
    ):
        wbf_f1, wbf_iou = _score_boxes(
            images, [[i for i, s in objs if s >= wbf_cut - 1e-9] for objs in fused]
        )
        seconds, merged = best_time(partial(merge_boxes_batch, answers, quorum=quorum), repeats)
        f1, iou = _score_boxes(images, [[obj.to_item() for obj in objs] for objs in merged])
        speedup = wbf_seconds / seconds
        ok = f1 >= wbf_f1 and speedup >= SPEEDUP_TARGET
        out.append(
            row(
                "bbox",
                dataset,
                f"weighted_boxes_fusion, score >= {wbf_cut:.2f} ({label})",
                wbf_f1,
                wbf_iou,
                wbf_seconds,
                1.0,
                "baseline",
            )
        )
        out.append(
            row(
                "bbox",
                dataset,
                f"merge_boxes_batch, quorum {quorum:.2f} ({label})",
                f1,
                iou,
                seconds,
                speedup,
                "ok" if ok else "MISSED",
            )
        )
    # The worker model learnt by EM, timed beside the quorum rule on the same images: its
    # target is F1 at least the quorum's and at most twice its time.
    quorum_seconds = out[1]["seconds"]
    seconds, merged = best_time(partial(merge_boxes_batch, answers, method="em"), repeats)
    f1, iou = _score_boxes(images, [[obj.to_item() for obj in objs] for objs in merged])
    ok = f1 >= out[1]["accuracy_or_f1"] and seconds <= 2 * quorum_seconds
    out.append(
        row(
            "bbox",
            dataset,
            f"merge_boxes_batch, method em ({seconds / quorum_seconds:.2f}x quorum's time)",
            f1,
            iou,
            seconds,
            wbf_seconds / seconds,
            "ok" if ok else "MISSED",
        )
    )
    return out


# Box crowds of other shapes: the worker model (EM) against fixed quorums and WBF.


@dataclass(frozen=True)
class Marker:
    """A worker who draws boxes: how much of what is there they mark, how many boxes a
    picture they add where nothing is (Poisson mean), how far their edges stray (a share of
    the side), how often the label is wrong; a spammer draws 1-8 boxes at random."""

    recall: float = 0.95
    false_marks: float = 0.05
    jitter: float = 0.03
    confusion: float = 0.02
    spammer: bool = False
    # How often they give the class's twin (``TWIN``) instead: a systematic confusion.
    swap: float = 0.0
    # Their habit on each edge (x0, y0, x1, y1), as a share of the side: (0.05, 0, 0.05, 0)
    # draws every box 5% of its width to the right.
    shift: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def weight(self, rng: np.random.Generator) -> float:
        """The weight a gold-based score would give: accuracy plus an estimate's error."""
        accuracy = rng.uniform(0.05, 0.3) if self.spammer else self.recall * (1 - self.confusion)
        return float(np.clip(accuracy + rng.normal(0, 0.05), 0.05, 1.0))


CAREFUL_MARKER = Marker()
SLOPPY_MARKER = Marker(recall=0.6, false_marks=0.6, jitter=0.08, confusion=0.1)


@dataclass(frozen=True)
class CrowdProfile:
    name: str
    description: str
    pool: Callable[[np.random.Generator], list[Marker]]
    per_image: int
    spammers_per_image: tuple[int, int] = (0, 0)  # drawn from the pool's spammers, at least..most
    spammer_images: float = 1.0  # the share of images where spammers come (none on the rest)
    truth: Callable[[np.random.Generator, int, int], list[Item]] = lambda rng, w, h: _true_boxes(
        rng, w, h
    )


# Pairs of classes a confusing worker swaps: car and bicycle, person and dog.
TWIN = {"car": "bicycle", "bicycle": "car", "person": "dog", "dog": "person", "sign": "sign"}


def _crowded_boxes(rng: np.random.Generator, width: int, height: int) -> list[Item]:
    """10-30 objects a picture, of any class, from tiny (1% of the image's scale) to large
    (35%), placed independently, so they often overlap."""
    boxes: list[Item] = []
    scale = np.sqrt(width * height)
    for _ in range(int(rng.integers(10, 31))):
        side = np.exp(rng.uniform(np.log(0.01), np.log(0.35))) * scale
        aspect = np.exp(rng.normal(0, 0.4))
        w = max(min(side * np.sqrt(aspect), width * 0.9), 4.0)
        h = max(min(side / np.sqrt(aspect), height * 0.9), 4.0)
        cx, cy = rng.uniform(w / 2, width - w / 2), rng.uniform(h / 2, height - h / 2)
        boxes.append(
            {
                "label": CLASSES[int(rng.integers(len(CLASSES)))],
                "bbox": _clipped(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, width, height),
            }
        )
    return boxes


def _confusers(rng: np.random.Generator) -> list[Marker]:
    """12 good workers and 8 who give the twin class 70% of the time."""
    good = Marker(recall=0.9, false_marks=0.1, jitter=0.04, confusion=0.03)
    return [good] * 12 + [Marker(recall=0.9, false_marks=0.1, jitter=0.04, swap=0.7)] * 8


def _shifted(rng: np.random.Generator) -> list[Marker]:
    """14 unbiased workers, 3 who draw 8% right and down of the object, 3 who draw 6% loose
    on every side."""
    plain = Marker(recall=0.9, false_marks=0.1, jitter=0.04, confusion=0.03)
    return (
        [plain] * 14
        + [replace(plain, shift=(0.08, 0.08, 0.08, 0.08))] * 3
        + [replace(plain, shift=(-0.06, -0.06, 0.06, 0.06))] * 3
    )


def _varied(rng: np.random.Generator, n: int) -> list[Marker]:
    skill = np.clip(rng.beta(4, 2, n), 0.3, 0.99)
    return [
        Marker(
            recall=0.3 + 0.7 * float(k),
            false_marks=1.5 * (1 - float(k)),
            jitter=0.02 + 0.12 * (1 - float(k)),
            confusion=0.2 * (1 - float(k)),
        )
        for k in skill
    ]


PROFILES = (
    CrowdProfile(
        "careful", "5 of a pool of 20 careful workers", lambda rng: [CAREFUL_MARKER] * 20, 5
    ),
    CrowdProfile(
        "careful+sloppy",
        "5 of a pool of 10 careful and 10 sloppy workers (recall 0.6, 0.6 false marks)",
        lambda rng: [CAREFUL_MARKER] * 10 + [SLOPPY_MARKER] * 10,
        5,
    ),
    CrowdProfile(
        "varied, 3 of 60",
        "3 of a pool of 60 workers of varied skill (recall 0.5-1, 0-1 false marks)",
        lambda rng: _varied(rng, 60),
        3,
    ),
    CrowdProfile(
        "1-2 spammers",
        "5 a picture: 3-4 of 20 good workers and 1-2 of 3 spammers boxing at random",
        lambda rng: (
            [Marker(recall=0.9, false_marks=0.1, jitter=0.04, confusion=0.03)] * 20
            + [Marker(spammer=True)] * 3
        ),
        5,
        (1, 2),
    ),
    CrowdProfile(
        "low recall",
        "5 of a pool of 20 workers who miss 40% of the objects",
        lambda rng: [Marker(recall=0.6, false_marks=0.1, jitter=0.04, confusion=0.03)] * 20,
        5,
    ),
    CrowdProfile(
        "varied, 5 of 60",
        "5 of a pool of 60 workers of varied skill (recall 0.5-1, 0-1 false marks)",
        lambda rng: _varied(rng, 60),
        5,
    ),
    CrowdProfile(
        "crowded, tiny and large",
        "10-30 objects a picture, 1%-35% of its scale; 3 of 40 workers of varied skill",
        lambda rng: _varied(rng, 40),
        3,
        truth=_crowded_boxes,
    ),
    CrowdProfile(
        "pair confusers",
        "5 of 20 workers; 8 of them give car for bicycle and person for dog (and back) 70%",
        _confusers,
        5,
    ),
    CrowdProfile(
        "spammers on 30% of images",
        "5 a picture of 30 varied workers; on 30% of pictures 1-2 of them are of 4 spammers",
        lambda rng: _varied(rng, 30) + [Marker(spammer=True)] * 4,
        5,
        (1, 2),
        spammer_images=0.3,
    ),
    CrowdProfile(
        "shifted workers",
        "4 of 20 workers; 3 draw 8% right and down of the object, 3 draw 6% loose",
        _shifted,
        4,
    ),
)


def profile_crowd(
    profile: CrowdProfile, n_images: int, seed: int
) -> tuple[list[BoxImage], list[Answers]]:
    """Images with true boxes and the answers of ``profile``'s crowd; worker ids persist across
    images, as on a project (``w<i>`` honest, ``s<i>`` spammers)."""
    rng = np.random.default_rng(seed)
    pool = profile.pool(rng)
    weights = [m.weight(rng) for m in pool]
    honest = [i for i, m in enumerate(pool) if not m.spammer]
    spam = [i for i, m in enumerate(pool) if m.spammer]
    images: list[BoxImage] = []
    answers: list[Answers] = []
    for _ in range(n_images):
        width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        truth = profile.truth(rng, width, height)
        images.append(BoxImage(width, height, truth))
        low, high = profile.spammers_per_image
        n_spam = int(rng.integers(low, high + 1)) if rng.random() < profile.spammer_images else 0
        chosen = [
            *rng.choice(honest, profile.per_image - n_spam, replace=False).tolist(),
            *(rng.choice(spam, n_spam, replace=False).tolist() if n_spam else []),
        ]
        rng.shuffle(chosen)
        answers.append(
            [
                [
                    f"{'s' if pool[i].spammer else 'w'}{i}",
                    weights[i],
                    _marker_answer(rng, pool[i], truth, width, height),
                ]
                for i in chosen
            ]
        )
    return images, as_parsed_json(answers)


def _marker_answer(
    rng: np.random.Generator, marker: Marker, truth: list[Item], width: int, height: int
) -> list[Item]:
    if marker.spammer:
        return [_random_box(rng, width, height) for _ in range(int(rng.integers(1, 9)))]
    items: list[Item] = []
    for obj in truth:
        if rng.random() >= marker.recall:
            continue
        x, y, w, h = obj["bbox"]
        e = (rng.normal(0, marker.jitter, 4) + marker.shift) * [w, h, w, h]
        label = obj["label"]
        if rng.random() < marker.swap:
            label = TWIN[label]
        elif rng.random() < marker.confusion:
            label = other_label(rng, label)
        items.append(
            {
                "label": label,
                "bbox": _clipped(x + e[0], y + e[1], x + w + e[2], y + h + e[3], width, height),
            }
        )
    items += [_random_box(rng, width, height) for _ in range(rng.poisson(marker.false_marks))]
    order = rng.permutation(len(items)).tolist()
    return [items[i] for i in order]


def box_profile_rows(
    quick: bool, profiles: Sequence[CrowdProfile] = PROFILES
) -> list[dict[str, Any]]:
    """F1 of the worker model (``method="em"``, its defaults) beside quorums 0.5 and 0.35 and
    WBF (at 0.5, and at the score threshold tuned for F1 on the truth of a separately seeded
    crowd of the same profile), one block of rows per crowd profile. Target of the EM row: F1
    and mean IoU both at least tuned WBF's."""
    n_images, n_tuning = (1000, 300) if quick else (5000, 1000)
    out: list[dict[str, Any]] = []
    for profile in profiles:
        number = PROFILES.index(profile)  # its crowds' seeds, whichever profiles are run
        tuning_images, tuning_answers = profile_crowd(profile, n_tuning, TUNING_SEED + number)
        wbf_threshold = _tune(tuning_images, _wbf(tuning_images, tuning_answers))
        images, answers = profile_crowd(profile, n_images, SEED + number)
        dataset = f"{profile.name}: {n_images} images, {profile.description}"
        wbf_seconds, fused = best_time(partial(_wbf, images, answers), 1)
        results: dict[str, tuple[float, float, float]] = {}
        for method, kwargs in (
            ("em", {"method": "em"}),
            ("quorum 0.50", {"quorum": 0.5}),
            ("quorum 0.35", {"quorum": 0.35}),
        ):
            seconds, merged = best_time(partial(merge_boxes_batch, answers, **kwargs), 1)
            f1, iou = _score_boxes(images, [[o.to_item() for o in objs] for objs in merged])
            results[method] = (f1, iou, seconds)
        wbf_best = _score_boxes(
            images, [[i for i, s in objs if s >= wbf_threshold - 1e-9] for objs in fused]
        )
        for method, (f1, iou, seconds) in results.items():
            target = "-"
            if method == "em":
                beats = f1 >= wbf_best[0] and iou >= wbf_best[1]
                target = "ok" if beats else "MISSED"
            out.append(
                row(
                    "bbox",
                    dataset,
                    f"merge_boxes_batch, {method}",
                    f1,
                    iou,
                    seconds,
                    wbf_seconds / seconds,
                    target,
                )
            )
        for cut, label in ((0.5, "0.50"), (wbf_threshold, f"{wbf_threshold:.2f}, tuned")):
            f1, iou = _score_boxes(
                images, [[i for i, s in objs if s >= cut - 1e-9] for objs in fused]
            )
            out.append(
                row(
                    "bbox",
                    dataset,
                    f"weighted_boxes_fusion, score >= {label}",
                    f1,
                    iou,
                    wbf_seconds,
                    1.0,
                    "baseline",
                )
            )
    return out
