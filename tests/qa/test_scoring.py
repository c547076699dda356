from __future__ import annotations

import json

import numpy as np
import pytest

from qa.scoring import GoldScore, gold_score


def box(label: str, x: float, y: float, w: float = 10, h: float = 10) -> dict:
    return {"label": label, "bbox": [x, y, w, h]}


def counts(score: GoldScore) -> tuple[int, int, int, int]:
    return score.matched, score.missed, score.extra, score.wrong_label


def test_classification_scores_label_equality() -> None:
    right = gold_score("classification", [{"label": "cat"}], [{"label": "cat"}])
    wrong = gold_score("classification", [{"label": "cat"}], [{"label": "dog"}])
    assert (right.score, right.precision, right.recall, right.f1) == (1.0, 1.0, 1.0, 1.0)
    assert (wrong.score, wrong.precision, wrong.recall, wrong.f1) == (0.0, 0.0, 0.0, 0.0)
    assert counts(right) == (1, 0, 0, 0)
    assert counts(wrong) == (0, 0, 0, 1)
    assert right.mean_iou is None


def test_boxes_all_found() -> None:
    gold = [box("car", 0, 0), box("car", 50, 50)]
    answer = [box("car", 50, 51), box("car", 0, 0)]
    score = gold_score("bbox", gold, answer)
    assert (score.score, score.precision, score.recall, score.f1) == (1.0, 1.0, 1.0, 1.0)
    assert score.mean_iou == pytest.approx((1.0 + 90 / 110) / 2)
    assert counts(score) == (2, 0, 0, 0)


def test_boxes_with_a_miss() -> None:
    score = gold_score("bbox", [box("car", 0, 0), box("car", 50, 50)], [box("car", 0, 0)])
    assert score.precision == 1.0
    assert score.recall == 0.5
    assert score.score == score.f1 == pytest.approx(2 / 3)
    assert counts(score) == (1, 1, 0, 0)


def test_boxes_with_an_extra_below_the_threshold() -> None:
    # IoU of [0, 0, 10, 10] and [6, 0, 10, 10] is 40 / 160 = 0.25.
    score = gold_score("bbox", [box("car", 0, 0)], [box("car", 0, 0), box("car", 6, 0)])
    assert (score.precision, score.recall) == (0.5, 1.0)
    assert counts(score) == (1, 0, 1, 0)
    lenient = gold_score("bbox", [box("car", 0, 0)], [box("car", 6, 0)], iou_threshold=0.2)
    assert lenient.score == 1.0
    assert lenient.mean_iou == pytest.approx(0.25)


def test_a_wrong_label_is_a_miss_and_an_extra() -> None:
    gold = [box("car", 0, 0), box("tree", 50, 50)]
    answer = [box("car", 0, 0), box("car", 50, 50)]
    score = gold_score("bbox", gold, answer)
    assert (score.precision, score.recall) == (0.5, 0.5)
    assert score.score == pytest.approx(0.5)
    assert counts(score) == (1, 0, 0, 1)


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ([], [], 1.0),
        ([], [box("car", 0, 0)], 0.0),
        ([box("car", 0, 0)], [], 0.0),
    ],
)
def test_empty_answers(gold: list, answer: list, expected: float) -> None:
    score = gold_score("bbox", gold, answer)
    assert (score.score, score.precision, score.recall, score.f1) == (expected,) * 4


def test_polygons() -> None:
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    shifted = [[5, 0], [15, 0], [15, 10], [5, 10]]
    gold = [{"label": "tree", "points": square}]
    exact = gold_score("polygon", gold, [{"label": "tree", "points": square}], width=20, height=10)
    half = gold_score("polygon", gold, [{"label": "tree", "points": shifted}], width=20, height=10)
    assert exact.score == 1.0
    assert exact.mean_iou == pytest.approx(1.0)
    assert half.score == 0.0
    assert counts(half) == (0, 1, 1, 0)
    assert half.mean_iou is None


SIGMAS = {"person": np.array([0.05, 0.05, 0.05])}
PERSON = [[10.0, 10.0, 2], [50.0, 10.0, 2], [30.0, 60.0, 2]]
OTHER = [[110.0, 10.0, 2], [150.0, 10.0, 2], [130.0, 60.0, 2]]


def person(points: list) -> dict:
    return {"label": "person", "keypoints": points}


def test_keypoints_score_is_oks_over_the_larger_count() -> None:
    gold = [person(PERSON), person(OTHER)]
    score = gold_score("keypoints", gold, [person(PERSON)], sigmas=SIGMAS)
    assert score.score == pytest.approx(0.5)
    assert (score.precision, score.recall) == (1.0, 0.5)
    assert score.mean_iou == pytest.approx(1.0)
    assert counts(score) == (1, 1, 0, 0)
    both = gold_score("keypoints", gold, [person(OTHER), person(PERSON)], sigmas=SIGMAS)
    assert both.score == pytest.approx(1.0)


def test_keypoints_score_follows_closeness() -> None:
    moved = [[13.0, 14.0, 2], [50.0, 10.0, 2], [30.0, 60.0, 2]]  # first point 5 px off
    area = 40.0 * 50.0
    expected = (np.exp(-25 / (2 * area * 0.1**2)) + 2) / 3
    score = gold_score("keypoints", [person(PERSON)], [person(moved)], sigmas=SIGMAS)
    assert score.score == pytest.approx(expected)
    assert score.mean_iou == pytest.approx(expected)
    assert gold_score("keypoints", [], [], sigmas=SIGMAS).score == 1.0


def test_details_are_small_and_json_able() -> None:
    gold = [box("car", 0, 0), box("tree", 50, 50)]
    details = gold_score("bbox", gold, [box("car", 1, 0)]).details()
    assert json.loads(json.dumps(details)) == details
    assert set(details) == {
        "kind",
        "score",
        "precision",
        "recall",
        "f1",
        "mean_iou",
        "matched",
        "missed",
        "extra",
        "wrong_label",
    }
    assert details["mean_iou"] == round(90 / 110, 4)
    keypoints = gold_score("keypoints", [person(PERSON)], [person(PERSON)], sigmas=SIGMAS)
    assert keypoints.details()["mean_oks"] == 1.0
    assert "mean_iou" not in keypoints.details()
