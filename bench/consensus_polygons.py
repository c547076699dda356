"""Polygon consensus on simulated crowds (the consensus benchmark's polygon rows). Pure.

Two kinds of rows:

- **object F1**: the star-polygon crowd of :mod:`bench.consensus_shapes` (its pool of
  workers, see its docstring): ``merge_polygons_batch`` (the worker model learnt over the
  set) against ``pixel_majority_vote``; F1 at mask IoU 0.5 with the label, and the mask IoU
  per true object (0 when missed); target: both at least the baseline's.
- **mask Jaccard, crowd profiles** (``PROFILES``): outlines drawn the way people draw them
  wrong. The true objects are smooth blobs, some with a protruding part (a concave neck on
  each side). Each worker of a pool (ids kept across images, as on a project) has habits:
  a boundary *bias* (tracing outside or inside the edge, a share of the radius), vertex
  *jitter*, how many *vertices* they click (few vertices cut every curve), how often they
  leave the protruding part out, recall, and spammers who drop crude quadrilaterals about
  the object or blobs anywhere. Per true object, the Jaccard of each method's mask with the
  true mask, averaged over the true objects (0 when a method has none for it):

  - ours, end to end: ``merge_polygons_batch`` with its defaults (clustering, existence,
    model learnt over the set), the output object overlapping the truth most;
  - ``pixel_majority_vote`` end to end, the same way;
  - crowd-kit's ``SegmentationMajorityVote``, ``SegmentationEM`` and ``SegmentationRASA``,
    each task being one true object's cluster as an oracle forms it (each worker's polygon
    overlapping the truth most, if at IoU 0.5 or more), cropped to a window around it. They
    get the clustering for free; ours finds it.

  Target of our row: ok when its mean Jaccard is at least every crowd-kit method's.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask

from bench.consensus_shapes import (
    CLASSES,
    SEED,
    Answers,
    FloatArray,
    Item,
    Pool,
    as_parsed_json,
    best_time,
    other_label,
    row,
    score_items,
)
from qa.consensus.objects import MergedObject
from qa.consensus.polygons import merge_polygons_batch, pixel_majority_vote
from qa.geometry import mask_iou
from qa.geometry import polygons_to_rles as rasterise


@dataclass(frozen=True)
class PolygonImage:
    width: int
    height: int
    truth: list[Item]
    rles: list[dict[str, Any]]


def polygon_crowd(n_images: int, seed: int) -> tuple[list[PolygonImage], list[Answers]]:
    rng = np.random.default_rng(seed)
    pool = Pool.draw(rng)
    images: list[PolygonImage] = []
    answers: list[Answers] = []
    for _ in range(n_images):
        width, height = ((320, 240), (480, 360), (640, 480))[int(rng.integers(3))]
        truth: list[Item] = []
        for _ in range(int(rng.integers(1, 5))):
            radius = rng.uniform(15, min(width, height) / 5)
            centre = rng.uniform([radius, radius], [width - radius, height - radius])
            truth.append(
                {
                    "label": CLASSES[int(rng.integers(len(CLASSES)))],
                    "points": _star(rng, centre, radius),
                }
            )
        images.append(
            PolygonImage(
                width, height, truth, rasterise([t["points"] for t in truth], width, height)
            )
        )
        answers.append(
            [
                [worker, weight, _polygon_answer(rng, truth, skill, width, height)]
                for worker, weight, skill in pool.workers(rng)
            ]
        )
    return images, as_parsed_json(answers)


def _star(rng: np.random.Generator, centre: FloatArray, radius: float) -> list[list[float]]:
    """A random star-shaped polygon (convex when its radii are close)."""
    n = int(rng.integers(6, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.6, 1.0, n)
    points = centre + np.column_stack([np.cos(angles), np.sin(angles)]) * radii[:, None]
    return points.tolist()


def _polygon_answer(
    rng: np.random.Generator, truth: list[Item], skill: float | None, width: int, height: int
) -> list[Item]:
    def random_polygon() -> Item:
        radius = rng.uniform(10, min(width, height) / 5)
        centre = rng.uniform([radius, radius], [width - radius, height - radius])
        return {
            "label": CLASSES[int(rng.integers(len(CLASSES)))],
            "points": _star(rng, centre, radius),
        }

    if skill is None:
        return [random_polygon() for _ in range(int(rng.integers(1, 5)))]
    miss, confusion, extra = 0.5 * (1 - skill), 0.25 * (1 - skill), 0.25 * (1 - skill)
    jitter = 0.02 + 0.2 * (1 - skill)  # per vertex, as a share of the polygon's radius
    items: list[Item] = []
    for obj in truth:
        if rng.random() < miss:
            continue
        points = np.array(obj["points"])
        radius = float(np.linalg.norm(points - points.mean(axis=0), axis=1).mean())
        moved = (
            points
            + rng.normal(0, jitter * radius, points.shape)
            + rng.normal(0, jitter * radius / 2, 2)
        )
        label = other_label(rng, obj["label"]) if rng.random() < confusion else obj["label"]
        items.append({"label": label, "points": moved.tolist()})
        if rng.random() < extra:
            items.append(random_polygon())
    return items


def _masks_similarity(
    images: Sequence[PolygonImage],
) -> Callable[[int, Sequence[Item], Sequence[Item]], FloatArray]:
    def similarity(index: int, gold: Sequence[Item], ours: Sequence[Item]) -> FloatArray:
        return mask_iou(images[index].rles, [o["rle"] for o in ours])

    return similarity


def polygon_rows(quick: bool) -> list[dict[str, Any]]:
    n_images = 100 if quick else 500
    images, answers = polygon_crowd(n_images, SEED)
    dataset = f"{n_images} images, 1-4 star polygons, 5 workers (1 spammer)"
    truth = [image.truth for image in images]
    similarity = _masks_similarity(images)

    def ours() -> list[list[MergedObject]]:
        return merge_polygons_batch(answers, [(image.width, image.height) for image in images])

    def baseline() -> list[list[MergedObject]]:
        return [
            pixel_majority_vote(crowd, width=image.width, height=image.height)
            for image, crowd in zip(images, answers, strict=True)
        ]

    base_seconds, base_objects = best_time(baseline, 1)
    seconds, objects = best_time(ours, 1)
    base_f1, _, base_iou = score_items(
        truth, [[o.to_item() for o in objs] for objs in base_objects], similarity, 0.5
    )
    f1, _, iou = score_items(
        truth, [[o.to_item() for o in objs] for objs in objects], similarity, 0.5
    )
    ok = f1 >= base_f1 and iou >= base_iou
    return [
        row(
            "polygon",
            dataset,
            "pixel_majority_vote (unweighted)",
            base_f1,
            base_iou,
            base_seconds,
            1.0,
            "baseline",
        ),
        row(
            "polygon",
            dataset,
            "merge_polygons_batch (em)",
            f1,
            iou,
            seconds,
            base_seconds / seconds,
            "ok" if ok else "MISSED",
        ),
    ]


def rows(quick: bool) -> list[dict[str, Any]]:
    return polygon_rows(quick) + profile_rows(quick)


# Crowd profiles: outlines drawn wrong the ways people draw them wrong.


@dataclass(frozen=True)
class Drawer:
    """A worker's habits (lengths as a share of the object's radius)."""

    bias: float = 0.0  # outward offset of their whole outline
    jitter: float = 0.015  # per vertex
    vertices: int = 48  # clicked around the outline
    leaves_out: float = 0.0  # chance they leave the protruding part out
    recall: float = 0.95
    spammer: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    pool: tuple[Drawer, ...]
    lobes: float  # share of objects with a protruding part
    per_image: int = 5


def _pool(*groups: tuple[int, Drawer]) -> tuple[Drawer, ...]:
    return tuple(drawer for count, drawer in groups for _ in range(count))


PROFILES = (
    Profile(
        "over/under-drawers",
        "5 of 16: 6 careful, 4 trace outside (+6-10%), 3 inside (-6%), 3 jittery (6%)",
        _pool(
            (6, Drawer()),
            (2, Drawer(bias=0.06)),
            (2, Drawer(bias=0.10)),
            (3, Drawer(bias=-0.06)),
            (3, Drawer(jitter=0.06)),
        ),
        lobes=0.2,
    ),
    Profile(
        "coarse outlines",
        "5 of 16 on lobed blobs: 8 click 6-9 vertices, 8 trace finely with 3% jitter",
        _pool(
            (4, Drawer(vertices=6, jitter=0.02)),
            (4, Drawer(vertices=9, jitter=0.02)),
            (8, Drawer(jitter=0.03)),
        ),
        lobes=0.7,
    ),
    Profile(
        "missed parts+spam",
        "5 of 18 on lobed blobs: 6 careful, 6 leave the lobe out half the time, "
        "2 over-draw, 4 spammers",
        _pool(
            (6, Drawer(jitter=0.02)),
            (6, Drawer(jitter=0.02, leaves_out=0.5)),
            (2, Drawer(bias=0.08, jitter=0.02)),
            (4, Drawer(spammer=True)),
        ),
        lobes=0.8,
    ),
)


@dataclass(frozen=True)
class _Blob:
    outline: FloatArray  # (n, 2) dense, clockwise on the screen
    normal: FloatArray  # (n, 2) outward unit normals
    radius: float
    lobe: tuple[int, int] | None  # index range of the protruding part


def _blob(rng: np.random.Generator, width: int, height: int, lobes: float) -> _Blob:
    n = 192
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = float(rng.uniform(18, min(width, height) / 6))
    r = np.ones(n)
    for k in (2, 3, 4):
        r += rng.uniform(0, 0.12 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    lobe = None
    if rng.random() < lobes:
        at, spread = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.35)
        distance = np.angle(np.exp(1j * (theta - at)))
        r += rng.uniform(0.5, 0.9) * np.exp(-((distance / spread) ** 4))
        inside = np.flatnonzero(np.abs(distance) < 1.6 * spread)
        lobe = (int(inside[0]), int(inside[-1])) if len(inside) else None
        if lobe is not None and inside[-1] - inside[0] != len(inside) - 1:
            lobe = None  # the lobe straddles angle 0; keep it, never leave it out
    scale = radius * r
    centre = rng.uniform(
        [scale.max() + 2, scale.max() + 2], [width - scale.max() - 2, height - scale.max() - 2]
    )
    outline = centre + np.column_stack([np.cos(theta), np.sin(theta)]) * scale[:, None]
    tangent = np.roll(outline, -1, axis=0) - np.roll(outline, 1, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    if np.mean(np.sum(normal * (outline - centre), axis=1)) < 0:
        normal = -normal
    return _Blob(outline, normal, radius, lobe)


def _drawn(rng: np.random.Generator, drawer: Drawer, blob: _Blob) -> list[list[float]]:
    n = len(blob.outline)
    moved = blob.outline + blob.normal * drawer.bias * blob.radius
    keep = np.ones(n, dtype=bool)
    if blob.lobe is not None and rng.random() < drawer.leaves_out:
        keep[blob.lobe[0] + 1 : blob.lobe[1]] = False  # a chord across the lobe's neck
    picked = np.linspace(0, n, drawer.vertices, endpoint=False) + rng.uniform(
        0, n / drawer.vertices
    )
    index = np.unique(picked.astype(int) % n)
    index = index[keep[index]]
    if blob.lobe is not None and not keep.all():
        index = np.unique(np.concatenate([index, list(blob.lobe)]))
    points = moved[index] + rng.normal(0, drawer.jitter * blob.radius, (len(index), 2))
    return points.tolist()


def _spam(rng: np.random.Generator, blob: _Blob, width: int, height: int) -> list[list[float]]:
    if rng.random() < 0.5:
        # A crude quadrilateral about the object.
        x0, y0 = blob.outline.min(axis=0)
        x1, y1 = blob.outline.max(axis=0)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        return (corners + rng.normal(0, 0.15 * blob.radius, (4, 2))).tolist()
    other = _blob(rng, width, height, 0.0)
    return other.outline[:: len(other.outline) // 8].tolist()


def profile_crowd(
    profile: Profile, n_images: int, seed: int
) -> tuple[list[PolygonImage], list[Answers]]:
    rng = np.random.default_rng(seed)
    images: list[PolygonImage] = []
    answers: list[Answers] = []
    for _ in range(n_images):
        width, height = ((320, 240), (480, 360), (640, 480))[int(rng.integers(3))]
        blobs = [_blob(rng, width, height, profile.lobes) for _ in range(int(rng.integers(1, 4)))]
        truth = [
            {"label": CLASSES[int(rng.integers(len(CLASSES)))], "points": b.outline.tolist()}
            for b in blobs
        ]
        images.append(
            PolygonImage(
                width, height, truth, rasterise([t["points"] for t in truth], width, height)
            )
        )
        chosen = rng.choice(len(profile.pool), profile.per_image, replace=False).tolist()
        crowd: Answers = []
        for worker in chosen:
            drawer = profile.pool[worker]
            items: list[Item] = []
            for blob, obj in zip(blobs, truth, strict=True):
                if drawer.spammer:
                    items.append({"label": obj["label"], "points": _spam(rng, blob, width, height)})
                elif rng.random() < drawer.recall:
                    items.append({"label": obj["label"], "points": _drawn(rng, drawer, blob)})
            crowd.append([f"p{worker}", 1.0, items])
        answers.append(crowd)
    return images, as_parsed_json(answers)


@dataclass(frozen=True)
class _Task:
    """One true object's oracle cluster, cropped: the members' masks and the truth's."""

    workers: list[str]
    masks: list[npt.NDArray[np.bool_]]
    truth: npt.NDArray[np.bool_]


def _oracle_tasks(images: Sequence[PolygonImage], answers: Sequence[Answers]) -> list[_Task]:
    tasks: list[_Task] = []
    for image, crowd in zip(images, answers, strict=True):
        drawn = [(worker, item["points"]) for worker, _, items in crowd for item in items]
        rles = rasterise([points for _, points in drawn], image.width, image.height)
        overlap = mask_iou(image.rles, rles)
        for t, truth in enumerate(image.truth):
            best: dict[str, int] = {}
            for d, (worker, _) in enumerate(drawn):
                if overlap[t, d] >= 0.5 and (
                    worker not in best or overlap[t, d] > overlap[t, best[worker]]
                ):
                    best[worker] = d
            shapes = [np.asarray(truth["points"])] + [
                np.asarray(drawn[d][1]) for d in best.values()
            ]
            everything = np.concatenate(shapes)
            x0, y0 = np.maximum(np.floor(everything.min(axis=0)) - 5, 0).astype(int)
            x1 = int(min(np.ceil(everything[:, 0].max()) + 5, image.width))
            y1 = int(min(np.ceil(everything[:, 1].max()) + 5, image.height))
            crops = _decode(rasterise([s - (x0, y0) for s in shapes], x1 - x0, y1 - y0))
            tasks.append(
                _Task(
                    list(best),
                    [crops[:, :, i] > 0 for i in range(1, len(shapes))],
                    crops[:, :, 0] > 0,
                )
            )
    return tasks


def _decode(rles: list[dict[str, Any]]) -> npt.NDArray[np.uint8]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        masks: npt.NDArray[np.uint8] = coco_mask.decode(rles)
    return masks


def _jaccard(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _crowd_kit_jaccard(tasks: Sequence[_Task], method: Any) -> tuple[float, float]:
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
    result = method.fit_predict(frame)
    seconds = time.perf_counter() - started
    scores = [
        _jaccard(np.asarray(result.loc[t], dtype=bool), task.truth) if t in result.index else 0.0
        for t, task in enumerate(tasks)
    ]
    return float(np.mean(scores)), seconds


def _end_to_end_jaccard(
    images: Sequence[PolygonImage], objects: Sequence[Sequence[MergedObject]]
) -> float:
    scores: list[float] = []
    for image, found in zip(images, objects, strict=True):
        masks = [o.mask for o in found if o.mask is not None]
        overlap = mask_iou(image.rles, masks)
        scores += (overlap.max(axis=1) if masks else np.zeros(len(image.rles))).tolist()
    return float(np.mean(scores))


def profile_rows(quick: bool) -> list[dict[str, Any]]:
    from crowdkit.aggregation import (
        SegmentationEM,
        SegmentationMajorityVote,
        SegmentationRASA,
    )

    n_images = 100 if quick else 400
    out: list[dict[str, Any]] = []
    for p, profile in enumerate(PROFILES):
        images, answers = profile_crowd(profile, n_images, SEED + 10 + p)
        sizes = [(image.width, image.height) for image in images]
        dataset = f"{profile.name}: {n_images} images, {profile.description}"
        tasks = _oracle_tasks(images, answers)
        seconds, ours = best_time(partial(merge_polygons_batch, answers, sizes), 1)
        base_seconds, base = best_time(partial(_pixel_majority_votes, answers, sizes), 1)
        theirs = {
            name: _crowd_kit_jaccard(tasks, method)
            for name, method in (
                ("crowd-kit SegmentationMajorityVote", SegmentationMajorityVote()),
                ("crowd-kit SegmentationEM", SegmentationEM()),
                ("crowd-kit SegmentationRASA", SegmentationRASA()),
            )
        }
        jaccard = _end_to_end_jaccard(images, ours)
        best_theirs = max(j for j, _ in theirs.values())
        out.append(
            _jaccard_row(
                dataset, "pixel_majority_vote (end to end)", _end_to_end_jaccard(images, base),
                base_seconds, "baseline",
            )
        )  # fmt: skip
        for name, (j, s) in theirs.items():
            out.append(_jaccard_row(dataset, f"{name} (oracle clusters)", j, s, "baseline"))
        out.append(
            _jaccard_row(
                dataset, "merge_polygons_batch (em, end to end)", jaccard, seconds,
                "ok" if jaccard >= best_theirs else "MISSED",
            )
        )  # fmt: skip
    return out


def _pixel_majority_votes(
    answers: Sequence[Answers], sizes: Sequence[tuple[int, int]]
) -> list[list[MergedObject]]:
    return [
        pixel_majority_vote(crowd, width=w, height=h)
        for crowd, (w, h) in zip(answers, sizes, strict=True)
    ]


def _jaccard_row(
    dataset: str, method: str, jaccard: float, seconds: float, target: str
) -> dict[str, Any]:
    return {
        "kind": "polygon mask",
        "dataset": dataset,
        "method": method,
        "accuracy_or_f1": None,
        "mean_iou": round(jaccard, 4),
        "seconds": round(seconds, 4),
        "speedup": None,
        "target": target,
    }
