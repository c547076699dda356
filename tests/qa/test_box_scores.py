"""A model's box scores as evidence in box consensus (``qa.consensus.box_em``): a scored box
counts the odds of a real object by ``f(bin | real) / f(bin | spurious)``, histograms learnt
with the rates (and from gold), so a lone box the model is sure of is kept and a lone box it
doubts is not, where its recall and false marks alone cannot tell them apart."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from qa.consensus.box_em import SCORE_BINS, SCORE_PRIOR, GoldRates, gold_score_counts, score_odds
from qa.consensus.boxes import box_certainty, box_model, box_model_for, merge_boxes_batch

CAR = {"label": "car", "bbox": [10, 10, 60, 40]}
OTHER_CAR = {"label": "car", "bbox": [150, 60, 50, 120]}


def _scored(item: dict[str, Any], score: float) -> dict[str, Any]:
    return {**item, "score": score}


def test_gold_counts_and_the_odds_of_a_bin() -> None:
    real, spurious = gold_score_counts(
        [0.95, 0.92, 0.55, 0.58, 1.0], [True, True, False, True, True]
    )
    assert real[9] == 3
    assert real[5] == 1
    assert spurious[5] == 1
    assert sum(spurious) == 1
    odds = score_odds(np.array(real), np.array(spurious))
    # Bin 9 holds 3 of 4 real boxes and none of the one spurious: (3+a)/(4+10a) over a/(1+10a).
    a = SCORE_PRIOR
    assert odds[9] == pytest.approx(
        math.log((3 + a) / (4 + SCORE_BINS * a)) - math.log(a / (1 + SCORE_BINS * a))
    )
    assert odds[9] > 0 > odds[5]


def _gold_model() -> GoldRates:
    """A model whose boxes scoring 0.9 and more were real on gold and whose boxes scoring
    0.5-0.6 were strays: 40 and 40 of them."""
    scores = [0.95] * 40 + [0.55] * 40
    return GoldRates(0.85, 0.3, 80.0, gold_score_counts(scores, [True] * 40 + [False] * 40))


def test_a_lone_model_box_counts_by_its_score() -> None:
    rates = box_model_for(None, {"M": _gold_model()}, objects=3.0)
    odds = rates.workers()["M"].score_odds
    assert len(odds) == SCORE_BINS
    assert odds[9] > 0 > odds[5]
    # A worker who missed the car, and the model's box of it: sure, doubtful, or unscored.
    sure = [[("w", 1.0, [OTHER_CAR]), ("M", 1.0, [OTHER_CAR, _scored(CAR, 0.95)])]]
    doubtful = [[("w", 1.0, [OTHER_CAR]), ("M", 1.0, [OTHER_CAR, _scored(CAR, 0.55)])]]
    plain = [[("w", 1.0, [OTHER_CAR]), ("M", 1.0, [OTHER_CAR, CAR])]]
    merged = [merge_boxes_batch(c, method="em", model=rates)[0] for c in (sure, doubtful, plain)]
    car = (10.0, 10.0, 60.0, 40.0)  # CAR's box
    kept, dropped, unscored = ({o.bbox: o.score for o in objects} for objects in merged)
    assert kept[car] > 0.95
    assert car not in dropped
    # Unscored, the box stands on the model's rates alone: a toss-up.
    assert 0.5 < unscored[car] < 0.7
    # Either way, its score settles what the rates left open.
    sure_c, doubtful_c, plain_c = (
        box_certainty(c, model=rates)[0] for c in (sure, doubtful, plain)
    )
    assert sure_c > 0.9
    assert doubtful_c > 0.9
    assert plain_c < 0.7


def test_without_scores_nothing_changes() -> None:
    # The same answers with the model's boxes unscored merge and decide exactly as before
    # scores were read: a model without scores gets no odds at all.
    rng = random.Random(5)
    images = []
    for _ in range(60):
        car = {"label": "car", "bbox": [rng.uniform(0, 50), rng.uniform(0, 50), 40, 30]}
        images.append([("a", 1.0, [car]), ("b", 1.0, [car] if rng.random() < 0.8 else []),
                       ("M", 1.0, [car] if rng.random() < 0.9 else [])])  # fmt: skip
    fitted = box_model(images)
    assert all(not w.score_odds for w in fitted.per_worker)
    again = box_model(images, prior={"a": GoldRates(0.9, 0.1, 10.0)})
    assert all(not w.score_odds for w in again.per_worker)


def test_the_fit_learns_what_the_model_s_scores_say() -> None:
    # Two workers who each miss a third of the objects; a model that finds them with high
    # scores and adds strays with low ones. The fit, without any gold, learns that a high
    # bin means real and a low one spurious; the merge then keeps a lone high-scored box the
    # worker missed and drops a lone low-scored one.
    rng = random.Random(11)
    stray = {"label": "car", "bbox": [400, 300, 30, 30]}
    images = []
    for i in range(300):
        objects = [
            {"label": "car", "bbox": [100 * k + rng.uniform(0, 5), 20, 60, 40]} for k in range(3)
        ]
        model = [_scored(o, rng.uniform(0.85, 1.0)) for o in objects]
        if i % 2:
            model.append(_scored(stray, rng.uniform(0.5, 0.65)))
        images.append(
            [(w, 1.0, [o for o in objects if rng.random() < 0.67]) for w in "ab"]
            + [("M", 1.0, model)]
        )
    fitted = box_model(images)
    odds = fitted.workers()["M"].score_odds
    assert odds[9] > 1.0
    assert odds[5] < -1.0
    assert not fitted.workers()["a"].score_odds
    hidden = {"label": "car", "bbox": [20, 300, 50, 50]}
    lone = [[("a", 1.0, []), ("M", 1.0, [_scored(hidden, 0.97), _scored(stray, 0.55)])]]
    (merged,) = merge_boxes_batch(lone, method="em", model=fitted)
    assert [o.bbox for o in merged] == [pytest.approx((20, 300, 50, 50))]
    # The same boxes unscored are both kept or both dropped: the rates cannot tell them apart.
    plain = [[("a", 1.0, []), ("M", 1.0, [hidden, stray])]]
    (merged,) = merge_boxes_batch(plain, method="em", model=fitted)
    assert len(merged) != 1
