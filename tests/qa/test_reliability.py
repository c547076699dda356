"""The worker score: Beta smoothing, agreement weight, confident suspension; tile regions."""

from __future__ import annotations

import pytest

from qa.regions import clip_polygon, polygon_area, restrict
from qa.reliability import (
    AGREEMENT_WEIGHT,
    PROBATION_GOLD,
    Evidence,
    probability_below,
    reliability,
    should_suspend,
)


def test_one_right_gold_answer_is_not_certainty() -> None:
    assert reliability(Evidence()) == 0.5
    assert reliability(Evidence(gold_seen=1, gold_score_sum=1.0)) == pytest.approx(2 / 3)
    assert reliability(Evidence(gold_seen=1, gold_score_sum=0.0)) == pytest.approx(1 / 3)
    assert reliability(Evidence(gold_seen=100, gold_score_sum=100.0)) == pytest.approx(101 / 102)


def test_partial_gold_scores_count_as_partial_successes() -> None:
    half = Evidence(gold_seen=4, gold_score_sum=2.0)
    assert reliability(half) == pytest.approx(3 / 6)


def test_agreement_counts_at_a_lower_weight_than_gold() -> None:
    agreeing = Evidence(agreement_seen=10, agreement_sum=10.0)
    assert reliability(agreeing) == pytest.approx(
        (1 + 10 * AGREEMENT_WEIGHT) / (2 + 10 * AGREEMENT_WEIGHT)
    )
    assert reliability(agreeing) < reliability(Evidence(gold_seen=10, gold_score_sum=10.0))


def test_suspension_needs_probation_and_confidence() -> None:
    spammer = Evidence(gold_seen=PROBATION_GOLD, gold_score_sum=0.0)
    assert should_suspend(spammer, 0.6)
    early = Evidence(gold_seen=PROBATION_GOLD - 1, gold_score_sum=0.0)
    assert not should_suspend(early, 0.6)  # still on probation
    unlucky = Evidence(gold_seen=PROBATION_GOLD, gold_score_sum=2.0)  # 2 of 5 right
    assert reliability(unlucky) < 0.6  # the mean is below the minimum...
    assert not should_suspend(unlucky, 0.6)  # ...but not confidently
    assert not should_suspend(spammer, 0.0)  # no minimum set
    assert probability_below(Evidence(gold_seen=50, gold_score_sum=45.0), 0.6) < 1e-4


def test_evidence_since_a_review() -> None:
    now = Evidence(gold_seen=12, gold_score_sum=5.0, agreement_seen=4, agreement_sum=1.0)
    then = Evidence(gold_seen=10, gold_score_sum=3.0, agreement_seen=4, agreement_sum=1.0)
    assert now.since(then) == Evidence(gold_seen=2, gold_score_sum=2.0)


class TestRegions:
    IMAGE = [0, 0, 1000, 1000]
    TILE = [0, 0, 600, 600]

    def test_whole_image_changes_nothing(self) -> None:
        gold = [{"label": "car", "bbox": [590, 10, 100, 10]}]
        assert restrict("bbox", gold, [], self.IMAGE, image_size=self.IMAGE) == (gold, [])

    def test_boxes_are_clipped_and_slivers_ignored(self) -> None:
        gold = [
            {"label": "car", "bbox": [10, 10, 50, 50]},  # inside
            {"label": "car", "bbox": [550, 10, 100, 20]},  # half inside: kept, clipped
            {"label": "car", "bbox": [590, 100, 100, 20]},  # a sliver inside: ignored
            {"label": "car", "bbox": [700, 700, 50, 50]},  # outside
        ]
        answer = [
            {"label": "car", "bbox": [10, 10, 50, 50]},
            {"label": "car", "bbox": [550, 10, 50, 20]},
            {"label": "car", "bbox": [590, 100, 10, 20]},  # the worker marked the sliver
        ]
        kept, seen = restrict("bbox", gold, answer, self.TILE, image_size=self.IMAGE)
        assert [g["bbox"] for g in kept] == [[10, 10, 50, 50], [550, 10, 50, 20]]
        assert [a["bbox"] for a in seen] == [[10, 10, 50, 50], [550, 10, 50, 20]]

    def test_polygons_are_clipped(self) -> None:
        square = [[500, 100], [700, 100], [700, 300], [500, 300]]
        clipped = clip_polygon(square, self.TILE)
        assert polygon_area(clipped) == pytest.approx(100 * 200)
        kept, _ = restrict(
            "polygon", [{"label": "a", "points": square}], [], self.TILE, image_size=self.IMAGE
        )
        assert polygon_area(kept[0]["points"]) == pytest.approx(100 * 200)  # half inside: kept
        sliver = [[590, 100], [700, 100], [700, 300], [590, 300]]
        kept, _ = restrict(
            "polygon", [{"label": "a", "points": sliver}], [], self.TILE, image_size=self.IMAGE
        )
        assert kept == []

    def test_keypoints_outside_the_tile_are_not_judged(self) -> None:
        person = {"label": "p", "keypoints": [[10, 10, 2], [20, 20, 2], [900, 900, 2]]}
        kept, seen = restrict("keypoints", [person], [person], self.TILE, image_size=self.IMAGE)
        assert kept[0]["keypoints"][2][2] == 0
        assert seen[0]["keypoints"][:2] == person["keypoints"][:2]
