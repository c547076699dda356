"""Polygon consensus with a worker model learnt over a batch (qa.consensus.polygons)."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from qa.consensus.box_em import GoldRates
from qa.consensus.polygons import (
    merge_polygons,
    merge_polygons_batch,
    pixel_majority_vote,
    polygon_model,
    trace_outline,
)
from qa.geometry import mask_iou, polygons_to_rles

SIZE = (240, 200)


def blob(
    rng: np.random.Generator, *, lobe: bool = False, n: int = 120
) -> tuple[np.ndarray, np.ndarray, float]:
    """A smooth random outline (and its outward normals, and its radius) inside SIZE."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = float(rng.uniform(20, 45))
    r = np.ones_like(theta)
    for k in (2, 3):
        r = r + rng.uniform(0, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if lobe:
        r = r + 0.7 * np.exp(-((np.angle(np.exp(1j * (theta - 1.0))) / 0.3) ** 4))
    reach = radius * r.max() + 2
    centre = rng.uniform([reach, reach], [SIZE[0] - reach, SIZE[1] - reach])
    outline = centre + np.column_stack([np.cos(theta), np.sin(theta)]) * (radius * r)[:, None]
    tangent = np.roll(outline, -1, axis=0) - np.roll(outline, 1, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    if np.mean(np.sum(normal * (outline - centre), axis=1)) < 0:
        normal = -normal
    return outline, normal, radius


def drawn(
    rng: np.random.Generator,
    shape: tuple[np.ndarray, np.ndarray, float],
    *,
    bias: float = 0.0,
    jitter: float = 0.02,
    vertices: int = 40,
) -> list[list[float]]:
    outline, normal, radius = shape
    index = (np.linspace(0, len(outline), vertices, endpoint=False) + rng.integers(3)).astype(int)
    moved = outline[index % len(outline)] + bias * radius * normal[index % len(outline)]
    return (moved + rng.normal(0, jitter * radius, moved.shape)).tolist()


def crude(rng: np.random.Generator, shape: tuple[np.ndarray, np.ndarray, float]) -> list[Any]:
    """A spammer's polygon: a jittered quadrilateral about the object."""
    outline, _, radius = shape
    (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return (corners + rng.normal(0, 0.15 * radius, (4, 2))).tolist()


def crowd_with(
    rng: np.random.Generator, habits: dict[str, dict[str, Any]], n_images: int, spammer: bool
) -> tuple[list[list[Any]], list[list[np.ndarray]]]:
    """Images of 1-2 blobs each, answered by every worker in ``habits`` (and a spammer)."""
    crowds: list[list[Any]] = []
    truths: list[list[np.ndarray]] = []
    for _ in range(n_images):
        shapes = [blob(rng) for _ in range(int(rng.integers(1, 3)))]
        answers: list[Any] = [
            (name, 1.0, [{"label": "leaf", "points": drawn(rng, s, **habit)} for s in shapes])
            for name, habit in habits.items()
        ]
        if spammer:
            answers.append(
                ("spam", 1.0, [{"label": "leaf", "points": crude(rng, s)} for s in shapes])
            )
        crowds.append(answers)
        truths.append([s[0] for s in shapes])
    return crowds, truths


def mean_jaccard(objects: list[list[Any]], truths: list[list[np.ndarray]]) -> float:
    scores: list[float] = []
    for found, truth in zip(objects, truths, strict=True):
        rles = polygons_to_rles([t.tolist() for t in truth], *SIZE)
        masks = [o.mask for o in found]
        overlap = mask_iou(rles, masks)
        scores += (overlap.max(axis=1) if masks else np.zeros(len(rles))).tolist()
    return float(np.mean(scores))


def raster(points: Any, width: int, height: int) -> dict[str, Any]:
    return polygons_to_rles([[list(p) for p in points]], width, height)[0]


def test_the_model_finds_the_over_drawer_and_the_spammer_without_gold() -> None:
    rng = np.random.default_rng(3)
    habits = {"a": {}, "b": {}, "c": {}, "wide": {"bias": 0.08}, "narrow": {"bias": -0.06}}
    crowds, _ = crowd_with(rng, habits, 40, spammer=True)
    model = polygon_model(crowds, [SIZE] * len(crowds))
    careful = [model.workers[w] for w in "abc"]
    assert model.workers["wide"].bias > 0.04
    assert model.workers["narrow"].bias < -0.03
    assert all(abs(w.bias) < 0.025 for w in careful)
    # The vote weight is 1 / noise**2: the spammer's counts for a fraction of a careful one's.
    assert model.workers["spam"].noise > 2.5 * max(w.noise for w in careful)


def test_consensus_beats_the_pixel_vote_with_one_over_drawer_of_three() -> None:
    rng = np.random.default_rng(4)
    habits = {"a": {"jitter": 0.04}, "b": {"jitter": 0.04}, "wide": {"bias": 0.1}}
    crowds, truths = crowd_with(rng, habits, 30, spammer=False)
    ours = mean_jaccard(merge_polygons_batch(crowds, [SIZE] * len(crowds)), truths)
    vote = mean_jaccard(
        [pixel_majority_vote(crowd, width=SIZE[0], height=SIZE[1]) for crowd in crowds], truths
    )
    assert ours > vote + 0.01, (ours, vote)


def test_the_polygon_is_the_mask() -> None:
    rng = np.random.default_rng(5)
    crowds: list[list[Any]] = []
    for _ in range(20):
        shape = blob(rng, lobe=bool(rng.random() < 0.5))
        crowds.append([(w, 1.0, [{"label": "leaf", "points": drawn(rng, shape)}]) for w in "abcd"])
    merged = [obj for objects in merge_polygons_batch(crowds, [SIZE] * 20) for obj in objects]
    assert len(merged) == 20
    for obj in merged:
        assert obj.mask is not None
        iou = mask_iou([raster(obj.points, *SIZE)], [obj.mask])[0, 0]
        assert iou >= 0.98, iou


def test_tracing_a_mask_gives_it_back() -> None:
    square = np.zeros((50, 60), dtype=np.uint8)
    square[10:30, 20:45] = 1
    assert trace_outline(square) == [(20.0, 10.0), (45.0, 10.0), (45.0, 30.0), (20.0, 30.0)]
    moved = trace_outline(square, (100, 7))
    assert moved is not None
    assert moved[0] == (120.0, 17.0)
    rng = np.random.default_rng(6)
    for _ in range(20):
        outline = blob(rng, lobe=True)[0]
        rle = raster(outline, *SIZE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = coco_mask.decode(rle)
        traced = trace_outline(mask)
        assert traced is not None
        assert mask_iou([raster(traced, *SIZE)], [rle])[0, 0] >= 0.98
    line = np.zeros((10, 10), dtype=np.uint8)
    line[4, 2:8] = 1
    assert trace_outline(line) == [(2.0, 4.0), (8.0, 4.0), (8.0, 5.0), (2.0, 5.0)]
    assert trace_outline(np.zeros((5, 5), dtype=np.uint8)) is None


def test_chunks_with_the_batch_model_get_what_one_batch_gets() -> None:
    rng = np.random.default_rng(7)
    habits: dict[str, dict[str, Any]] = {
        "a": {}, "b": {"jitter": 0.05}, "wide": {"bias": 0.08}, "c": {"vertices": 7}
    }  # fmt: skip
    crowds, _ = crowd_with(rng, habits, 24, spammer=True)
    sizes = [SIZE] * len(crowds)
    whole = merge_polygons_batch(crowds, sizes)
    model = polygon_model(crowds, sizes)
    chunked = [
        objects
        for start in range(0, len(crowds), 5)
        for objects in merge_polygons_batch(
            crowds[start : start + 5], sizes[start : start + 5], model=model
        )
    ]
    assert chunked == whole
    # Learnt on the chunk alone, the model differs, and so may the objects: the model matters.
    alone = polygon_model(crowds[:5], sizes[:5])
    assert alone.workers["wide"].bias != model.workers["wide"].bias


def test_a_worker_the_model_has_not_seen_counts_as_a_typical_one() -> None:
    rng = np.random.default_rng(8)
    crowds, _ = crowd_with(rng, {"a": {}, "b": {}, "c": {}}, 10, spammer=False)
    model = polygon_model(crowds, [SIZE] * 10)
    shape = blob(rng)
    newcomers = [(w, 1.0, [{"label": "leaf", "points": drawn(rng, shape)}]) for w in "xyz"]
    (objects,) = merge_polygons_batch([newcomers], [SIZE], model=model)
    assert len(objects) == 1
    assert model.worker("x") == model.crowd


def test_tiny_and_degenerate_polygons_do_not_crash() -> None:
    tiny = [[10.0, 10.0], [11.0, 10.0], [10.0, 11.0]]  # under one pixel
    dot = [[30.0, 30.0], [32.0, 30.0], [32.0, 31.5]]  # about a pixel or two
    line = [[0.0, 0.0], [20.0, 20.0], [40.0, 40.0]]  # no area
    crowd = [
        ("a", 1.0, [{"label": "x", "points": tiny}, {"label": "x", "points": dot}]),
        ("b", 1.0, [{"label": "x", "points": dot}, {"label": "x", "points": line}]),
        ("c", 1.0, [{"label": "x", "points": [[1.0, 2.0], [3.0, 4.0]]}]),  # two points
        ("d", 1.0, [{"label": "x", "points": [[500.0, 500.0], [600.0, 500.0], [600.0, 600.0]]}]),
        ("e", 1.0, []),
    ]
    for objects in (
        merge_polygons(crowd, width=50, height=50),
        merge_polygons(crowd, width=50, height=50, quorum=0.3),
        merge_polygons(crowd, width=1, height=1),
    ):
        for obj in objects:
            assert obj.points is not None
            assert len(obj.points) >= 3
            assert obj.mask is not None
    assert merge_polygons_batch([], []) == []
    assert merge_polygons_batch([[]], [(10, 10)]) == [[]]
    assert polygon_model([], []).workers == {}
    with pytest.raises(ValueError, match="finite"):
        merge_polygons(
            [("a", 1.0, [{"label": "x", "points": [[0, 0], [1, float("nan")], [2, 2]]}])],
            width=5,
            height=5,
        )


def test_a_quorum_keeps_clusters_by_support() -> None:
    rng = np.random.default_rng(9)
    shape, other = blob(rng), blob(rng)
    crowd = [(w, 1.0, [{"label": "leaf", "points": drawn(rng, shape)}]) for w in "abc"]
    crowd += [(w, 1.0, []) for w in "de"]
    crowd[0] = ("a", 1.0, [*crowd[0][2], {"label": "leaf", "points": drawn(rng, other)}])
    assert len(merge_polygons(crowd, width=SIZE[0], height=SIZE[1], quorum=0.7)) == 0
    assert len(merge_polygons(crowd, width=SIZE[0], height=SIZE[1], quorum=0.2)) == 2
    assert len(merge_polygons(crowd, width=SIZE[0], height=SIZE[1])) == 1


def test_the_label_follows_the_workers_who_label_well() -> None:
    rng = np.random.default_rng(10)
    crowds: list[list[Any]] = []
    for k in range(30):
        shape = blob(rng)
        truth = "leaf" if k % 2 else "stone"
        wrong = "stone" if k % 2 else "leaf"
        # Two who label at random against one who is always right; on a two-two split the
        # reliable worker decides.
        crowds.append(
            [
                ("good", 1.0, [{"label": truth, "points": drawn(rng, shape)}]),
                (
                    "r1",
                    1.0,
                    [
                        {
                            "label": truth if rng.random() < 0.5 else wrong,
                            "points": drawn(rng, shape),
                        }
                    ],
                ),
                ("r2", 1.0, [{"label": wrong if k % 3 else truth, "points": drawn(rng, shape)}]),
                ("r3", 1.0, [{"label": truth if k % 3 else wrong, "points": drawn(rng, shape)}]),
            ]
        )
    model = polygon_model(crowds, [SIZE] * 30)
    assert model.workers["good"].label_accuracy > max(
        model.workers[w].label_accuracy for w in ("r1", "r2", "r3")
    )
    merged = merge_polygons_batch(crowds, [SIZE] * 30)
    right = sum(
        objects[0].label == ("leaf" if k % 2 else "stone") for k, objects in enumerate(merged)
    )
    assert right >= 27


def test_gold_sets_the_prior_of_a_worker_seen_on_few_images() -> None:
    rng = np.random.default_rng(12)
    crowds, _ = crowd_with(rng, {"a": {}, "b": {}, "c": {}}, 30, spammer=False)
    # "few" answered six images, marking everything there: the crowd alone finds them fine.
    for image in crowds[:6]:
        image.append(("few", 1.0, image[0][2]))
    plain = polygon_model(crowds, [SIZE] * len(crowds))
    # Gold says they mark a third of what is there and add two strays a picture, worth 20
    # answers: as much as their few images, so the learnt rates go about halfway.
    gold: dict[Hashable, GoldRates] = {"few": GoldRates(0.3, 2.0, 20.0)}
    informed = polygon_model(crowds, [SIZE] * len(crowds), prior=gold)
    assert informed.workers["few"].recall < plain.workers["few"].recall - 0.2
    assert informed.workers["few"].false_marks > plain.workers["few"].false_marks + 0.5
    # Workers without gold stay where they were.
    assert informed.workers["a"].recall == pytest.approx(plain.workers["a"].recall, abs=0.02)
