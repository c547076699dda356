"""Polygon consensus on a simulated crowd (the consensus benchmark's polygon rows). Pure.

The crowd is that of :mod:`bench.consensus_shapes` (its pool of workers); see its docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from qa.consensus.polygons import merge_polygons, pixel_majority_vote
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
        return [
            merge_polygons(crowd, width=image.width, height=image.height)
            for image, crowd in zip(images, answers, strict=True)
        ]

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
            "merge_polygons",
            f1,
            iou,
            seconds,
            base_seconds / seconds,
            "ok" if ok else "MISSED",
        ),
    ]


def rows(quick: bool) -> list[dict[str, Any]]:
    return polygon_rows(quick)
