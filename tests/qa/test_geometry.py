from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from qa.geometry import (
    COCO_KEYPOINT_SIGMAS,
    MIN_KEYPOINT_AREA,
    box_iou,
    keypoint_area,
    keypoint_sigmas,
    mask_iou,
    match,
    match_annotations,
    oks,
    polygon_iou,
    polygons_to_rles,
)

# Boxes


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    boxes = np.column_stack(
        [
            rng.uniform(0, 100, n),
            rng.uniform(0, 100, n),
            rng.uniform(0, 40, n),
            rng.uniform(0, 40, n),
        ]
    )
    # Degenerate boxes: zero width, zero height, both; and some far away (disjoint from all).
    boxes[rng.random(n) < 0.05, 2] = 0.0
    boxes[rng.random(n) < 0.05, 3] = 0.0
    boxes[rng.random(n) < 0.05, :2] += 1000.0
    return boxes


def test_box_iou_agrees_with_pycocotools_on_random_pairs() -> None:
    rng = np.random.default_rng(20240601)
    a, b = random_boxes(rng, 100), random_boxes(rng, 100)  # 10,000 pairs
    expected = np.asarray(coco_mask.iou(a, b, [0] * len(b)))
    got = box_iou(a, b)
    assert got.shape == (100, 100)
    assert got.dtype == np.float64
    assert np.abs(got - expected).max() <= 1e-9
    assert (got == 0).any()
    assert (got > 0).any()
    assert not np.isnan(got).any()


def test_box_iou_hand_cases() -> None:
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 10, 10], [10, 0, 10, 10], [0, 0, 0, 10], [2, 2, 0, 0]]
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.0, 0.0])
    # Two identical zero-area boxes do not overlap.
    assert box_iou([[3, 3, 0, 0]], [[3, 3, 0, 0]]).tolist() == [[0.0]]


@pytest.mark.parametrize(("n", "m"), [(0, 0), (0, 3), (2, 0)])
def test_box_iou_of_empty_sets(n: int, m: int) -> None:
    a, b = np.ones((n, 4)), np.ones((m, 4))
    assert box_iou(a, b).shape == (n, m)
    assert box_iou([], [[0, 0, 1, 1]] * m).shape == (0, m)


def test_box_iou_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


# Polygons


def random_polygon(rng: np.random.Generator, width: int, height: int) -> list[list[float]]:
    """A star-shaped polygon (points sorted by angle around a centre) inside the image."""
    n = int(rng.integers(3, 12))
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(2, 30, n)
    xs = np.clip(cx + radii * np.cos(angles), 0, width)
    ys = np.clip(cy + radii * np.sin(angles), 0, height)
    return [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]


def direct_polygon_iou(
    p: list[list[float]], q: list[list[float]], width: int, height: int
) -> float:
    rle_p = coco_mask.frPyObjects([[c for point in p for c in point]], height, width)
    rle_q = coco_mask.frPyObjects([[c for point in q for c in point]], height, width)
    return float(np.asarray(coco_mask.iou(rle_p, rle_q, [0]))[0, 0])


def test_polygon_iou_agrees_with_pycocotools_on_random_polygons() -> None:
    rng = np.random.default_rng(7)
    width, height = 120, 90
    a = [random_polygon(rng, width, height) for _ in range(30)]
    b = [random_polygon(rng, width, height) for _ in range(25)]
    got = polygon_iou(a, b, width, height)
    expected = np.array([[direct_polygon_iou(p, q, width, height) for q in b] for p in a])
    assert got.shape == (30, 25)
    assert np.abs(got - expected).max() <= 1e-12
    assert (got > 0).sum() > 10


def test_polygon_iou_of_half_overlapping_squares_is_a_third() -> None:
    left = [[0, 0], [10, 0], [10, 10], [0, 10]]
    right = [[5, 0], [15, 0], [15, 10], [5, 10]]
    assert polygon_iou([left], [right], 20, 10)[0, 0] == pytest.approx(1 / 3)
    assert polygon_iou([left], [left], 20, 10)[0, 0] == pytest.approx(1.0)


def test_polygon_touching_the_image_border() -> None:
    whole = [[0, 0], [20, 0], [20, 10], [0, 10]]
    rles = polygons_to_rles([whole], 20, 10)
    assert coco_mask.area(rles).tolist() == [200]


def test_polygon_iou_of_empty_sets() -> None:
    square = [[0, 0], [4, 0], [4, 4]]
    assert polygon_iou([], [square], 10, 10).shape == (0, 1)
    assert polygon_iou([square, square], [], 10, 10).shape == (2, 0)
    assert polygons_to_rles([], 10, 10) == []
    assert mask_iou([], []).shape == (0, 0)


def test_polygons_need_three_points() -> None:
    # pycocotools would read [x1, y1, x2, y2] as a box.
    with pytest.raises(ValueError, match="3"):
        polygons_to_rles([[[0, 0], [5, 5]]], 10, 10)


# Keypoints


def test_coco_sigmas() -> None:
    assert len(COCO_KEYPOINT_SIGMAS) == 17
    assert COCO_KEYPOINT_SIGMAS["nose"] == 0.026
    assert COCO_KEYPOINT_SIGMAS["right_ankle"] == 0.089
    assert keypoint_sigmas(["nose", "tail", "left_hip"], default=0.1).tolist() == [
        0.026,
        0.1,
        0.107,
    ]


def test_keypoint_area_uses_labelled_points_only() -> None:
    assert keypoint_area([[10, 20, 2], [90, 45, 1], [0, 0, 0]]) == 80 * 25
    # A point or a line spans nothing; the scale is floored at a small object's area.
    assert keypoint_area([[10, 20, 2]]) == MIN_KEYPOINT_AREA
    assert keypoint_area([[10, 20, 2], [30, 25, 1]]) == MIN_KEYPOINT_AREA
    assert keypoint_area([[0, 0, 0]]) == 0.0


SIGMAS = np.array([0.05, 0.05, 0.05])
PERSON = np.array([[10.0, 10.0, 2], [50.0, 10.0, 2], [30.0, 60.0, 1]])


def test_oks_identical_is_one_and_far_is_zero() -> None:
    area = keypoint_area(PERSON)
    far = PERSON + np.array([500.0, 500.0, 0])
    got = oks([PERSON, far], [PERSON], SIGMAS, [area])
    assert got.shape == (2, 1)
    assert got[0, 0] == pytest.approx(1.0)
    assert got[1, 0] < 1e-9


def test_oks_follows_the_coco_formula() -> None:
    moved = PERSON.copy()
    moved[0, :2] += [3.0, 4.0]  # d = 5
    area = 40.0 * 50.0
    per_point = math.exp(-25 / (2 * area * (2 * 0.05) ** 2))
    assert oks([moved], [PERSON], SIGMAS, [area])[0, 0] == pytest.approx((per_point + 2) / 3)


def test_oks_ignores_keypoints_absent_from_the_reference() -> None:
    reference = PERSON.copy()
    reference[2] = [0, 0, 0]
    candidate = PERSON.copy()
    candidate[2, :2] = [200.0, 300.0]
    assert oks([candidate], [reference], SIGMAS, [1000.0])[0, 0] == pytest.approx(1.0)


def test_oks_counts_a_reference_keypoint_the_candidate_left_out_as_zero() -> None:
    reference = np.array([[0.0, 0.0, 2], [40.0, 40.0, 2]])
    candidate = np.array([[0.0, 0.0, 0], [40.0, 40.0, 2]])  # absent, though stored at (0, 0)
    assert oks([candidate], [reference], SIGMAS[:2], [1600.0])[0, 0] == pytest.approx(0.5)


def test_oks_of_a_reference_with_nothing_labelled_is_zero() -> None:
    empty = np.zeros((3, 3))
    assert oks([PERSON], [empty], SIGMAS, [0.0]).tolist() == [[0.0]]


def test_oks_of_zero_area_reference_hits_only_exactly() -> None:
    single = np.array([[10.0, 10.0, 2], [0, 0, 0], [0, 0, 0]])
    near = single + np.array([[0.5, 0, 0], [0, 0, 0], [0, 0, 0]])
    got = oks([single, near], [single], SIGMAS, [0.0])
    assert got[:, 0].tolist() == pytest.approx([1.0, 0.0])


def test_a_single_point_reference_forgives_a_near_click() -> None:
    single = np.array([[10.0, 10.0, 2], [0, 0, 0], [0, 0, 0]])
    near = single + np.array([[3.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    far = single + np.array([[30.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    got = oks([near, far], [single], [0.05, 0.05, 0.05], [keypoint_area(single)])[:, 0]
    assert got[0] == pytest.approx(np.exp(-9 / (2 * 0.01 * MIN_KEYPOINT_AREA)))
    assert got[0] > 0.6 > 0.01 > got[1]


def test_oks_agrees_with_coco_loop() -> None:
    """Against a transcription of pycocotools' COCOeval.computeOks (every keypoint detected)."""
    rng = np.random.default_rng(3)
    k = 17
    sigmas = keypoint_sigmas(COCO_KEYPOINT_SIGMAS)
    refs = np.dstack(
        [rng.uniform(0, 200, (6, k)), rng.uniform(0, 200, (6, k)), rng.integers(0, 3, (6, k))]
    )
    cands = np.dstack(
        [
            refs[:5, :, 0] + rng.normal(0, 8, (5, k)),
            refs[:5, :, 1] + rng.normal(0, 8, (5, k)),
            np.full((5, k), 2.0),
        ]
    )
    areas = rng.uniform(500, 5000, len(refs))
    expected = np.zeros((len(cands), len(refs)))
    variances = (sigmas * 2) ** 2
    for j, g in enumerate(refs):
        visible = g[:, 2] > 0
        if not visible.any():
            continue
        for i, d in enumerate(cands):
            e = (
                ((d[:, 0] - g[:, 0]) ** 2 + (d[:, 1] - g[:, 1]) ** 2)
                / variances
                / (areas[j] + np.spacing(1))
                / 2
            )
            e = e[visible]
            expected[i, j] = np.sum(np.exp(-e)) / e.shape[0]
    got = oks(cands, refs, sigmas, areas)
    assert np.abs(got - expected).max() <= 1e-12
    assert got.max() > 0.5


def test_oks_of_empty_sets() -> None:
    assert oks(np.zeros((0, 3, 3)), [PERSON], SIGMAS, [1.0]).shape == (0, 1)
    assert oks([PERSON], [], SIGMAS, []).shape == (1, 0)


# Matching


def test_match_is_optimal_not_greedy() -> None:
    # Greedy takes (0, 0) = 0.9 and leaves row 1 with nothing above the threshold.
    similarity = np.array([[0.9, 0.8], [0.7, 0.1]])
    found = match(similarity, 0.5)
    assert [(p.row, p.col) for p in found.pairs] == [(0, 1), (1, 0)]
    assert found.pairs[0].similarity == pytest.approx(0.8)
    assert found.unmatched_rows == ()
    assert found.unmatched_cols == ()


def test_match_does_not_trade_a_kept_pair_for_sub_threshold_similarity() -> None:
    # The unconstrained optimum (0, 1) + (1, 0) = 0.9 keeps no pair at 0.5.
    found = match(np.array([[0.6, 0.45], [0.45, 0.0]]), 0.5)
    assert [tuple(p) for p in found.pairs] == [(0, 0, 0.6)]
    assert found.unmatched_rows == (1,)
    assert found.unmatched_cols == (1,)


def test_match_of_empty_and_rectangular_matrices() -> None:
    assert match(np.zeros((0, 3)), 0.5).unmatched_cols == (0, 1, 2)
    assert match(np.zeros((2, 0)), 0.5).unmatched_rows == (0, 1)
    found = match(np.array([[0.2, 0.9, 0.6]]), 0.5)
    assert [(p.row, p.col) for p in found.pairs] == [(0, 1)]
    assert found.unmatched_cols == (0, 2)


def box(label: str, x: float, y: float, w: float = 10, h: float = 10) -> dict:
    return {"label": label, "bbox": [x, y, w, h]}


def test_match_annotations_in_swapped_order() -> None:
    reference = [box("car", 0, 0), box("car", 50, 50)]
    candidate = [box("car", 51, 50), box("car", 1, 0)]
    found = match_annotations(reference, candidate, kind="bbox", threshold=0.5)
    assert [(m.ref, m.cand) for m in found.matches] == [(0, 1), (1, 0)]
    assert found.misses == found.extras == found.label_mismatches == ()


def test_match_annotations_with_a_miss_and_an_extra() -> None:
    reference = [box("car", 0, 0), box("car", 50, 50)]
    candidate = [box("car", 0, 0), box("car", 80, 0)]
    found = match_annotations(reference, candidate, kind="bbox", threshold=0.5)
    assert [(m.ref, m.cand, m.similarity) for m in found.matches] == [(0, 0, 1.0)]
    assert found.misses == (1,)
    assert found.extras == (1,)


def test_match_annotations_with_a_wrong_label() -> None:
    reference = [box("car", 0, 0), box("tree", 50, 50)]
    candidate = [box("car", 50, 50), box("car", 0, 0)]
    found = match_annotations(reference, candidate, kind="bbox", threshold=0.5)
    assert [(m.ref, m.cand) for m in found.matches] == [(0, 1)]
    assert [tuple(m) for m in found.label_mismatches] == [(1, 0, 1.0, "tree", "car")]
    assert found.misses == found.extras == ()


def test_match_annotations_prefers_same_label_over_better_overlap() -> None:
    reference = [box("car", 0, 0)]
    candidate = [box("tree", 0, 0), box("car", 2, 0)]
    found = match_annotations(reference, candidate, kind="bbox", threshold=0.5)
    assert [(m.ref, m.cand) for m in found.matches] == [(0, 1)]
    assert found.extras == (0,)


def test_match_annotations_in_a_crowd_where_greedy_fails() -> None:
    reference = [box("car", 0, 0), box("car", 4, 0)]
    # IoU: c0-r0 0.818, c0-r1 0.538, c1-r0 0.667, c1-r1 0.316.
    candidate = [box("car", 1, 0), box("car", 0, 2)]
    found = match_annotations(reference, candidate, kind="bbox", threshold=0.5)
    assert [(m.ref, m.cand) for m in found.matches] == [(0, 1), (1, 0)]
    assert [m.similarity for m in found.matches] == pytest.approx([80 / 120, 70 / 130])


def test_match_annotations_of_empty_lists() -> None:
    found = match_annotations([], [box("car", 0, 0)], kind="bbox", threshold=0.5)
    assert found.extras == (0,)
    found = match_annotations([box("car", 0, 0)], [], kind="bbox", threshold=0.5)
    assert found.misses == (0,)


def test_match_annotations_of_polygons() -> None:
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    shifted = [[5, 0], [15, 0], [15, 10], [5, 10]]
    reference = [{"label": "tree", "points": square}]
    candidate = [{"label": "tree", "points": shifted}, {"label": "tree", "points": square}]
    found = match_annotations(
        reference, candidate, kind="polygon", threshold=0.5, width=20, height=10
    )
    assert [(m.ref, m.cand) for m in found.matches] == [(0, 1)]
    assert found.extras == (0,)
    with pytest.raises(ValueError, match="width"):
        match_annotations(reference, candidate, kind="polygon", threshold=0.5)


def test_match_annotations_of_keypoints() -> None:
    sigmas = {"person": SIGMAS, "dog": np.array([0.05, 0.05])}
    person = PERSON.tolist()
    other = (PERSON + np.array([100.0, 0, 0])).tolist()
    dog = [[10.0, 10.0, 2], [50.0, 10.0, 2]]
    reference = [{"label": "person", "keypoints": person}, {"label": "person", "keypoints": other}]
    candidate = [
        {"label": "person", "keypoints": other},
        {"label": "dog", "keypoints": dog},  # different keypoints: never compared to a person
    ]
    found = match_annotations(reference, candidate, kind="keypoints", threshold=0.5, sigmas=sigmas)
    assert [(m.ref, m.cand, m.similarity) for m in found.matches] == [(1, 0, pytest.approx(1.0))]
    assert found.misses == (0,)
    assert found.extras == (1,)
    assert found.label_mismatches == ()
    with pytest.raises(ValueError, match="sigmas"):
        match_annotations(reference, candidate, kind="keypoints", threshold=0.5)


def test_match_annotations_rejects_classification() -> None:
    with pytest.raises(ValueError, match="kind"):
        match_annotations(
            [{"label": "cat"}], [{"label": "cat"}], kind="classification", threshold=0.5
        )
