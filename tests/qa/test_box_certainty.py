"""Dynamic overlap of boxes with a model voting (``qa.consensus.boxes.box_certainty``,
``qa.worker_model.decision_box_model``): each voter counts by their recall and false marks,
not by one weight, so a lone mark of a worker who never draws stray boxes settles an object
and a careless worker's does not; objects every voter may have missed count against the task;
voters the last fit has not seen stand on their gold rates shrunk toward the crowd's."""

from __future__ import annotations

import math
from collections.abc import Hashable

import pytest

from qa.consensus.box_em import CROWD_FALSE_MARKS, CROWD_RECALL, PRIOR_STRENGTH, GoldRates
from qa.consensus.boxes import (
    BoxModel,
    BoxWorker,
    box_certainty,
    box_model,
    box_model_for,
    merge_boxes_batch,
)
from qa.consensus.objects import existence_confidence

CAR = {"label": "car", "bbox": [10, 10, 60, 40]}
TREE = {"label": "tree", "bbox": [150, 60, 50, 120]}
OBJECTS = 3.0


def _worker(recall: float, false_marks: float, label_accuracy: float = 0.98) -> BoxWorker:
    wrong = 1.0 - label_accuracy
    return BoxWorker(
        recall, false_marks, 0.05, 100, label_accuracy,
        ((label_accuracy, wrong), (wrong, label_accuracy)),
    )  # fmt: skip


def _model(**workers: BoxWorker) -> BoxModel:
    return BoxModel(
        ids=tuple(workers),
        per_worker=tuple(workers.values()),
        crowd=_worker(0.8, 0.3, 0.9),
        objects=OBJECTS,
        labels=("car", "tree"),
        label_prior=(0.5, 0.5),
    )


RATES = _model(
    keen=_worker(0.95, 0.005),  # finds nearly everything, never strays
    careless=_worker(0.95, 1.5),  # finds as much, and adds a box and a half a picture
    patchy=_worker(0.6, 0.005),  # misses much, never strays
    M=_worker(0.85, 0.05),  # the model
)


def _missed(*recalls: float) -> float:
    """The chance that no object was missed by every voter."""
    return math.exp(-OBJECTS * math.prod(1 - r for r in recalls))


def test_a_keen_workers_lone_mark_with_the_model_agreeing_settles_the_object() -> None:
    (both,) = box_certainty([[("keen", 1.0, [CAR]), ("M", 1.0, [CAR])]], model=RATES)
    assert both >= 0.95
    # Nothing but the objects both may have missed holds it below 1.
    assert both == pytest.approx(_missed(0.95, 0.85), abs=0.01)


def test_a_careless_workers_lone_mark_does_not_settle_it_a_keen_ones_does() -> None:
    (careless,) = box_certainty([[("careless", 1.0, [CAR]), ("M", 1.0, [])]], model=RATES)
    (keen,) = box_certainty([[("keen", 1.0, [CAR]), ("M", 1.0, [])]], model=RATES)
    # Odds of mu r (1 - r_model) / l: 3 x 0.95 x 0.15 / 1.5 = 0.29 (a stray box, more likely
    # than not) against 85.5 for the keen worker.
    assert careless == pytest.approx(1 / (1 + 0.285), abs=0.01)
    assert careless < 0.9
    assert keen >= 0.95
    # One weight a voter cannot tell them apart: with equal accuracy, equal confidence.
    one_weight: dict[Hashable, float] = {"careless": 0.9, "keen": 0.9, "M": 0.86}
    assert existence_confidence([[("careless", "car")]], one_weight) == existence_confidence(
        [[("keen", "car")]], one_weight
    )


def test_not_marking_says_little_of_a_voter_who_misses_much() -> None:
    # The model's lone mark against a worker who misses 40% and never strays: the object is
    # likely real (3 x 0.85 x 0.4 / 0.05 = 20.4 to 1); against the keen worker, who would
    # have marked it, it is in doubt (3 x 0.85 x 0.05 / 0.05 = 2.55 to 1).
    (patchy,) = box_certainty([[("patchy", 1.0, []), ("M", 1.0, [CAR])]], model=RATES)
    (keen,) = box_certainty([[("keen", 1.0, []), ("M", 1.0, [CAR])]], model=RATES)
    real = 20.4 / 21.4
    assert patchy == pytest.approx(min(real, _missed(0.6, 0.85)), abs=0.01)
    assert keen == pytest.approx(2.55 / 3.55, abs=0.015)
    assert keen < 0.9 < real


def test_objects_every_voter_may_have_missed_hold_the_task() -> None:
    # A patchy worker and the model agree on everything, but together they miss 6% of what is
    # there: with 3 objects a picture, an image holds one nobody marked 1 time in 6.
    (agreed,) = box_certainty([[("patchy", 1.0, [CAR, TREE]), ("M", 1.0, [CAR, TREE])]], model=RATES)  # fmt: skip
    assert agreed == pytest.approx(_missed(0.6, 0.85), abs=1e-6)
    assert agreed < 0.9
    # A third voter who misses little brings it up.
    (three,) = box_certainty(
        [[("patchy", 1.0, [CAR, TREE]), ("keen", 1.0, [CAR, TREE]), ("M", 1.0, [CAR, TREE])]],
        model=RATES,
    )
    assert three >= 0.99


def test_labels_count_by_each_members_confusion() -> None:
    (agreed,) = box_certainty([[("keen", 1.0, [CAR]), ("M", 1.0, [CAR])]], model=RATES)
    split = {**TREE, "bbox": CAR["bbox"]}
    (disputed,) = box_certainty([[("keen", 1.0, [CAR]), ("M", 1.0, [split])]], model=RATES)
    assert disputed < 0.6 < agreed


def test_a_voter_the_fit_has_not_seen_takes_the_crowds_rates() -> None:
    crowd = RATES.crowd
    stranger = box_certainty([[("x", 1.0, [CAR]), ("M", 1.0, [])]], model=RATES)
    as_crowd = box_certainty(
        [[("c", 1.0, [CAR]), ("M", 1.0, [])]],
        model=_model(c=crowd, M=_worker(0.85, 0.05)),
    )
    assert stranger == pytest.approx(as_crowd)


def test_newcomers_stand_on_their_gold_shrunk_toward_the_crowd() -> None:
    gold = {"new": GoldRates(1.0, 0.0, 10.0), "keen": GoldRates(0.5, 2.0, 10.0)}
    rates = box_model_for(RATES, gold, objects=7.0).workers()
    crowd = RATES.crowd
    total = 10.0 + PRIOR_STRENGTH
    assert rates["new"].recall == pytest.approx((10.0 + PRIOR_STRENGTH * crowd.recall) / total)
    assert rates["new"].false_marks == pytest.approx(PRIOR_STRENGTH * crowd.false_marks / total)
    # A worker the fit has seen keeps what it learnt; one without gold is not added.
    assert rates["keen"] == RATES.workers()["keen"]
    assert set(rates) == {"keen", "careless", "patchy", "M", "new"}


def test_a_fit_takes_gold_of_no_stray_box_as_a_count_not_a_certainty() -> None:
    # Gold of five pictures without a stray box (worth 10 answers) says little of a rate of a
    # few a hundred pictures: in the fit it adds to the crowd's prior instead of replacing it,
    # so the worker's false marks sit near the crowd's share, not at nothing, and a lone box of
    # theirs that a voter who misses nothing did not mark is a stray, as the crowd's would be.
    def stray(i: int) -> dict[str, object]:
        return {"label": "car", "bbox": [300 + 40 * (i % 3), 200, 30, 30]}

    images = [
        [
            ("a", 1.0, [CAR, TREE, *([stray(i)] if i % 3 == 0 else [])]),
            ("b", 1.0, [CAR, TREE]),
            ("c", 1.0, [CAR, TREE, *([stray(i + 1)] if i % 4 == 0 else [])]),
        ]
        for i in range(30)
    ]
    images.append([("w", 1.0, [CAR, TREE]), ("a", 1.0, [CAR, TREE]), ("b", 1.0, [CAR, TREE])])
    fitted = box_model(images, prior={"w": GoldRates(1.0, 0.0, 10.0)})
    new = fitted.workers()["w"]
    crowd = fitted.crowd.false_marks
    # One picture of their own and the gold, against the crowd's prior of 4 answers.
    assert new.false_marks == pytest.approx(PRIOR_STRENGTH * crowd / (1 + 10 + PRIOR_STRENGTH), rel=0.05)  # fmt: skip
    lone = [("w", 1.0, [CAR, stray(0)]), ("b", 1.0, [CAR])]
    (objects,) = merge_boxes_batch([lone], method="em", model=fitted)
    assert [o.label for o in objects] == ["car"]
    (certainty,) = box_certainty([lone], model=fitted)
    assert certainty >= 0.95


def test_before_a_fit_the_crowd_is_the_em_start_and_objects_come_from_gold() -> None:
    rates = box_model_for(None, {"M": GoldRates(0.9, 0.1, 20.0)}, objects=4.5)
    assert rates.objects == 4.5
    assert (rates.crowd.recall, rates.crowd.false_marks) == (CROWD_RECALL, CROWD_FALSE_MARKS)
    total = 20.0 + PRIOR_STRENGTH
    model = rates.workers()["M"]
    assert model.recall == pytest.approx((20 * 0.9 + PRIOR_STRENGTH * CROWD_RECALL) / total)
    assert model.false_marks == pytest.approx((20 * 0.1 + PRIOR_STRENGTH * CROWD_FALSE_MARKS) / total)  # fmt: skip
    # Labels: the crowd's accuracy over whatever classes the answers give.
    (both,) = box_certainty([[("w", 1.0, [CAR]), ("M", 1.0, [CAR]), ("v", 1.0, [])]], model=rates)
    assert 0.0 < both < 1.0


def test_an_empty_crowd_and_no_boxes() -> None:
    # Nobody looked: only as sure as an image of 3 objects a picture is empty.
    assert box_certainty([[]], model=RATES) == [pytest.approx(math.exp(-OBJECTS))]
    (nothing,) = box_certainty([[("keen", 1.0, []), ("M", 1.0, [])]], model=RATES)
    assert nothing == pytest.approx(_missed(0.95, 0.85))
