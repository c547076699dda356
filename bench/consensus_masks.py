"""Mask consensus on generated crowds (the consensus benchmark's mask rows). Pure.

Run alone with ``make bench BENCH_ARGS="consensus --only masks"``.

The scenes: smooth blobs (some with a protruding part) of three labels on images of 192x144
to 320x240, some touching; in the "thin and small" profiles a third of the objects are thin
strokes (2-5 px across) and a third small (4-9 px radius). Each profile (``PROFILES``) is a
pool of workers with habits, ids kept across images as on a project, five of them answering
each image. A worker paints a mask by moving the true edge: the truth's signed distance plus
their *bias* (pixels; positive paints over the edge, as a broad brush does, negative stops
short of it) plus a smooth random field of about *jitter* pixels (a shaky edge), with the
spatial scale of their brush. They leave an object out with chance ``1 - recall``, leave its
protruding part out with chance ``leaves_out``, give it another label with chance
``confuses``; a spammer paints random blobs with random labels. ``spam_share`` of the images
have one of their five answers replaced by a spammer's (spammers on a share of the images,
not on every one).

Instance profiles are merged by ``merge_masks_batch``, semantic ones (each worker's answer a
label map: later strokes paint over earlier ones) by ``merge_semantic_batch``, both with
their defaults (the worker model learnt over the set; nothing is tuned per profile). The
score is the Jaccard (IoU) of each method's mask with each true object's (instance: the
output mask overlapping it most, labels aside, 0 when none does; semantic: the output of
the object's label on its image against the truth of that label), averaged over the true
objects. Peers:

- ``pixel_majority_vote``, end to end (per label, pixels more than half the workers
  painted; each connected region an object);
- crowd-kit 1.4's ``SegmentationMajorityVote``, ``SegmentationEM`` and ``SegmentationRASA``,
  which merge one object's binary masks and find no objects: each task is handed to them
  as an oracle forms it. Instance: for each true object, each worker's mask overlapping it
  most, if at IoU 0.5 or more, cropped to a window around them. Semantic: for each label
  present in the truth of an image, every worker's mask of that label on the image (empty
  where they painted none). They get the clustering and the labels for free; ours finds
  them.

Target of our row: ok when its mean Jaccard is at least every crowd-kit method's.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask
from scipy import ndimage

from bench.consensus_shapes import SEED, as_parsed_json, best_time
from qa.consensus.masks import merge_masks_batch, merge_semantic_batch, pixel_majority_vote
from qa.consensus.objects import MergedObject
from qa.geometry import mask_iou

Mask = npt.NDArray[np.bool_]
Answers = list[Any]
LABELS = ("car", "person", "road")
SIZES = ((192, 144), (256, 192), (320, 240))
PER_IMAGE = 5


@dataclass(frozen=True)
class Painter:
    """A worker's habits (pixels)."""

    bias: float = 0.0  # > 0 paints over the edge, < 0 stops short of it
    jitter: float = 0.7  # amplitude of the shaky edge
    brush: float = 3.0  # spatial scale of the shakes
    recall: float = 0.95
    leaves_out: float = 0.0  # chance they leave the protruding part out
    confuses: float = 0.0  # chance they give the object another label
    spammer: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    pool: tuple[Painter, ...]
    semantic: bool = False
    lobes: float = 0.3  # share of objects with a protruding part
    spam_share: float = 0.0  # share of images where a spammer replaces one answer
    # "blobs": objects of 12 px to a fifth of the image's height; "mixed": a third of them
    # thin (2 to 5 px across) and a third small (4 to 9 px radius) beside the large ones.
    shapes: str = "blobs"


def _pool(*groups: tuple[int, Painter]) -> tuple[Painter, ...]:
    return tuple(painter for count, painter in groups for _ in range(count))


PROFILES = (
    Profile(
        "instance: shaky edges",
        "5 of 16: 8 careful (0.7 px), 4 shaky (3 px), 4 coarse brushes (4 px, broad strokes)",
        _pool(
            (8, Painter()),
            (4, Painter(jitter=3.0)),
            (4, Painter(jitter=4.0, brush=8.0)),
        ),
    ),
    Profile(
        "instance: over/under-painters",
        "5 of 16: 6 careful, 4 paint over the edge (+3 to +6 px), 3 stop short (-3 px), 3 shaky",
        _pool(
            (6, Painter()),
            (2, Painter(bias=3.0, jitter=1.0)),
            (2, Painter(bias=6.0, jitter=1.5)),
            (3, Painter(bias=-3.0, jitter=1.0)),
            (3, Painter(jitter=2.5)),
        ),
    ),
    Profile(
        "instance: missed parts, spam on 30%",
        "5 of 14 on lobed blobs: 6 careful, 6 leave the lobe out half the time and miss 25%, "
        "2 paint over (+5 px); a spammer replaces an answer on 30% of images",
        _pool(
            (6, Painter(jitter=1.0)),
            (6, Painter(jitter=1.0, leaves_out=0.5, recall=0.75)),
            (2, Painter(bias=5.0, jitter=1.5)),
        ),
        lobes=0.8,
        spam_share=0.3,
    ),
    Profile(
        "semantic: edges and confusion",
        "5 of 16 label maps: 7 careful, 3 paint over (+4 px), 3 shaky (3 px), 3 give the wrong "
        "label 30% of the time",
        _pool(
            (7, Painter()),
            (3, Painter(bias=4.0, jitter=1.0)),
            (3, Painter(jitter=3.0)),
            (3, Painter(jitter=1.0, confuses=0.3)),
        ),
        semantic=True,
    ),
    Profile(
        "semantic: missed parts, spam on 40%",
        "5 of 14 label maps on lobed blobs: 6 careful, 5 leave the lobe out half the time and "
        "miss 30%, 3 stop short (-3 px); a spammer replaces an answer on 40% of images",
        _pool(
            (6, Painter(jitter=1.0)),
            (5, Painter(jitter=1.0, leaves_out=0.5, recall=0.7)),
            (3, Painter(bias=-3.0, jitter=1.0)),
        ),
        semantic=True,
        lobes=0.8,
        spam_share=0.4,
    ),
    Profile(
        "instance: thin and small objects",
        "5 of 16 on mixed sizes (a third thin, 2-5 px across; a third small, 4-9 px radius): "
        "6 careful, 4 shaky (2 px), 3 paint over (+2 px), 3 stop short (-1 px)",
        _pool(
            (6, Painter(jitter=0.5, brush=2.0)),
            (4, Painter(jitter=2.0, brush=3.0)),
            (3, Painter(bias=2.0, jitter=0.7, brush=2.0)),
            (3, Painter(bias=-1.0, jitter=0.7, brush=2.0)),
        ),
        lobes=0.0,
        shapes="mixed",
    ),
    Profile(
        "semantic: thin and small objects",
        "5 of 16 label maps on mixed sizes: 6 careful, 4 shaky (2 px), 3 paint over (+2 px), "
        "3 give the wrong label 20% of the time",
        _pool(
            (6, Painter(jitter=0.5, brush=2.0)),
            (4, Painter(jitter=2.0, brush=3.0)),
            (3, Painter(bias=2.0, jitter=0.7, brush=2.0)),
            (3, Painter(jitter=0.7, brush=2.0, confuses=0.2)),
        ),
        semantic=True,
        lobes=0.0,
        shapes="mixed",
    ),
)


# --- Scenes and painting ---------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    label: str
    mask: Mask
    lobe: Mask  # the protruding part (empty when none)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    blobs: list[Blob]


def _ellipse(
    shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle: float
) -> Mask:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    dx, dy = x + 0.5 - cx, y + 0.5 - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = (dx * c + dy * s) / rx, (-dx * s + dy * c) / ry
    out: Mask = u**2 + v**2 <= 1.0
    return out


def _scene(rng: np.random.Generator, profile: Profile) -> Scene:
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    taken = np.zeros((height, width), dtype=bool)
    blobs: list[Blob] = []
    for k in range(int(rng.integers(1, 5))):
        for _ in range(40):
            rx, ry = rng.uniform(12, height / 5), rng.uniform(12, height / 5)
            smallest = 150
            form = int(rng.integers(3)) if profile.shapes == "mixed" else 0
            if form == 1:  # thin: a stroke 2 to 5 px across
                rx, ry, smallest = rng.uniform(height / 6, height / 3), rng.uniform(1.0, 2.5), 20
            elif form == 2:  # small
                rx = ry = rng.uniform(4.0, 9.0)
                smallest = 30
            angle = rng.uniform(0, np.pi)
            if k == 1 and blobs:
                # Against the first object, so the two touch.
                ys, xs = np.nonzero(blobs[0].mask)
                cx, cy = float(xs.max()) + rx * 0.9, float(ys.mean())
            else:
                cx, cy = rng.uniform(rx, width - rx), rng.uniform(ry, height - ry)
            body = _ellipse((height, width), cx, cy, rx, ry, angle)
            lobe = np.zeros_like(body)
            if rng.random() < profile.lobes:
                at = rng.uniform(0, 2 * np.pi)
                reach = max(rx, ry) * 0.9
                lobe = _ellipse(
                    (height, width), cx + np.cos(at) * reach, cy + np.sin(at) * reach,
                    max(rx, ry) * 0.45, max(rx, ry) * 0.3, at,
                ) & ~body  # fmt: skip
            shape = (body | lobe) & ~taken
            if shape.sum() > smallest and not (shape & taken).any():
                break
        if not shape.any():
            continue  # no room left for it
        blobs.append(Blob(LABELS[int(rng.integers(len(LABELS)))], shape, lobe & shape))
        taken |= shape
    return Scene(width, height, blobs)


def _signed(mask: Mask) -> npt.NDArray[np.float64]:
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    out: npt.NDArray[np.float64] = np.where(mask, -inside + 0.5, outside - 0.5)
    return out


def _painted(rng: np.random.Generator, painter: Painter, blob: Blob) -> Mask:
    shape = blob.mask
    if blob.lobe.any() and rng.random() < painter.leaves_out:
        shape = shape & ~blob.lobe
    field = ndimage.gaussian_filter(rng.normal(size=shape.shape), painter.brush)
    field *= painter.jitter / max(float(field.std()), 1e-9)
    out: Mask = _signed(shape) - painter.bias + field < 0
    return out


def _spam(rng: np.random.Generator, scene: Scene) -> list[tuple[str, Mask]]:
    out = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(8, scene.height / 5)
        blob = _ellipse(
            (scene.height, scene.width), rng.uniform(0, scene.width), rng.uniform(0, scene.height),
            r, r * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi),
        )  # fmt: skip
        if blob.any():
            out.append((LABELS[int(rng.integers(len(LABELS)))], blob))
    return out


def _answer(
    rng: np.random.Generator, painter: Painter, scene: Scene, semantic: bool
) -> list[dict[str, Any]]:
    strokes: list[tuple[str, Mask]] = []
    if painter.spammer:
        strokes = _spam(rng, scene)
    else:
        for blob in scene.blobs:
            if rng.random() >= painter.recall:
                continue
            label = blob.label
            if rng.random() < painter.confuses:
                label = LABELS[(LABELS.index(label) + int(rng.integers(1, len(LABELS)))) % 3]
            strokes.append((label, _painted(rng, painter, blob)))
    if not semantic:
        return [{"label": label, "rle": _rle(mask)} for label, mask in strokes if mask.any()]
    # A label map: a later stroke paints over an earlier one; one mask a label.
    index = np.zeros((scene.height, scene.width), dtype=np.uint8)
    for label, mask in strokes:
        index[mask] = LABELS.index(label) + 1
    return [
        {"label": label, "rle": _rle(index == k + 1)}
        for k, label in enumerate(LABELS)
        if (index == k + 1).any()
    ]


def _rle(mask: Mask) -> dict[str, Any]:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def mask_crowd(profile: Profile, n_images: int, seed: int) -> tuple[list[Scene], list[Answers]]:
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []
    answers: list[Answers] = []
    spammer = Painter(spammer=True)
    for _ in range(n_images):
        scene = _scene(rng, profile)
        chosen = rng.choice(len(profile.pool), PER_IMAGE, replace=False).tolist()
        crowd: Answers = []
        spam_at = int(rng.integers(PER_IMAGE)) if rng.random() < profile.spam_share else -1
        for slot, worker in enumerate(chosen):
            if slot == spam_at:
                who, painter = f"s{int(rng.integers(6))}", spammer
            else:
                who, painter = f"p{worker}", profile.pool[worker]
            crowd.append([who, 1.0, _answer(rng, painter, scene, profile.semantic)])
        scenes.append(scene)
        answers.append(crowd)
    return scenes, as_parsed_json(answers)


# --- Scoring ---------------------------------------------------------------------------------


def _jaccard(a: Mask, b: Mask) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _decode(item: dict[str, Any]) -> Mask:
    rle = item.get("rle", item)
    counts = rle["counts"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out: Mask = (
            coco_mask.decode(
                {
                    "size": rle["size"],
                    "counts": counts.encode() if isinstance(counts, str) else counts,
                }
            )
            > 0
        )
    return out


def _truth_rles(scene: Scene) -> list[dict[str, Any]]:
    return [{**(r := _rle(b.mask)), "counts": r["counts"].encode()} for b in scene.blobs]


def instance_jaccard(scenes: Sequence[Scene], found: Sequence[Sequence[MergedObject]]) -> float:
    scores: list[float] = []
    for scene, objects in zip(scenes, found, strict=True):
        masks = [o.mask for o in objects if o.mask is not None]
        overlap = mask_iou(_truth_rles(scene), masks) if masks else None
        scores += overlap.max(axis=1).tolist() if overlap is not None else [0.0] * len(scene.blobs)
    return float(np.mean(scores))


def _truth_by_label(scene: Scene) -> dict[str, Mask]:
    out: dict[str, Mask] = {}
    for blob in scene.blobs:
        out[blob.label] = out.get(blob.label, np.zeros_like(blob.mask)) | blob.mask
    return out


def semantic_jaccard(scenes: Sequence[Scene], found: Sequence[Sequence[MergedObject]]) -> float:
    """Per true object, the Jaccard of its label's output with its label's truth."""
    scores: list[float] = []
    for scene, objects in zip(scenes, found, strict=True):
        truth = _truth_by_label(scene)
        output: dict[str, Mask] = {}
        for obj in objects:
            if obj.mask is not None:
                mine = _decode(obj.mask)
                output[obj.label] = output.get(obj.label, np.zeros_like(mine)) | mine
        for blob in scene.blobs:
            got = output.get(blob.label)
            scores.append(_jaccard(got, truth[blob.label]) if got is not None else 0.0)
    return float(np.mean(scores))


@dataclass(frozen=True)
class Task:
    """One object's masks as crowd-kit takes them, cropped, with its truth."""

    workers: list[str]
    masks: list[Mask]
    truth: Mask
    weight: int = 1  # true objects it stands for (semantic: the label's objects)


def _instance_tasks(scenes: Sequence[Scene], answers: Sequence[Answers]) -> list[Task]:
    tasks: list[Task] = []
    for scene, crowd in zip(scenes, answers, strict=True):
        painted = [(worker, _decode(item)) for worker, _, items in crowd for item in items]
        for blob in scene.blobs:
            best: dict[str, tuple[float, Mask]] = {}
            for worker, mask in painted:
                iou = _jaccard(mask, blob.mask)
                if iou >= 0.5 and iou > best.get(worker, (0.0, mask))[0]:
                    best[worker] = (iou, mask)
            union = blob.mask.copy()
            for _, mask in best.values():
                union |= mask
            ys, xs = np.nonzero(union)
            y0, y1 = max(ys.min() - 5, 0), min(ys.max() + 6, scene.height)
            x0, x1 = max(xs.min() - 5, 0), min(xs.max() + 6, scene.width)
            tasks.append(
                Task(
                    list(best),
                    [m[y0:y1, x0:x1] for _, m in best.values()],
                    blob.mask[y0:y1, x0:x1],
                )
            )
    return tasks


def _semantic_tasks(scenes: Sequence[Scene], answers: Sequence[Answers]) -> list[Task]:
    tasks: list[Task] = []
    for scene, crowd in zip(scenes, answers, strict=True):
        for label, truth in _truth_by_label(scene).items():
            workers, masks = [], []
            for worker, _, items in crowd:
                mine = np.zeros_like(truth)
                for item in items:
                    if item["label"] == label:
                        mine |= _decode(item)
                workers.append(worker)
                masks.append(mine)
            count = sum(blob.label == label for blob in scene.blobs)
            tasks.append(Task(workers, masks, truth, count))
    return tasks


def crowd_kit_jaccard(tasks: Sequence[Task], method: Any) -> tuple[float, float]:
    import pandas as pd  # type: ignore[import-untyped]

    frame = pd.DataFrame(
        [
            (t, worker, mask)
            for t, task in enumerate(tasks)
            for worker, mask in zip(task.workers, task.masks, strict=True)
        ],
        columns=["task", "worker", "segmentation"],
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = method.fit_predict(frame)
    seconds = time.perf_counter() - started
    scores = [
        _jaccard(np.asarray(result.loc[t], dtype=bool), task.truth) if t in result.index else 0.0
        for t, task in enumerate(tasks)
    ]
    weights = [task.weight for task in tasks]
    return float(np.average(scores, weights=weights)), seconds


def _majority(
    answers: Sequence[Answers], sizes: Sequence[tuple[int, int]]
) -> list[list[MergedObject]]:
    return [
        pixel_majority_vote(crowd, width=w, height=h)
        for crowd, (w, h) in zip(answers, sizes, strict=True)
    ]


def _row(dataset: str, method: str, jaccard: float, seconds: float, target: str) -> dict[str, Any]:
    return {
        "kind": "mask",
        "dataset": dataset,
        "method": method,
        "accuracy_or_f1": None,
        "mean_iou": round(jaccard, 4),
        "seconds": round(seconds, 4),
        "speedup": None,
        "target": target,
    }


def rows(quick: bool) -> list[dict[str, Any]]:
    from crowdkit.aggregation import (
        SegmentationEM,
        SegmentationMajorityVote,
        SegmentationRASA,
    )

    n_images = 60 if quick else 300
    out: list[dict[str, Any]] = []
    for p, profile in enumerate(PROFILES):
        scenes, answers = mask_crowd(profile, n_images, SEED + 40 + p)
        sizes = [(scene.width, scene.height) for scene in scenes]
        dataset = f"{profile.name}: {n_images} images, {profile.description}"
        score = semantic_jaccard if profile.semantic else instance_jaccard
        merge = merge_semantic_batch if profile.semantic else merge_masks_batch
        seconds, ours = best_time(partial(merge, answers, sizes), 1)
        base_seconds, base = best_time(partial(_majority, answers, sizes), 1)
        tasks = (_semantic_tasks if profile.semantic else _instance_tasks)(scenes, answers)
        clusters = "oracle labels" if profile.semantic else "oracle clusters"
        theirs = {
            name: crowd_kit_jaccard(tasks, method)
            for name, method in (
                ("crowd-kit SegmentationMajorityVote", SegmentationMajorityVote()),
                ("crowd-kit SegmentationEM", SegmentationEM()),
                ("crowd-kit SegmentationRASA", SegmentationRASA()),
            )
        }
        jaccard = score(scenes, ours)
        best_theirs = max(j for j, _ in theirs.values())
        out.append(
            _row(dataset, "pixel_majority_vote (end to end)", score(scenes, base), base_seconds,
                 "baseline")
        )  # fmt: skip
        for name, (j, s) in theirs.items():
            out.append(_row(dataset, f"{name} ({clusters})", j, s, "baseline"))
        ours_name = "merge_semantic_batch" if profile.semantic else "merge_masks_batch"
        out.append(
            _row(dataset, f"{ours_name} (em, end to end)", jaccard, seconds,
                 "ok" if jaccard >= best_theirs else "MISSED")
        )  # fmt: skip
    return out
