"""Consensus merge of shapes: boxes, polygons, keypoints, and boxes united across tiles."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from qa.consensus.boxes import merge_across_tiles, merge_boxes, merge_boxes_batch
from qa.consensus.keypoints import merge_keypoints
from qa.consensus.objects import Member, MergedObject, weighted_median
from qa.consensus.polygons import merge_polygons, pixel_majority_vote
from qa.geometry import box_iou, polygons_to_rles


def box(label: str, x: float, y: float, w: float = 40, h: float = 30) -> dict[str, Any]:
    return {"label": label, "bbox": [x, y, w, h]}


def only(objects: list[MergedObject]) -> MergedObject:
    assert len(objects) == 1, objects
    return objects[0]


def iou(a: Any, b: Any) -> float:
    return float(box_iou([list(a)], [list(b)])[0, 0])


# Boxes


def test_unanimous_boxes_merge_into_the_box() -> None:
    answers = [(f"w{i}", 0.9, [box("car", 10, 20)]) for i in range(3)]
    merged = only(merge_boxes(answers))
    assert merged.label == "car"
    assert merged.bbox == pytest.approx((10, 20, 40, 30))
    assert (merged.num_votes, merged.support, merged.agreement) == (3, 1.0, 1.0)
    assert merged.score == pytest.approx(1.0)


def test_the_label_is_the_weighted_vote_and_lowers_the_score() -> None:
    light = [(f"c{i}", 0.3, [box("car", 10, 20)]) for i in range(3)]
    heavy = [(f"t{i}", 0.9, [box("truck", 10, 20)]) for i in range(2)]
    merged = only(merge_boxes(light + heavy))
    assert merged.label == "truck"  # 1.8 of the weight against 0.9
    assert merged.num_votes == 5
    assert merged.support == pytest.approx(1.0)
    assert merged.score == pytest.approx(1.8 / 2.7)
    equal = [(f"c{i}", 0.8, [box("car", 10, 20)]) for i in range(3)]
    equal += [(f"t{i}", 0.8, [box("truck", 10, 20)]) for i in range(2)]
    assert only(merge_boxes(equal)).label == "car"


def test_an_outlier_inside_the_cluster_barely_moves_the_box() -> None:
    agreeing = [(f"w{i}", 0.8, [box("car", 100 + i, 100, 40, 30)]) for i in range(4)]
    # Overlaps the four's mean at IoU 0.51, so it joins the cluster and votes; the median box
    # at 0.52, below OUTLIER_IOU, so it is left out of the mean.
    outlier = ("o", 0.8, [box("car", 109, 105, 40, 30)])
    merged = only(merge_boxes([*agreeing, outlier]))
    assert merged.num_votes == 5
    assert "o" in merged.workers
    assert merged.bbox == pytest.approx((101.5, 100, 40, 30))
    assert merged.agreement < 1.0


def test_a_far_box_is_its_own_cluster_and_is_dropped() -> None:
    agreeing = [(f"w{i}", 0.8, [box("car", 100, 100)]) for i in range(4)]
    far = ("far", 0.8, [box("car", 300, 300)])
    merged = only(merge_boxes([*agreeing, far]))
    assert merged.bbox == pytest.approx((100, 100, 40, 30))
    assert "far" not in merged.workers


def test_a_spammer_adds_nothing() -> None:
    good = [(f"w{i}", 0.85, [box("car", 10, 10), box("dog", 200, 150, 30, 30)]) for i in range(4)]
    rng = np.random.default_rng(7)
    junk = [
        box(str(rng.choice(["car", "dog"])), *rng.uniform(0, 400, 2), *rng.uniform(10, 80, 2))
        for _ in range(8)
    ]
    with_spammer = merge_boxes([*good, ("spam", 0.1, junk)])
    without = merge_boxes(good)
    assert [(o.label, o.bbox) for o in with_spammer] == [(o.label, o.bbox) for o in without]


def test_one_missed_object_is_kept_and_one_extra_is_dropped() -> None:
    answers = [(f"w{i}", 0.8, [box("car", 10, 10), box("dog", 200, 150)]) for i in range(4)]
    answers.append(("lazy", 0.8, [box("car", 10, 10)]))  # missed the dog
    answers[0] = ("eager", 0.8, [*answers[0][2], box("sign", 400, 300)])  # an extra
    merged = merge_boxes(answers)
    assert sorted(o.label for o in merged) == ["car", "dog"]
    dog = next(o for o in merged if o.label == "dog")
    assert dog.num_votes == 4
    assert dog.support == pytest.approx(0.8)


def test_nothing_here_is_a_vote_against() -> None:
    marked = [(f"w{i}", 0.8, [box("car", 10, 10)]) for i in range(2)]
    empty: list[tuple[str, float, list[dict[str, Any]]]] = [(f"e{i}", 0.8, []) for i in range(3)]
    assert merge_boxes(marked + empty) == []
    assert only(merge_boxes(marked + empty[:2])).support == pytest.approx(0.5)  # 2 of 4 reach


def test_everyone_says_nothing_here() -> None:
    assert merge_boxes([(f"w{i}", 0.9, []) for i in range(5)]) == []
    assert merge_boxes([]) == []
    assert merge_boxes_batch([[], [("w", 0.5, [])]]) == [[], []]


def test_members_trace_each_object_to_who_said_what() -> None:
    answers = [
        ("ann", 0.9, [box("dog", 200, 150), box("car", 10, 10)]),
        ("bob", 0.7, [box("car", 11, 10)]),
        ("cat", 0.8, [box("car", 10, 11), box("tree", 500, 500), box("dog", 201, 150)]),
    ]
    merged = {o.label: o for o in merge_boxes(answers)}
    assert set(merged["car"].members) == {("ann", 1, None), ("bob", 0, None), ("cat", 0, None)}
    assert set(merged["dog"].members) == {Member("ann", 0), Member("cat", 2)}
    for obj in merged.values():
        for worker, item, _ in obj.members:
            drawn = next(items for w, _, items in answers if w == worker)[item]
            assert iou(drawn["bbox"], obj.bbox) > 0.9


def test_one_box_per_worker_per_cluster() -> None:
    # Worker "double" marks the car twice; only one of the two may vote for it.
    answers = [(f"w{i}", 0.8, [box("car", 10, 10)]) for i in range(2)]
    answers.append(("double", 0.8, [box("car", 10, 10), box("car", 12, 10)]))
    merged = only(merge_boxes(answers))
    assert merged.num_votes == 3
    assert sorted(map(str, merged.workers)) == ["double", "w0", "w1"]


def test_matching_is_optimal_not_first_come() -> None:
    a, b = [0, 0, 10, 10], [4, 0, 10, 10]  # IoU 0.43: two objects
    # x1 overlaps b best (0.74) but also a (0.6); x2 overlaps only b (0.9). A greedy pass that
    # gives x1 its best cluster leaves x2 alone; the optimum pairs x1 with a, x2 with b.
    x1, x2 = [2.5, 0, 10, 10], [4.5, 0, 10, 10]
    answers = [
        ("first", 0.9, [{"label": "car", "bbox": a}, {"label": "car", "bbox": b}]),
        ("second", 0.8, [{"label": "car", "bbox": x1}, {"label": "car", "bbox": x2}]),
        ("third", 0.7, [{"label": "car", "bbox": a}, {"label": "car", "bbox": b}]),
    ]
    merged = merge_boxes(answers)
    assert len(merged) == 2
    groups = {frozenset(o.members) for o in merged}
    assert groups == {
        frozenset({Member("first", 0), Member("second", 0), Member("third", 0)}),
        frozenset({Member("first", 1), Member("second", 1), Member("third", 1)}),
    }
    assert merge_boxes(answers, refine=True) == merged


def test_quorum_is_reached_exactly_at_half() -> None:
    answers = [(f"w{i}", 0.7, [box("car", 10, 10)] if i < 3 else []) for i in range(6)]
    assert only(merge_boxes(answers)).support == pytest.approx(0.5)
    assert merge_boxes(answers, quorum=0.6) == []


def test_batch_merges_each_image_as_alone() -> None:
    rng = np.random.default_rng(3)
    images = []
    for _ in range(20):
        truth = [box("car", *rng.uniform(0, 500, 2)) for _ in range(int(rng.integers(0, 5)))]
        images.append(
            [
                (
                    f"w{w}",
                    float(rng.uniform(0.3, 1.0)),
                    [
                        box(
                            t["label"],
                            t["bbox"][0] + rng.normal(0, 2),
                            t["bbox"][1] + rng.normal(0, 2),
                        )
                        for t in truth
                        if rng.random() < 0.8
                    ],
                )
                for w in range(int(rng.integers(1, 6)))
            ]
        )
    assert merge_boxes_batch(images) == [merge_boxes(answers) for answers in images]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        merge_boxes([("w", 0.0, [box("car", 0, 0)])])
    with pytest.raises(ValueError, match="weight"):
        merge_boxes([("w", float("nan"), [box("car", 0, 0)])])
    with pytest.raises(ValueError, match="finite"):
        merge_boxes([("w", 0.5, [{"label": "car", "bbox": [0, float("nan"), 1, 1]}])])
    with pytest.raises(ValueError, match="bbox"):
        merge_boxes([("w", 0.5, [{"label": "car", "bbox": [0, 0, 1]}])])


def test_to_item_is_the_api_item_with_score_and_votes() -> None:
    merged = only(merge_boxes([(f"w{i}", 0.9, [box("car", 10, 20)]) for i in range(3)]))
    item = merged.to_item()
    assert item == {"label": "car", "bbox": [10, 20, 40, 30], "score": merged.score, "num_votes": 3}
    json.dumps(item)


# Tiles


def tile_objects(pieces: list[dict[str, Any]], workers: int = 3) -> list[MergedObject]:
    """What the merge of one tile returns when ``workers`` workers all drew ``pieces``."""
    return merge_boxes([(f"t{id(pieces)}-{w}", 0.9, pieces) for w in range(workers)])


def test_an_object_across_an_overlapping_seam_is_one_box() -> None:
    tiles = [[0, 0, 600, 400], [500, 0, 600, 400]]  # they share x 500..600
    left = tile_objects([box("bus", 450, 100, 150, 80)])  # x 450..600, cut at its tile's edge
    right = tile_objects([box("bus", 500, 100, 150, 80)])  # x 500..650, cut at its tile's edge
    merged = only(merge_across_tiles([left, right], tiles))
    assert merged.bbox == pytest.approx((450, 100, 200, 80))
    assert merged.num_votes == 3
    assert {tile for _, _, tile in merged.members} == {0, 1}
    assert len(merged.members) == 6


def test_an_object_across_an_abutting_seam_is_one_box() -> None:
    tiles = [[0, 0, 500, 400], [500, 0, 500, 400]]
    left = tile_objects([box("bus", 450, 100, 50, 80)])
    right = tile_objects([box("bus", 500, 101, 60, 78)])
    merged = only(merge_across_tiles([left, right], tiles))
    assert merged.bbox == pytest.approx((450, 100.5, 110, 79))


def test_an_object_inside_the_overlap_is_seen_twice_and_kept_once() -> None:
    tiles = [[0, 0, 600, 400], [500, 0, 600, 400]]
    left = tile_objects([box("dog", 520, 200, 50, 40)])
    right = tile_objects([box("dog", 522, 200, 50, 40)])
    assert only(merge_across_tiles([left, right], tiles)).bbox == pytest.approx((521, 200, 50, 40))


def test_neighbours_in_the_overlap_are_not_crossed() -> None:
    tiles = [[0, 0, 600, 400], [500, 0, 600, 400]]
    pair = [box("car", 505, 100, 40, 30), box("car", 550, 100, 40, 30)]
    merged = merge_across_tiles([tile_objects(pair), tile_objects(pair)], tiles)
    assert sorted(o.bbox or () for o in merged) == [(505, 100, 40, 30), (550, 100, 40, 30)]


def test_pieces_with_different_labels_or_away_from_the_seam_stay_apart() -> None:
    tiles = [[0, 0, 600, 400], [500, 0, 600, 400]]
    left = tile_objects([box("bus", 450, 100, 150, 80), box("tree", 50, 50)])
    right = tile_objects([box("truck", 500, 100, 150, 80)])
    merged = merge_across_tiles([left, right], tiles)
    assert sorted(o.label for o in merged) == ["bus", "tree", "truck"]
    tree = next(o for o in merged if o.label == "tree")
    assert tree.bbox == (50, 50, 40, 30)
    assert {tile for _, _, tile in tree.members} == {0}


def test_an_object_over_a_tile_corner_is_one_box() -> None:
    tiles = [[0, 0, 600, 600], [500, 0, 600, 600], [0, 500, 600, 600], [500, 500, 600, 600]]
    whole = (450, 450, 200, 200)  # x and y 450..650, over all four tiles

    def piece(tile: list[int]) -> list[dict[str, Any]]:
        x0, y0 = max(whole[0], tile[0]), max(whole[1], tile[1])
        x1 = min(whole[0] + whole[2], tile[0] + tile[2])
        y1 = min(whole[1] + whole[3], tile[1] + tile[3])
        return [box("pool", x0, y0, x1 - x0, y1 - y0)]

    merged = only(merge_across_tiles([tile_objects(piece(t)) for t in tiles], tiles))
    assert merged.bbox == pytest.approx(whole)


# Polygons


def square(x: float, y: float, side: float = 40) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


def poly(label: str, points: list[list[float]]) -> dict[str, Any]:
    return {"label": label, "points": points}


def mask_of(points: list[list[float]], width: int = 200, height: int = 200) -> dict[str, Any]:
    return polygons_to_rles([points], width, height)[0]


def mask_iou_with(obj: MergedObject, points: list[list[float]]) -> float:
    assert obj.mask is not None
    return float(coco_mask.iou([obj.mask], [mask_of(points)], [0])[0][0])


def test_unanimous_polygons_merge_into_the_polygon() -> None:
    answers = [(f"w{i}", 0.9, [poly("tree", square(20, 30))]) for i in range(3)]
    merged = only(merge_polygons(answers, width=200, height=200))
    assert merged.label == "tree"
    assert merged.points == tuple(tuple(p) for p in square(20, 30))
    assert mask_iou_with(merged, square(20, 30)) == 1.0
    assert (merged.num_votes, merged.support) == (3, 1.0)
    assert merged.score > 0.999  # the posterior that it is real: three of three drew it
    item = merged.to_item()
    assert set(item) == {"label", "points", "rle", "score", "num_votes"}
    assert item["rle"]["size"] == [200, 200]
    json.dumps(item)


def test_polygon_label_vote_and_traceability() -> None:
    answers = [
        ("a", 0.9, [poly("rock", square(150, 150, 20)), poly("tree", square(20, 30))]),
        ("b", 0.8, [poly("tree", square(21, 30))]),
        ("c", 0.6, [poly("bush", square(20, 31))]),
    ]
    merged = only(merge_polygons(answers, width=200, height=200, quorum=0.5))
    assert merged.label == "tree"
    assert set(merged.members) == {Member("a", 1), Member("b", 0), Member("c", 0)}
    # The fixed-quorum merge scores by the winning label's share of the weight and agreement.
    assert merged.score == pytest.approx(1.7 / 2.3 * merged.agreement)


def test_the_mask_is_the_weighted_pixel_vote() -> None:
    # Two heavy workers draw the square, a light one a larger square around it: the pixels
    # only the light worker covered are out.
    answers = [
        ("a", 0.9, [poly("tree", square(20, 20, 40))]),
        ("b", 0.9, [poly("tree", square(20, 20, 40))]),
        ("c", 0.3, [poly("tree", square(18, 18, 46))]),
    ]
    merged = only(merge_polygons(answers, width=200, height=200))
    assert mask_iou_with(merged, square(20, 20, 40)) == 1.0
    assert merged.points == tuple(tuple(p) for p in square(20, 20, 40))


def test_an_outlying_polygon_barely_moves_the_mask() -> None:
    answers = [(f"w{i}", 0.8, [poly("tree", square(50 + i, 50))]) for i in range(4)]
    odd = [[50.0, 50.0], [100.0, 50.0], [100.0, 90.0], [50.0, 90.0]]  # IoU 0.8 with the rest
    answers.append(("odd", 0.8, [poly("tree", odd)]))
    merged = only(merge_polygons(answers, width=200, height=200))
    assert merged.num_votes == 5
    assert "odd" in merged.workers
    assert mask_iou_with(merged, square(51, 50)) > 0.95
    assert merged.points != tuple(map(tuple, odd))


def test_polygon_spammer_miss_and_extra() -> None:
    shapes = [poly("tree", square(20, 20)), poly("rock", square(120, 120, 30))]
    answers = [(f"w{i}", 0.8, list(shapes)) for i in range(4)]
    answers.append(("lazy", 0.8, [shapes[0]]))  # missed the rock
    answers[0] = ("eager", 0.8, [*shapes, poly("bush", square(150, 20, 20))])  # an extra
    answers.append(("spam", 0.1, [poly("tree", square(100, 10, 60)), poly("rock", square(5, 150))]))
    merged = merge_polygons(answers, width=200, height=200)
    assert sorted(o.label for o in merged) == ["rock", "tree"]
    rock = next(o for o in merged if o.label == "rock")
    assert rock.num_votes == 4


def test_polygons_nothing_here() -> None:
    assert merge_polygons([(f"w{i}", 0.9, []) for i in range(3)], width=50, height=50) == []
    marked = [("a", 0.9, [poly("tree", square(5, 5, 20))])]
    assert merge_polygons([*marked, ("b", 0.9, []), ("c", 0.9, [])], width=50, height=50) == []


def test_pixel_majority_vote_is_the_plain_baseline() -> None:
    answers = [(f"w{i}", 0.9, [poly("tree", square(20, 20))]) for i in range(2)]
    answers.append(("c", 0.1, [poly("tree", square(20, 20)), poly("rock", square(100, 100))]))
    merged = only(pixel_majority_vote(answers, width=200, height=200))
    assert merged.label == "tree"
    assert mask_iou_with(merged, square(20, 20)) == 1.0
    assert merged.num_votes == 3
    assert pixel_majority_vote([("a", 1.0, [])], width=20, height=20) == []


# Keypoints

SIGMAS = {"person": np.array([0.05, 0.05, 0.05, 0.05])}
SKELETON = [[100.0, 50.0, 2], [80.0, 100.0, 2], [120.0, 100.0, 1], [100.0, 200.0, 2]]


def person(points: list[list[float]] = SKELETON, dx: float = 0, dy: float = 0) -> dict[str, Any]:
    return {"label": "person", "keypoints": [[x + dx, y + dy, v] for x, y, v in points]}


def test_unanimous_keypoints() -> None:
    answers = [(f"w{i}", 0.9, [person()]) for i in range(3)]
    merged = only(merge_keypoints(answers, sigmas=SIGMAS))
    assert merged.keypoints == tuple((x, y, v) for x, y, v in SKELETON)
    assert (merged.num_votes, merged.support, merged.agreement) == (3, 1.0, 1.0)
    assert merged.to_item()["keypoints"] == SKELETON


def test_a_stray_keypoint_does_not_move_the_merged_one() -> None:
    answers = [(f"w{i}", 0.8, [person(dx=i - 1.5)]) for i in range(4)]
    stray = [list(p) for p in SKELETON]
    stray[3] = [160.0, 230.0, 2]  # the foot, far off
    answers.append(("stray", 0.8, [person(stray)]))
    merged = only(merge_keypoints(answers, sigmas=SIGMAS))
    assert merged.num_votes == 5
    assert merged.keypoints is not None
    assert merged.keypoints[3] == pytest.approx((100, 200, 2))
    assert merged.keypoints[0] == pytest.approx((100, 50, 2))


def test_visibility_is_a_weighted_vote_and_absent_wins_with_most_weight() -> None:
    absent = [list(p) for p in SKELETON]
    absent[2] = [0.0, 0.0, 0]
    visible = [list(p) for p in SKELETON]
    visible[2] = [120.0, 100.0, 2]
    answers = [
        ("a", 0.9, [person(absent)]),
        ("b", 0.8, [person(absent)]),
        ("c", 0.6, [person(visible)]),
    ]
    merged = only(merge_keypoints(answers, sigmas=SIGMAS))
    assert merged.keypoints is not None
    assert merged.keypoints[2] == (0.0, 0.0, 0)  # 1.7 of 2.3 says absent
    answers[1] = ("b", 0.8, [person()])  # now occluded (0.8) and visible (0.6) outweigh absent
    merged = only(merge_keypoints(answers, sigmas=SIGMAS))
    assert merged.keypoints is not None
    assert merged.keypoints[2] == (120.0, 100.0, 1)


def test_keypoint_spammer_miss_extra_and_traceability() -> None:
    other = person(dx=300)
    answers = [(f"w{i}", 0.8, [person(), other]) for i in range(4)]
    answers.append(("lazy", 0.8, [person()]))  # missed the second person
    answers[0] = ("eager", 0.8, [person(), other, person(dx=150, dy=150)])  # an extra
    answers.append(("spam", 0.1, [person(dx=40, dy=70)]))
    merged = merge_keypoints(answers, sigmas=SIGMAS)
    assert len(merged) == 2
    first = next(o for o in merged if o.num_votes == 5)
    second = next(o for o in merged if o.num_votes == 4)
    assert Member("lazy", 0) in first.members
    assert Member("eager", 1) in second.members
    assert second.keypoints is not None
    assert second.keypoints[0] == pytest.approx((400, 50, 2))


def test_keypoints_nothing_here_and_bad_input() -> None:
    assert merge_keypoints([(f"w{i}", 0.9, []) for i in range(3)], sigmas=SIGMAS) == []
    with pytest.raises(ValueError, match="sigmas"):
        merge_keypoints([("a", 0.9, [{"label": "cat", "keypoints": SKELETON}])], sigmas=SIGMAS)
    with pytest.raises(ValueError, match="keypoints"):
        merge_keypoints([("a", 0.9, [person(SKELETON[:3])])], sigmas=SIGMAS)


def test_weighted_median() -> None:
    assert weighted_median([1, 2, 3, 10], [1, 1, 1, 0]) == 2
    assert weighted_median([1, 2], [1, 1]) == 1.5
    assert weighted_median([1, 2, 3, 100], [0.1, 0.1, 0.1, 0.9]) == 100
    result = weighted_median([[1, 5], [4, 6]], [[0, 0], [1, 3]])
    assert np.isnan(result[0])
    assert result[1] == 6
