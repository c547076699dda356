"""The box worker model (``method="em"``) recovers what it models, on crowds generated with
known truth: each worker's recall, false marks, placement noise, label confusion and edge
shift. Pure, no database.

Objects lie on a grid (no two overlap), 60 px squares, of three classes. Each worker marks
an object with their recall, moves each edge by Gaussian noise of their ``noise`` (a share of
the side) plus their ``shift``, gives the next class (cyclically) instead of the right one
with chance ``swap``, and adds Poisson(``false_marks``) boxes at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from qa.consensus.boxes import box_model, merge_boxes, merge_boxes_batch
from qa.consensus.objects import Answer

CLASSES = ("car", "bus", "van")
SIDE = 60.0


@dataclass(frozen=True)
class Drawer:
    name: str
    recall: float = 0.9
    false_marks: float = 0.1
    noise: float = 0.02
    swap: float = 0.0
    shift: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    spammer: bool = False


EXACT = [Drawer(f"exact{i}") for i in range(8)]
SWAPPERS = [Drawer(f"swapper{i}", swap=0.6) for i in range(3)]
# Right edge and left edge both 10% of the width to the right: the box moved right.
SHIFTERS = [Drawer(f"shifter{i}", shift=(0.1, 0.0, 0.1, 0.0)) for i in range(3)]
SLOPPY = [Drawer(f"sloppy{i}", recall=0.6, false_marks=0.8, noise=0.06) for i in range(3)]
SPAMMER = Drawer("spammer", spammer=True)
POOL = [*EXACT, *SWAPPERS, *SHIFTERS, *SLOPPY, SPAMMER]


def draw(rng: random.Random, drawer: Drawer, truth: list[tuple[float, float, int]]) -> Answer:
    items: list[dict[str, Any]] = []
    if drawer.spammer:
        for _ in range(rng.randint(1, 6)):
            x, y = rng.uniform(0, 400), rng.uniform(0, 400)
            items.append({"label": rng.choice(CLASSES), "bbox": [x, y, SIDE, SIDE]})
        return Answer(drawer.name, 0.8, items)
    for x, y, k in truth:
        if rng.random() >= drawer.recall:
            continue
        e = [SIDE * (rng.gauss(0, drawer.noise) + s) for s in drawer.shift]
        label = CLASSES[(k + 1) % 3] if rng.random() < drawer.swap else CLASSES[k]
        x0, y0, x1, y1 = x + e[0], y + e[1], x + SIDE + e[2], y + SIDE + e[3]
        items.append({"label": label, "bbox": [x0, y0, x1 - x0, y1 - y0]})
    for _ in range(int(np.random.default_rng(rng.getrandbits(32)).poisson(drawer.false_marks))):
        x, y = rng.uniform(0, 400), rng.uniform(0, 400)
        items.append({"label": rng.choice(CLASSES), "bbox": [x, y, rng.uniform(10, 80), 30]})
    rng.shuffle(items)
    return Answer(drawer.name, 0.8, items)


def crowd(
    seed: int, n_images: int, per_image: int = 5
) -> tuple[list[list[tuple[float, float, int]]], list[list[Answer]]]:
    rng = random.Random(seed)
    truths, images = [], []
    for _ in range(n_images):
        cells = rng.sample(range(16), rng.randint(2, 5))
        truth = [(100.0 * (c % 4) + 20, 100.0 * (c // 4) + 20, rng.randrange(3)) for c in cells]
        truths.append(truth)
        images.append([draw(rng, d, truth) for d in rng.sample(POOL, per_image)])
    return truths, images


@pytest.fixture(scope="module")
def learnt() -> Any:
    return box_model(crowd(1, 2500)[1])


def test_recall_false_marks_and_noise_are_recovered(learnt: Any) -> None:
    """Each worker answers about 700 images with about 2,400 objects: a rate's standard error
    is about 0.01 and a noise's about 3%; the tolerances allow for that and for the merged
    box's own error (the noise is measured against it, not the truth)."""
    model = learnt.workers()
    for d in EXACT + SLOPPY:
        assert model[d.name].recall == pytest.approx(d.recall, abs=0.05), d.name
        assert model[d.name].false_marks == pytest.approx(d.false_marks, abs=0.1), d.name
        assert model[d.name].noise == pytest.approx(d.noise, rel=0.25), d.name


def test_label_confusion_is_recovered(learnt: Any) -> None:
    model = learnt.workers()
    ids = {name: k for k, name in enumerate(learnt.labels)}
    for d in EXACT:
        assert model[d.name].label_accuracy > 0.95, d.name
    for d in SWAPPERS:
        # 60% of the time the next class: car -> bus -> van -> car.
        assert model[d.name].label_accuracy == pytest.approx(0.4, abs=0.06), d.name
        confusion = model[d.name].confusion
        for k, name in enumerate(CLASSES):
            given = ids[CLASSES[(k + 1) % 3]]
            assert confusion[ids[name]][given] == pytest.approx(0.6, abs=0.07), (d.name, name)


def test_edge_shift_is_recovered(learnt: Any) -> None:
    """Three workers of seventeen move every box 10% right: the shift is measured against
    the typical worker, so it comes out near 0.1, and near 0 for everyone else."""
    model = learnt.workers()
    for d in SHIFTERS:
        assert np.array(model[d.name].shift) == pytest.approx(np.array(d.shift), abs=0.015)
    for d in EXACT + SWAPPERS:
        assert np.array(model[d.name].shift) == pytest.approx(np.zeros(4), abs=0.015)


def test_a_spammer_is_found_without_gold(learnt: Any) -> None:
    spammer = learnt.workers()["spammer"]
    assert spammer.recall < 0.15
    assert spammer.false_marks > 2.5
    assert spammer.noise > max(learnt.workers()[d.name].noise for d in EXACT)


def test_confusers_in_the_majority_do_not_decide_the_label() -> None:
    """Three swappers say "bus" where two exact workers say "car": the swappers' "bus" is
    what they say of a car, so the object is a car. A vote weighted alike says bus."""
    _, images = crowd(2, 1500)
    target = [
        *(Answer(d.name, 0.8, [{"label": "bus", "bbox": [20, 20, SIDE, SIDE]}]) for d in SWAPPERS),
        *(Answer(d.name, 0.8, [{"label": "car", "bbox": [20, 20, SIDE, SIDE]}]) for d in EXACT[:2]),
    ]
    [quorum] = merge_boxes_batch([target])
    assert [o.label for o in quorum] == ["bus"]
    em = merge_boxes_batch([*images, target], method="em")[-1]
    assert [o.label for o in em] == ["car"]


def test_shifted_workers_are_placed_back() -> None:
    """Two shifters and one exact worker on an object at x = 120: their mean is 4 px right of
    it; with the shifters' habit (6 px right) removed, the box is back at 120."""
    _, images = crowd(3, 1500)
    target = [
        *(
            Answer(d.name, 0.8, [{"label": "car", "bbox": [120 + 6.0, 120, SIDE, SIDE]}])
            for d in SHIFTERS[:2]
        ),
        Answer("exact0", 0.8, [{"label": "car", "bbox": [120, 120, SIDE, SIDE]}]),
    ]
    [quorum] = merge_boxes_batch([target])
    em = merge_boxes_batch([*images, target], method="em")[-1]
    assert quorum[0].bbox is not None
    assert em[0].bbox is not None
    assert quorum[0].bbox[0] == pytest.approx(124.0, abs=0.5)
    assert em[0].bbox[0] == pytest.approx(120.0, abs=1.0)


def test_em_beats_the_quorum_on_this_crowd() -> None:
    """F1 at IoU 0.5 with the label required, and mean IoU of the matches."""
    truths, images = crowd(4, 1500)

    def score(merged: list[list[Any]]) -> tuple[float, float]:
        hits, found, ious = 0, 0, []
        for truth, objs in zip(truths, merged, strict=True):
            found += len(objs)
            for x, y, k in truth:
                best = 0.0
                for o in objs:
                    ox, oy, ow, oh = o.bbox
                    iw = max(0.0, min(x + SIDE, ox + ow) - max(x, ox))
                    ih = max(0.0, min(y + SIDE, oy + oh) - max(y, oy))
                    iou = iw * ih / (SIDE * SIDE + ow * oh - iw * ih)
                    if o.label == CLASSES[k] and iou > best:
                        best = iou
                if best >= 0.5:
                    hits += 1
                    ious.append(best)
        n_truth = sum(map(len, truths))
        return 2 * hits / (n_truth + found), float(np.mean(ious))

    em_f1, em_iou = score(merge_boxes_batch(images, method="em"))
    quorum_f1, quorum_iou = score(merge_boxes_batch(images))
    assert em_f1 > quorum_f1 + 0.02
    assert em_iou > quorum_iou


def test_a_label_the_model_has_not_seen_is_kept(learnt: Any) -> None:
    target = [
        Answer(d.name, 0.8, [{"label": "tram", "bbox": [20, 20, SIDE, SIDE]}]) for d in EXACT[:3]
    ]
    assert [o.label for o in merge_boxes(target, method="em", model=learnt)] == ["tram"]
