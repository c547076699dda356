"""Keypoint consensus on a simulated crowd (the consensus benchmark's keypoint rows). Pure.

The crowd is that of :mod:`bench.consensus_shapes` (its pool of workers); see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.consensus_shapes import (
    SEED,
    Answers,
    FloatArray,
    Item,
    Pool,
    as_parsed_json,
    best_time,
    row,
    score_items,
)
from qa.consensus.keypoints import merge_keypoints
from qa.geometry import COCO_KEYPOINT_SIGMAS, keypoint_area, oks

KEYPOINT_NAMES = tuple(COCO_KEYPOINT_SIGMAS)
SIGMAS = {"person": np.array([COCO_KEYPOINT_SIGMAS[name] for name in KEYPOINT_NAMES])}
# A standing person, in units of their height, origin at the top of the head's box.
TEMPLATE = np.array(
    [
        [0.0, 0.06],
        [-0.03, 0.04],
        [0.03, 0.04],
        [-0.06, 0.05],
        [0.06, 0.05],
        [-0.12, 0.18],
        [0.12, 0.18],
        [-0.16, 0.33],
        [0.16, 0.33],
        [-0.17, 0.46],
        [0.17, 0.46],
        [-0.08, 0.52],
        [0.08, 0.52],
        [-0.09, 0.74],
        [0.09, 0.74],
        [-0.09, 0.96],
        [0.09, 0.96],
    ]
)
# Left and right keypoints, for the classic mistake of swapping a person's sides.
SWAP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


def keypoint_crowd(n_images: int, seed: int) -> tuple[list[list[Item]], list[Answers]]:
    rng = np.random.default_rng(seed)
    pool = Pool.draw(rng)
    truths: list[list[Item]] = []
    answers: list[Answers] = []
    for _ in range(n_images):
        truth: list[Item] = []
        for _ in range(int(rng.integers(1, 5))):
            height = rng.uniform(80, 300)
            origin = rng.uniform([height / 4, 0], [640 - height / 4, 480 - height])
            xy = origin + TEMPLATE * height + rng.normal(0, 0.03 * height, TEMPLATE.shape)
            v = rng.choice([2, 1, 0], size=len(TEMPLATE), p=[0.8, 0.15, 0.05])
            truth.append({"label": "person", "keypoints": np.column_stack([xy, v]).tolist()})
        truths.append(truth)
        answers.append(
            [
                [worker, weight, _keypoint_answer(rng, truth, skill)]
                for worker, weight, skill in pool.workers(rng)
            ]
        )
    return truths, as_parsed_json(answers)


def _keypoint_answer(
    rng: np.random.Generator, truth: list[Item], skill: float | None
) -> list[Item]:
    k = len(TEMPLATE)
    if skill is None:
        out = []
        for _ in range(int(rng.integers(1, 4))):
            height = rng.uniform(80, 300)
            xy = rng.uniform([0, 0], [640, 480]) + rng.normal(0, height / 3, (k, 2))
            out.append(
                {
                    "label": "person",
                    "keypoints": np.column_stack([xy, rng.choice([1, 2], k)]).tolist(),
                }
            )
        return out
    miss, flip, slip = 0.5 * (1 - skill), 0.5 * (1 - skill), 0.25 * (1 - skill)
    noise = 0.15 + 1.0 * (1 - skill)  # position error in units of the keypoint's tolerance
    items: list[Item] = []
    for obj in truth:
        if rng.random() < miss:
            continue
        kps = np.array(obj["keypoints"])
        scale = np.sqrt(max(keypoint_area(kps), 1.0))
        tolerance = 2 * SIGMAS["person"] * scale
        xy = kps[:, :2] + rng.normal(0, 1, (k, 2)) * (noise * tolerance)[:, None]
        v = kps[:, 2].copy()
        if rng.random() < slip:
            xy, v = xy[SWAP], v[SWAP]
        changed = rng.random(k) < flip
        v = np.where(changed & (v > 0), 3 - v, v)  # visible <-> occluded
        dropped = rng.random(k) < slip
        guessed = (v == 0) & ~dropped & (rng.random(k) < slip)
        v = np.where(dropped, 0, np.where(guessed, 2, v))
        xy = np.where((v == 0)[:, None], 0.0, xy)
        items.append({"label": "person", "keypoints": np.column_stack([xy, v]).tolist()})
    return items


def _mean_keypoints(answers: Answers) -> list[Item]:
    """Baseline: the same clusters (found without weights), each keypoint the plain mean of
    the members that marked it, present when at least half of the members marked it."""
    unweighted = [[worker, 1.0, items] for worker, _, items in answers]
    out: list[Item] = []
    for obj in merge_keypoints(unweighted, sigmas=SIGMAS):
        by_worker = {worker: items for worker, _, items in answers}
        kps = np.array(
            [by_worker[m.worker][m.item]["keypoints"] for m in obj.members], dtype=np.float64
        )
        marked = kps[:, :, 2] > 0
        count = marked.sum(axis=0)
        present = count * 2 >= len(kps)
        xy = (
            np.where(marked[:, :, None], kps[:, :, :2], 0.0).sum(axis=0)
            / np.maximum(count, 1)[:, None]
        )
        visible = (kps[:, :, 2] == 2).sum(axis=0) >= (kps[:, :, 2] == 1).sum(axis=0)
        v = np.where(present, np.where(visible, 2, 1), 0)
        out.append(
            {
                "label": obj.label,
                "keypoints": np.column_stack([np.where(present[:, None], xy, 0.0), v]).tolist(),
            }
        )
    return out


def _oks_similarity(index: int, gold: Sequence[Item], ours: Sequence[Item]) -> FloatArray:
    refs = np.array([g["keypoints"] for g in gold], dtype=np.float64)
    cands = np.array([o["keypoints"] for o in ours], dtype=np.float64)
    areas = [keypoint_area(r) for r in refs]
    return np.asarray(oks(cands, refs, SIGMAS["person"], areas).T, dtype=np.float64)


def keypoint_rows(quick: bool) -> list[dict[str, Any]]:
    n_images = 100 if quick else 300
    truths, answers = keypoint_crowd(n_images, SEED)
    dataset = f"{n_images} images, 1-4 people x 17 keypoints, 5 workers (1 spammer)"
    base_seconds, base = best_time(lambda: [_mean_keypoints(crowd) for crowd in answers], 1)
    seconds, merged = best_time(
        lambda: [merge_keypoints(crowd, sigmas=SIGMAS) for crowd in answers], 1
    )
    base_f1, _, base_oks = score_items(truths, base, _oks_similarity, 0.5)
    f1, _, mean_oks = score_items(
        truths, [[o.to_item() for o in objs] for objs in merged], _oks_similarity, 0.5
    )
    ok = f1 >= base_f1 and mean_oks >= base_oks
    return [
        row(
            "keypoints",
            dataset,
            "unweighted per-keypoint mean (same clusters)",
            base_f1,
            base_oks,
            base_seconds,
            1.0,
            "baseline",
        ),
        row(
            "keypoints",
            dataset,
            "merge_keypoints",
            f1,
            mean_oks,
            seconds,
            base_seconds / seconds,
            "ok" if ok else "MISSED",
        ),
    ]


def rows(quick: bool) -> list[dict[str, Any]]:
    return keypoint_rows(quick)
