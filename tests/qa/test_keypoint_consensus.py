"""The keypoint worker model: learnt by EM over a batch, applied as is with a given model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from qa.consensus.box_em import GoldRates
from qa.consensus.keypoints import keypoint_model, merge_keypoints, merge_keypoints_batch
from qa.geometry import keypoint_area, oks

# A small skeleton: head, two hands, two feet.
SIGMAS = {"star": np.array([0.05, 0.07, 0.07, 0.09, 0.09])}
SHAPE = np.array([[0.0, 0.0], [-0.5, 0.4], [0.5, 0.4], [-0.3, 1.0], [0.3, 1.0]])
MIRROR = {"star": [0, 2, 1, 4, 3]}


@dataclass(frozen=True)
class Worker:
    name: str
    recall: float = 0.95
    noise: float = 0.1  # per axis, in units of each point's OKS tolerance
    false_marks: float = 0.05  # random instances a picture
    mirrors: float = 0.0  # chance of marking an instance left to right


def crowd(
    workers: list[Worker], n_images: int, seed: int = 7
) -> tuple[list[list[np.ndarray]], list[list[tuple[str, float, list[dict]]]]]:
    """Images of 1-3 stars; every worker answers every image, with weight 1 (no gold)."""
    rng = np.random.default_rng(seed)
    truths, images = [], []
    for _ in range(n_images):
        truth = []
        for n in range(int(rng.integers(1, 4))):
            size = rng.uniform(60, 120)
            origin = np.array([100 + 200 * n, rng.uniform(50, 250)])
            truth.append(np.column_stack([origin + SHAPE * size, np.full(5, 2.0)]))
        answers = []
        for worker in workers:
            items = []
            for person in truth:
                if rng.random() >= worker.recall:
                    continue
                tolerance = 2 * SIGMAS["star"] * np.sqrt(keypoint_area(person))
                points = person.copy()
                points[:, :2] += rng.normal(0, 1, (5, 2)) * (worker.noise * tolerance)[:, None]
                if rng.random() < worker.mirrors:
                    points = points[MIRROR["star"]]
                items.append(points)
            for _ in range(rng.poisson(worker.false_marks)):
                origin = rng.uniform([50, 50], [650, 300])
                jitter = rng.normal(0, 30, (5, 2))
                items.append(np.column_stack([origin + SHAPE * 80 + jitter, np.full(5, 2.0)]))
            answers.append(
                (worker.name, 1.0, [{"label": "star", "keypoints": p.tolist()} for p in items])
            )
        truths.append(truth)
        images.append(answers)
    return truths, images


def found(objects: list) -> list[np.ndarray]:
    return [np.array(obj.keypoints) for obj in objects]


def recall_precision(
    truths: list[list[np.ndarray]], merged: list[list]
) -> tuple[float, float, float]:
    """Share of true instances found (OKS >= 0.5), share of merged ones true, mean OKS per true
    instance."""
    hits, n_true, n_found, total = 0, 0, 0, 0.0
    for truth, objects in zip(truths, merged, strict=True):
        ours = found(objects)
        n_true += len(truth)
        n_found += len(ours)
        if not ours:
            continue
        areas = [keypoint_area(t) for t in truth]
        best = oks(np.array(ours), np.array(truth), SIGMAS["star"], areas).max(axis=0)
        hits += int((best >= 0.5).sum())
        total += float(best.sum())
    return hits / n_true, hits / max(n_found, 1), total / n_true


def test_em_recovers_each_workers_recall_and_precision_order() -> None:
    workers = [
        Worker("sharp", recall=0.97, noise=0.08),
        Worker("steady", recall=0.9, noise=0.2),
        Worker("forgetful", recall=0.6, noise=0.12),
        Worker("shaky", recall=0.85, noise=0.45),
        Worker("average", recall=0.8, noise=0.3),
    ]
    _, images = crowd(workers, 150)
    model = keypoint_model(images, sigmas=SIGMAS)
    for worker in workers:
        assert model.workers[worker.name].recall == pytest.approx(worker.recall, abs=0.08)
    by_noise = sorted(workers, key=lambda w: w.noise)
    learnt = [model.workers[w.name].noise for w in by_noise]
    assert learnt == sorted(learnt)
    # Each point type's noise too, shrunk but in the same order.
    hands = [model.workers[w.name].keypoint_noise["star"][1] for w in by_noise]
    assert hands == sorted(hands)
    assert model.workers["sharp"].images == 150


def test_a_spammer_is_down_weighted_without_gold() -> None:
    honest = [Worker(f"h{i}", noise=0.1 + 0.05 * i) for i in range(3)]
    spammer = Worker("spam", recall=0.9, noise=1.2, false_marks=1.5)
    truths, images = crowd([*honest, spammer], 120)
    model = keypoint_model(images, sigmas=SIGMAS)
    worst_honest = max(model.workers[w.name].noise for w in honest)
    assert model.workers["spam"].noise > 3 * worst_honest
    assert model.workers["spam"].false_marks > 5 * max(
        model.workers[w.name].false_marks for w in honest
    )
    em = merge_keypoints_batch(images, sigmas=SIGMAS)
    fixed = [merge_keypoints(image, sigmas=SIGMAS) for image in images]
    em_recall, em_precision, em_oks = recall_precision(truths, em)
    _, _, fixed_oks = recall_precision(truths, fixed)
    assert em_recall >= 0.97
    assert em_precision >= 0.97
    # The points are placed by precision: the spammer's loose points, which the fixed rule
    # averages in where they fall near the median, barely move them.
    assert 1 - em_oks < 0.8 * (1 - fixed_oks)


def test_two_honest_workers_of_five_keep_what_they_agree_on() -> None:
    honest = [Worker("a", recall=0.97), Worker("b", recall=0.97)]
    spammers = [Worker(f"s{i}", recall=0.0, false_marks=1.0) for i in range(3)]
    truths, images = crowd([*spammers, *honest], 150)
    em_recall, em_precision, _ = recall_precision(
        truths, merge_keypoints_batch(images, sigmas=SIGMAS)
    )
    quorum_recall, _, _ = recall_precision(
        truths, [merge_keypoints(image, sigmas=SIGMAS) for image in images]
    )
    assert quorum_recall < 0.1  # two of five never reach the fixed quorum
    assert em_recall >= 0.9
    assert em_precision >= 0.95


def test_a_mirroring_worker_is_turned_back_and_learnt() -> None:
    workers = [Worker(f"h{i}", noise=0.15) for i in range(3)] + [Worker("m", mirrors=0.8)]
    truths, images = crowd(workers, 100)
    model = keypoint_model(images, sigmas=SIGMAS, mirror=MIRROR)
    assert model.workers["m"].swaps > 0.6
    assert max(model.workers[f"h{i}"].swaps for i in range(3)) < 0.1
    turned = merge_keypoints_batch(images, sigmas=SIGMAS, mirror=MIRROR)
    as_drawn = merge_keypoints_batch(images, sigmas=SIGMAS)
    assert recall_precision(truths, turned)[2] > recall_precision(truths, as_drawn)[2]


def test_a_project_merged_in_chunks_with_one_model_equals_one_batch() -> None:
    workers = [
        Worker("a", noise=0.1),
        Worker("b", recall=0.7, noise=0.3),
        Worker("c", noise=0.6, false_marks=0.5),
        Worker("d", recall=0.85, mirrors=0.3),
    ]
    _, images = crowd(workers, 60)
    whole = merge_keypoints_batch(images, sigmas=SIGMAS, mirror=MIRROR)
    model = keypoint_model(images, sigmas=SIGMAS, mirror=MIRROR)
    chunks = [images[:7], images[7:30], images[30:]]
    pieces = [
        objects
        for chunk in chunks
        for objects in merge_keypoints_batch(chunk, sigmas=SIGMAS, mirror=MIRROR, model=model)
    ]
    assert pieces == whole
    # Without the model each chunk learns its own, and the first, small one differs.
    alone = merge_keypoints_batch(chunks[0], sigmas=SIGMAS, mirror=MIRROR)
    assert alone != whole[:7]
    # A worker the model has not seen counts as the crowd's average.
    renamed = [[("new", w, items) for _, w, items in image[:1]] + image[1:] for image in images]
    assert merge_keypoints_batch(renamed[:5], sigmas=SIGMAS, mirror=MIRROR, model=model)


def test_one_image_keeps_the_fixed_quorum_unless_asked() -> None:
    _, images = crowd([Worker("a"), Worker("b"), Worker("c", recall=0.0, false_marks=1)], 1)
    fixed = merge_keypoints(images[0], sigmas=SIGMAS)
    assert all(obj.support >= 0.5 for obj in fixed)
    assert merge_keypoints(images[0], sigmas=SIGMAS, quorum=0.9) == [
        obj for obj in fixed if obj.support >= 0.9
    ]
    with pytest.raises(ValueError, match="method"):
        merge_keypoints(images[0], sigmas=SIGMAS, method="vote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="permutation"):
        merge_keypoints_batch(images, sigmas=SIGMAS, mirror={"star": [0, 0, 1, 2, 3]})


def test_gold_sets_the_prior_of_a_worker_seen_on_few_images() -> None:
    honest = [Worker(f"h{i}") for i in range(3)]
    _, images = crowd(honest, 40, seed=12)
    for image in images[:6]:  # six images, every star marked: the crowd alone finds them fine
        image.append(("few", 1.0, image[0][2]))
    plain = keypoint_model(images, sigmas=SIGMAS)
    # Gold says they mark a third of the people there and add two strays a picture, worth 20
    # answers: as much as their few images, so the learnt rates go about halfway.
    informed = keypoint_model(images, sigmas=SIGMAS, prior={"few": GoldRates(0.3, 2.0, 20.0)})
    assert informed.workers["few"].recall < plain.workers["few"].recall - 0.2
    assert informed.workers["few"].false_marks > plain.workers["few"].false_marks + 0.5
    assert informed.workers["h0"].recall == pytest.approx(plain.workers["h0"].recall, abs=0.02)
