"""Box consensus with a model of each worker learnt by EM (``method="em"``): pure, no database.

The crowds are generated with known truth: objects on a grid (so that no two overlap), and
workers who each mark an object with their recall, add false boxes at their rate a picture,
and jitter edges by their noise.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest

from qa.consensus.box_em import existence_em
from qa.consensus.boxes import (
    BoxColumns,
    BoxPrior,
    box_model,
    box_workers,
    merge_boxes,
    merge_boxes_batch,
)
from qa.consensus.objects import Answer

Worker = tuple[str, float, float, float]  # name, recall, false marks a picture, jitter (px)
CAREFUL: list[Worker] = [(f"careful{i}", 0.95, 0.05, 1.5) for i in range(10)]
SLOPPY: list[Worker] = [(f"sloppy{i}", 0.6, 0.6, 4.0) for i in range(10)]
SIDE = 60.0


def box(x: float, y: float, w: float = SIDE, h: float = SIDE) -> dict[str, Any]:
    return {"label": "car", "bbox": [x, y, w, h]}


def grid_objects(rng: random.Random) -> list[tuple[float, float]]:
    """2-5 objects on a 4 x 4 grid of 100 px cells, as their top-left corners."""
    cells = rng.sample(range(16), rng.randint(2, 5))
    return [(100.0 * (c % 4) + 20, 100.0 * (c // 4) + 20) for c in cells]


def answer(rng: random.Random, worker: Worker, truth: list[tuple[float, float]]) -> Answer:
    name, recall, false_marks, jitter = worker
    items = [
        box(x + rng.gauss(0, jitter), y + rng.gauss(0, jitter), SIDE + rng.gauss(0, jitter),
            SIDE + rng.gauss(0, jitter))
        for x, y in truth
        if rng.random() < recall
    ]  # fmt: skip
    for _ in range(int(np.random.default_rng(rng.getrandbits(32)).poisson(false_marks))):
        items.append(box(rng.uniform(0, 400), rng.uniform(0, 400), rng.uniform(10, 80), 30))
    rng.shuffle(items)
    return Answer(name, 0.8, items)


def crowd(
    seed: int, n_images: int, pool: list[Worker], per_image: int
) -> tuple[list[list[tuple[float, float]]], list[list[Answer]]]:
    rng = random.Random(seed)
    truths, images = [], []
    for _ in range(n_images):
        truth = grid_objects(rng)
        truths.append(truth)
        images.append([answer(rng, w, truth) for w in rng.sample(pool, per_image)])
    return truths, images


def test_em_recovers_careful_and_sloppy_workers() -> None:
    _, images = crowd(1, 800, CAREFUL + SLOPPY, 5)
    model = box_workers(images)
    careful = [model[name] for name, *_ in CAREFUL]
    sloppy = [model[name] for name, *_ in SLOPPY]
    assert np.mean([w.recall for w in careful]) == pytest.approx(0.95, abs=0.04)
    assert np.mean([w.recall for w in sloppy]) == pytest.approx(0.6, abs=0.06)
    assert np.mean([w.false_marks for w in careful]) == pytest.approx(0.05, abs=0.04)
    assert np.mean([w.false_marks for w in sloppy]) == pytest.approx(0.6, abs=0.12)
    # Every careful worker is told from every sloppy one, on each count.
    assert min(w.recall for w in careful) > max(w.recall for w in sloppy)
    assert max(w.false_marks for w in careful) < min(w.false_marks for w in sloppy)
    assert max(w.noise for w in careful) < min(w.noise for w in sloppy)


def test_em_merges_careful_and_sloppy_crowd_better_than_a_fixed_quorum() -> None:
    truths, images = crowd(2, 800, CAREFUL + SLOPPY, 5)

    def found(objects: list[list[Any]]) -> tuple[int, int]:
        hits = wrong = 0
        for truth, objs in zip(truths, objects, strict=True):
            corners = {(round(x / 100), round(y / 100)) for x, y in truth}
            for obj in objs:
                x, y, w, _ = obj.bbox
                near = (round(x / 100), round(y / 100)) in corners and abs(w - SIDE) < 15
                hits += near
                wrong += not near
        return hits, wrong

    n_truth = sum(map(len, truths))
    em_hits, em_wrong = found(merge_boxes_batch(images, method="em"))
    quorum_hits, quorum_wrong = found(merge_boxes_batch(images))
    assert em_hits > quorum_hits
    assert em_hits + em_wrong / 2 > quorum_hits + quorum_wrong / 2
    assert em_hits > 0.97 * n_truth


def reliable_and_forgetful(seed: int) -> list[list[Answer]]:
    """Images answered by two careful workers and three who mark a third of what is there."""
    forgetful: list[Worker] = [(f"forgetful{i}", 0.3, 0.05, 2.0) for i in range(3)]
    rng = random.Random(seed)
    images = []
    for _ in range(300):
        truth = grid_objects(rng)
        images.append([answer(rng, w, truth) for w in [*CAREFUL[:2], *forgetful]])
    return images


def test_an_object_two_reliable_workers_of_five_marked_is_kept() -> None:
    images = reliable_and_forgetful(3)
    target = [
        Answer("careful0", 0.8, [box(20, 20)]),
        Answer("careful1", 0.8, [box(21, 19)]),
        *(Answer(f"forgetful{i}", 0.8, []) for i in range(3)),
    ]
    assert merge_boxes(target) == []  # 2 of 5 does not reach the quorum of 0.5
    merged = merge_boxes_batch([*images, target], method="em")[-1]
    assert len(merged) == 1
    assert merged[0].workers == ("careful0", "careful1")
    assert merged[0].score > 0.9


def test_an_object_only_a_known_spammer_marked_is_dropped() -> None:
    rng = random.Random(4)
    images = []
    for _ in range(300):
        truth = grid_objects(rng)
        spam = [box(rng.uniform(0, 400), rng.uniform(0, 400)) for _ in range(rng.randint(1, 6))]
        images.append([*(answer(rng, w, truth) for w in CAREFUL[:4]), Answer("spam", 0.8, spam)])
    model = box_workers(images)
    assert model["spam"].recall < 0.2
    assert model["spam"].false_marks > 2
    truth = [(20.0, 20.0), (220.0, 220.0)]
    target = [Answer(name, 0.8, [box(x, y) for x, y in truth]) for name, *_ in CAREFUL[:4]]
    target.append(Answer("spam", 0.8, [box(120, 320)]))
    merged = merge_boxes_batch([*images, target], method="em")[-1]
    # Placed where the four agree, less their estimated shifts (a tenth of a pixel or so).
    placed = sorted(tuple(o.to_item()["bbox"][:2]) for o in merged)
    assert len(placed) == 2
    assert np.array(placed) == pytest.approx(np.array(truth), abs=0.5)
    assert all("spam" not in o.workers for o in merged)


def test_an_image_with_one_worker_keeps_a_reliable_workers_boxes_only() -> None:
    _, images = crowd(5, 300, CAREFUL[:5], 5)
    spam = [box(300, 300, 40, 40)]
    images += [
        [Answer("careful0", 0.8, [box(20, 20), box(220, 120)])],
        [Answer("spam", 0.8, spam)],
    ]
    # The spammer is known from its other images: boxes all over, nothing the crowd marks.
    images += [
        [*(answer(random.Random(i), w, [(20.0, 20.0)]) for w in CAREFUL[:4]),
         Answer("spam", 0.8, [box(30 * (i % 9), 300, 50, 40), box(300, 30 * (i % 9), 40, 50)])]
        for i in range(40)
    ]  # fmt: skip
    merged = merge_boxes_batch(images, method="em")
    assert len(merged[300]) == 2
    assert all(o.score > 0.5 for o in merged[300])
    assert merged[301] == []


def test_a_batch_of_one_image_and_one_worker_keeps_its_boxes() -> None:
    merged = merge_boxes([Answer("w", 0.8, [box(20, 20), box(220, 120)])], method="em")
    assert len(merged) == 2
    assert all(0.5 < o.score <= 1 for o in merged)
    assert merge_boxes([Answer("w", 0.8, [])], method="em") == []
    assert merge_boxes_batch([[], []], method="em") == [[], []]


def test_em_is_deterministic() -> None:
    _, images = crowd(6, 200, CAREFUL[:3] + SLOPPY[:3], 4)
    first = merge_boxes_batch(images, method="em")
    assert merge_boxes_batch(images, method="em") == first
    assert box_workers(images) == box_workers(images)


def columns(images: list[list[Answer]], names: list[str]) -> BoxColumns:
    """The images' answers as columns, label ids by their index in ``names``."""
    answers = [a for image in images for a in image]
    items = [item for a in answers for item in a.items]
    return BoxColumns(
        answers_per_image=np.array([len(image) for image in images], dtype=np.intp),
        workers=[a.worker for a in answers],
        weights=np.array([a.weight for a in answers]),
        boxes_per_answer=np.array([len(a.items) for a in answers], dtype=np.intp),
        boxes=np.array([item["bbox"] for item in items]).reshape(-1, 4),
        label=np.array([names.index(item["label"]) for item in items], dtype=np.intp),
        label_names=names,
    )


@pytest.mark.parametrize("method", ["em", "quorum"])
def test_columns_merge_exactly_as_the_answers_they_hold(method: str) -> None:
    _, images = crowd(11, 150, CAREFUL[:4] + SLOPPY[:4], 5)
    rng = random.Random(3)
    # Three labels, first seen in a different order on each image.
    images = [
        [a._replace(items=[{**i, "label": rng.choice(["car", "bus", "van"])} for i in a.items])
         for a in image]
        for image in images
    ]  # fmt: skip
    images[7] = []  # an image nobody answered
    images[9][0] = Answer(images[9][0].worker, 0.5, [])  # an answer that marked nothing
    expected = merge_boxes_batch(images, method=method)  # type: ignore[arg-type]
    # Label ids in any order (here not the order of first sight) give the same merge.
    given = columns(images, ["van", "bus", "car", "unused"])
    assert merge_boxes_batch(given, method=method) == expected  # type: ignore[arg-type]
    if method == "em":
        assert box_model(given).workers() == box_model(images).workers()
        assert merge_boxes_batch(given, method="em", model=box_model(images)) == expected


def test_columns_that_do_not_add_up_are_refused() -> None:
    _, images = crowd(12, 3, CAREFUL[:3], 3)
    given = columns(images, ["car"])
    short = BoxColumns(**{**given.__dict__, "label": given.label[:-1]})
    with pytest.raises(ValueError, match="add up"):
        merge_boxes_batch(short, method="em")
    bad = BoxColumns(**{**given.__dict__, "weights": np.zeros(len(given.workers))})
    with pytest.raises(ValueError, match="weight must be in"):
        merge_boxes_batch(bad)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        merge_boxes([], method="mean")  # type: ignore[arg-type]


def test_existence_em_on_known_patterns() -> None:
    """The core alone: real candidates marked by each worker with their recall, spurious ones
    by a single worker; three workers of recall 0.9, 0.9 and 0.5."""
    rng = np.random.default_rng(7)
    recall = np.array([0.9, 0.9, 0.5])
    candidates: list[int] = []
    workers: list[int] = []
    marks: list[bool] = []
    real: list[bool] = []
    for c in range(3000):
        is_real = c % 4 != 0
        marked = rng.random(3) < recall if is_real else np.eye(3, dtype=bool)[c % 3]
        if not marked.any():
            continue
        index = len(real)
        real.append(is_real)
        candidates += [index] * 3
        workers += [0, 1, 2]
        marks += marked.tolist()
    existence = existence_em(
        np.array(candidates),
        np.array(workers),
        np.array(marks),
        worker_images=np.full(3, 1000),
        start=np.full(len(real), 0.5) + 0.1 * np.bincount(candidates, marks),
    )
    assert existence.recall == pytest.approx(recall, abs=0.03)
    assert existence.false_marks == pytest.approx(np.full(3, 250 / 1000), abs=0.03)
    # A real object only a careful worker marked looks like their stray box: the Bayes rule
    # calls it one, as it should at these rates, so a few real candidates are lost.
    assert ((existence.posterior >= 0.5) == np.array(real)).mean() > 0.9


def test_a_model_learnt_once_merges_any_chunking_alike() -> None:
    """A project learns the model over all its images and merges them in chunks: the objects
    do not depend on where the chunks are cut."""
    _, images = crowd(8, 4000, CAREFUL + SLOPPY, 5)
    model = box_model(images)
    whole = merge_boxes_batch(images, method="em", model=model)
    chunked = [
        objects
        for start in range(0, len(images), 1000)
        for objects in merge_boxes_batch(images[start : start + 1000], method="em", model=model)
    ]
    assert chunked == whole
    # Learning from the batch is learning the model and applying it.
    assert merge_boxes_batch(images, method="em") == whole
    # Learnt from the chunk alone, a chunk's objects differ somewhere: the model matters.
    first = merge_boxes_batch(images[:100], method="em")
    assert first != whole[:100]


def test_a_worker_the_model_has_not_seen_takes_the_crowds_means() -> None:
    _, images = crowd(9, 400, CAREFUL + SLOPPY, 5)
    model = box_model(images)
    assert set(model.workers()) == {name for name, *_ in CAREFUL + SLOPPY}
    # The crowd's means lie among the workers' own values.
    recalls = [w.recall for w in model.per_worker]
    assert min(recalls) < model.crowd.recall < max(recalls)
    target = [[Answer("newcomer", 0.8, [box(20, 20)]), Answer("careful0", 0.8, [box(21, 20)])]]
    (merged,) = merge_boxes_batch(target, method="em", model=model)
    assert [o.workers for o in merged] == [("newcomer", "careful0")]
    with pytest.raises(ValueError, match="em"):
        merge_boxes_batch(target, model=model)


def test_a_gold_prior_moves_a_worker_with_few_answers_not_one_with_many() -> None:
    rng = random.Random(10)
    few: Worker = ("few", 0.9, 0.1, 2.0)
    many: Worker = ("many", 0.9, 0.1, 2.0)
    images = []
    for i in range(600):
        truth = grid_objects(rng)
        pool = [*rng.sample(CAREFUL, 3), many] + ([few] if i < 6 else [])
        images.append([answer(rng, w, truth) for w in pool])
    # Gold says both mark little and add many boxes: wrong for both, worth 20 answers.
    gold: dict[Hashable, BoxPrior] = {
        "few": BoxPrior(0.3, 2.0, 20.0), "many": BoxPrior(0.3, 2.0, 20.0)
    }  # fmt: skip
    plain = box_model(images).workers()
    informed = box_model(images, prior=gold).workers()
    # "few" saw about 20 objects and 6 pictures, as much as the gold is worth: about halfway.
    assert informed["few"].recall < plain["few"].recall - 0.25
    assert informed["few"].false_marks > plain["few"].false_marks + 1.0
    assert informed["many"].recall == pytest.approx(plain["many"].recall, abs=0.03)
    assert informed["many"].false_marks == pytest.approx(plain["many"].false_marks, abs=0.1)
    # Another worker without gold is not moved.
    assert informed["careful0"].recall == pytest.approx(plain["careful0"].recall, abs=0.01)
