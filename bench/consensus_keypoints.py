"""Keypoint consensus on simulated crowds (the consensus benchmark's keypoint rows). Pure.

Each profile (``PROFILES``) is a crowd of a different structure: a pool of workers with fixed
skills kept across images (``w<i>``, spammers ``s<i>``), each skill drawn from a beta law, so
skill varies continuously across the pool. Each image has 1-4 people of 17 COCO keypoints;
its ``overlap`` workers are drawn from the pool, and on a share of the images some of them are
replaced by spammers (who place random skeletons). An honest worker of skill ``s`` misses a
person with chance ``(1 - s) / 2``, jitters each point by ``0.15 + (1 - s)`` of its OKS
tolerance, flips visible and occluded, drops and guesses points, and mirrors a person left to
right with chance ``(1 - s) / 4``; a share of the pool (``swappers``) mirrors 40% of people.
Each worker's weight is their skill plus the error of a gold-based estimate.

Three merges per profile: ``merge_keypoints_batch`` (the worker model learnt by EM over the
profile's images, told COCO's left-right order), ``merge_keypoints`` with its fixed quorum 0.5
on the weights, and the unweighted mean baseline (the quorum's clusters found without
weights, each keypoint the plain mean of the members that marked it, present when half
marked it). Accuracy is F1 at OKS 0.5; ``mean_iou`` is the OKS per true instance (0 when
missed); ``seconds`` the wall time of one run over the profile. Target of the EM row: F1 and
mean OKS both at least the quorum's and the baseline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.consensus_shapes import (
    SEED,
    Answers,
    FloatArray,
    Item,
    as_parsed_json,
    best_time,
    row,
    score_items,
)
from qa.consensus.keypoints import merge_keypoints, merge_keypoints_batch
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


MIRROR = {"person": SWAP.tolist()}
SWAPPER_RATE = 0.4


@dataclass(frozen=True)
class Profile:
    name: str
    overlap: int  # workers an image
    pool: int  # honest workers, kept across images
    skill: tuple[float, float]  # beta law of the pool's skills
    spammed: float  # share of the images where spammers take some of the seats
    spammers: int  # spammers on such an image
    swappers: float = 0.0  # share of the pool who mirror people left to right often


PROFILES = (
    Profile("overlap 5: 4 of 100 (skill ~ Beta(8, 2)) + 1 spammer", 5, 100, (8, 2), 1.0, 1),
    Profile("overlap 3 from 60 of varied skill (Beta(3, 2))", 3, 60, (3, 2), 0.0, 0),
    Profile("overlap 5 from 80, 2 spammers on 30% of images", 5, 80, (6, 2), 0.3, 2),
    Profile("overlap 5 from 80, a quarter mirror 40% of people", 5, 80, (6, 2), 0.0, 0, 0.25),
    Profile("overlap 3 from 40, 1 spammer on half the images", 3, 40, (5, 2), 0.5, 1),
)
SPAMMER_POOL = 20


def keypoint_crowd(
    profile: Profile, n_images: int, seed: int
) -> tuple[list[list[Item]], list[Answers]]:
    rng = np.random.default_rng(seed)
    skill = np.clip(rng.beta(*profile.skill, profile.pool), 0.3, 0.99)
    weight = np.clip(skill + rng.normal(0, 0.05, profile.pool), 0.05, 1.0)
    swapper = rng.random(profile.pool) < profile.swappers
    spammer_weight = np.clip(rng.uniform(0.05, 0.3, SPAMMER_POOL), 0.05, 1.0)
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
        n_spammers = profile.spammers if rng.random() < profile.spammed else 0
        seats: list[Any] = []
        for i in rng.choice(profile.pool, profile.overlap - n_spammers, replace=False).tolist():
            swaps = SWAPPER_RATE if swapper[i] else 0.25 * (1 - skill[i])
            items = _keypoint_answer(rng, truth, float(skill[i]), swaps)
            seats.append([f"w{i}", float(weight[i]), items])
        for j in rng.choice(SPAMMER_POOL, n_spammers, replace=False).tolist():
            seats.append([f"s{j}", float(spammer_weight[j]), _keypoint_answer(rng, truth, None)])
        answers.append([seats[i] for i in rng.permutation(len(seats)).tolist()])
    return truths, as_parsed_json(answers)


def _keypoint_answer(
    rng: np.random.Generator, truth: list[Item], skill: float | None, swaps: float = 0.0
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
        if rng.random() < swaps:
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


def _scores(truths: list[list[Item]], found: Sequence[Sequence[Item]]) -> tuple[float, float]:
    f1, _, mean_oks = score_items(truths, found, _oks_similarity, 0.5)
    return f1, mean_oks


def profile_rows(profile: Profile, n_images: int) -> list[dict[str, Any]]:
    truths, answers = keypoint_crowd(profile, n_images, SEED)
    dataset = f"{n_images} images, {profile.name}"
    base_s, base = best_time(lambda: [_mean_keypoints(crowd) for crowd in answers], 1)
    quorum_s, quorum = best_time(
        lambda: [merge_keypoints(crowd, sigmas=SIGMAS) for crowd in answers], 1
    )
    em_s, em = best_time(lambda: merge_keypoints_batch(answers, sigmas=SIGMAS, mirror=MIRROR), 1)
    base_f1, base_oks = _scores(truths, base)
    quorum_f1, quorum_oks = _scores(truths, [[o.to_item() for o in objs] for objs in quorum])
    em_f1, em_oks = _scores(truths, [[o.to_item() for o in objs] for objs in em])
    ok = em_f1 >= max(base_f1, quorum_f1) and em_oks >= max(base_oks, quorum_oks)
    return [
        row("keypoints", dataset, "unweighted per-keypoint mean", base_f1, base_oks, base_s,
            None, "baseline"),
        row("keypoints", dataset, "merge_keypoints (quorum 0.5)", quorum_f1, quorum_oks,
            quorum_s, None, "peer"),
        row("keypoints", dataset, 'merge_keypoints_batch (method="em")', em_f1, em_oks, em_s,
            None, "ok" if ok else "MISSED"),
    ]  # fmt: skip


def rows(quick: bool) -> list[dict[str, Any]]:
    n_images = 100 if quick else 300
    return [r for profile in PROFILES for r in profile_rows(profile, n_images)]
