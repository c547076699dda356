"""Masks on the tiles of a large image: tasks a tile, answers and results in full-image
coordinates, tiles' results united across their seams, gold scored through the tile."""

from __future__ import annotations

import numpy as np
import pytest

from crowd.errors import InvalidInput
from qa.consensus.masks import unite_mask_tiles
from qa.consensus.objects import MergedObject
from qa.geometry import mask_iou
from qa.merge import consensus_compute
from qa.models import ConsensusResult, ConsensusRun, GoldResult
from qa.services import gold_set
from tasks import routing
from tasks.models import Assignment, Task
from tasks.services import project_transition
from tasks.tiling import tile_cores, tile_regions
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import no_gold
from tests.qa.mask_crowd import rle

# 600 x 300 with tiles of 256 overlapping by 64: three columns and two rows of tiles.
W, H = 600, 300
TILE, OVERLAP = 256, 64


def band(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def inside(mask: np.ndarray, region: list[int]) -> np.ndarray:
    x, y, w, h = region
    out = np.zeros_like(mask)
    out[y : y + h, x : x + w] = mask[y : y + h, x : x + w]
    return out


def test_tile_cores_split_each_overlap_down_its_middle_and_cover_the_image_once() -> None:
    regions = tile_regions(W, H, TILE, OVERLAP)
    cores = tile_cores(regions)
    seen = np.zeros((H, W), dtype=np.intp)
    for (cx, cy, cw, ch), (x, y, w, h) in zip(cores, regions, strict=True):
        assert x <= cx
        assert y <= cy
        assert cx + cw <= x + w
        assert cy + ch <= y + h
        seen[cy : cy + ch, cx : cx + cw] += 1
    assert (seen == 1).all()
    assert tile_cores([(0, 0, W, H)]) == [(0, 0, W, H)]


def _piece(label: str, mask: np.ndarray, score: float, worker: str) -> MergedObject:
    return MergedObject(kind="mask", label=label, score=score, support=1.0, agreement=1.0,
                        num_votes=2, workers=(worker,), items=(0,), mask=rle(mask))  # fmt: skip


@pytest.mark.parametrize("semantic", [False, True])
def test_an_object_across_a_seam_is_one_mask_and_neighbours_stay_apart(semantic) -> None:
    regions = [[0, 0, 256, H], [192, 0, 256, H]]  # overlap: columns 192 to 255
    road = band(100, 50, 300, 40)  # crosses the seam
    car_left, car_right = band(150, 200, 60, 30), band(230, 200, 60, 30)  # both in the overlap
    left = [_piece("road", inside(road, regions[0]), 0.9, "a"),
            _piece("car", inside(car_left, regions[0]), 0.8, "a")]  # fmt: skip
    right = [_piece("road", inside(road, regions[1]), 0.7, "b"),
             _piece("car", inside(car_right, regions[1]), 0.6, "b")]  # fmt: skip
    if semantic:
        left = [left[0]]
        right = [right[0]]
    united = unite_mask_tiles([left, right], regions, iou_threshold=0.5, semantic=semantic)
    roads = [o for o in united if o.label == "road"]
    assert len(roads) == 1
    assert mask_iou([roads[0].to_item()["rle"]], [rle(road)])[0, 0] == 1.0
    assert roads[0].tiles == (0, 1)
    assert roads[0].workers == ("a", "b")
    # Area-weighted: the left core (columns 0-223) holds 124 of the road's 300 columns.
    assert roads[0].score == pytest.approx((124 * 0.9 + 176 * 0.7) / 300)
    if not semantic:
        # Two cars, one seen by each tile in the overlap, do not overlap: two objects, each
        # kept on the core of the tile that saw it.
        cars = [o for o in united if o.label == "car"]
        assert len(cars) == 2


def _strokes(offset: int) -> tuple[list[MergedObject], list[MergedObject]]:
    """A stroke 3 px across crossing the seam, the right tile's crowd placing it ``offset``
    px lower than the left's."""
    left = [_piece("crack", inside(band(100, 100, 156, 3), [0, 0, 256, H]), 0.9, "a")]
    right = [_piece("crack", inside(band(192, 100 + offset, 208, 3), [192, 0, 256, H]), 0.8, "b")]
    return left, right


@pytest.mark.parametrize(
    ("offset", "tolerance", "objects"),
    [
        (2, 0.0, 2),  # IoU 1/5 in the overlap: plain IoU splits it
        (2, 2.0, 1),  # dilated by 2 px: 5/9, one crack
        (12, 2.0, 2),  # two cracks 12 px apart stay two
    ],
)
def test_a_thin_object_across_a_seam_is_joined_at_the_edge_tolerance(
    offset: int, tolerance: float, objects: int
) -> None:
    regions = [[0, 0, 256, H], [192, 0, 256, H]]
    left, right = _strokes(offset)
    united = unite_mask_tiles([left, right], regions, iou_threshold=0.5, tolerance=tolerance)
    assert len(united) == objects
    if objects == 1:
        assert united[0].tiles == (0, 1)


@pytest.mark.django_db
def test_the_consensus_joins_tiles_at_the_fits_edge_tolerance(manager) -> None:
    from qa.merge import _unite_tiles

    project = project_create(manager, kind="mask", labels=["crack"], tile_size=TILE,
                             tile_overlap=OVERLAP)  # fmt: skip
    regions = [[0, 0, 256, H], [192, 0, 256, H]]
    assert len(_unite_tiles(project, [*_strokes(2)], regions)) == 2
    assert len(_unite_tiles(project, [*_strokes(2)], regions, tolerance=2.0)) == 1


@pytest.mark.django_db
def test_a_mask_task_is_a_tile_and_an_answer_outside_it_is_refused(manager) -> None:
    project = project_create(
        manager, kind="mask", labels=["road", "car"], gold_rate=0.0, min_overlap=1,
        max_overlap=1, tile_size=TILE, tile_overlap=OVERLAP,
    )  # fmt: skip
    image = image_ready(project, width=W, height=H)
    regions = sorted(tuple(t.region) for t in Task.objects.filter(image=image))
    assert regions == sorted(tile_regions(W, H, TILE, OVERLAP))
    project = project_transition(project=project, action="start")
    worker = WorkerFactory.create()
    lease = routing.assignment_next(project=project, worker=worker, rand=no_gold)
    assert lease is not None
    region = lease.task.region
    assert region != [0, 0, W, H]
    x, y = region[:2]
    outside = band(0, 0, W, H) - inside(band(0, 0, W, H), region)
    with pytest.raises(InvalidInput) as refused:
        routing.assignment_submit(
            assignment_id=lease.pk, worker=worker,
            annotations=[{"label": "road", "rle": rle(outside)}],
        )  # fmt: skip
    assert "outside this task's region" in str(refused.value.errors)
    assert Assignment.objects.get(pk=lease.pk).answer is None
    # The same mask inside the tile, in full-image coordinates, is taken as is.
    painted = {"label": "road", "rle": rle(band(x, y, 10, 10))}
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=[painted])
    assert Assignment.objects.get(pk=lease.pk).answer == [painted]


@pytest.mark.django_db
@pytest.mark.both_databases
@pytest.mark.parametrize("mode", ["instance", "semantic"])
def test_tiles_answered_apart_give_one_full_image_result(manager, mode) -> None:
    project = project_create(
        manager, kind="mask", mask_mode=mode, labels=["road", "car"], gold_rate=0.0,
        min_overlap=2, max_overlap=2, tile_size=TILE, tile_overlap=OVERLAP,
    )  # fmt: skip
    image_ready(project, width=W, height=H)
    project = project_transition(project=project, action="start")
    road = band(20, 120, 560, 40)  # crosses every column of tiles, and the rows' seam
    car = band(450, 20, 40, 30)
    for _ in range(2):
        worker = WorkerFactory.create()
        while lease := routing.assignment_next(project=project, worker=worker, rand=no_gold):
            region = lease.task.region
            items = [
                {"label": label, "rle": rle(inside(mask, region))}
                for label, mask in (("road", road), ("car", car))
                if inside(mask, region).any()
            ]
            routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=items)
    assert set(Task.objects.values_list("state", flat=True)) == {"done"}
    consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    (result,) = ConsensusResult.objects.filter(project=project)
    merged: dict[str, list[dict]] = {}
    for item in result.annotations:
        assert item["rle"]["size"] == [H, W]
        merged.setdefault(item["label"], []).append(item)
    assert len(merged["road"]) == 1
    assert len(merged["car"]) == 1
    assert mask_iou([merged["road"][0]["rle"]], [rle(road)])[0, 0] == 1.0
    assert mask_iou([merged["car"][0]["rle"]], [rle(car)])[0, 0] == 1.0
    # Every answer of every tile is a member of the result.
    members = {tuple(m) for objects in result.contributors["objects"] for m in objects}
    road_tiles = sum(inside(road, t.region).any() for t in Task.objects.all())
    assert len(members) == 2 * (road_tiles + sum(inside(car, t.region).any()
                                                 for t in Task.objects.all()))  # fmt: skip


@pytest.mark.django_db
def test_a_gold_mask_on_a_tile_is_scored_on_what_the_tile_shows(manager) -> None:
    project = project_create(
        manager, kind="mask", labels=["road"], gold_rate=0.5, min_overlap=1, max_overlap=1,
        tile_size=TILE, tile_overlap=OVERLAP,
    )  # fmt: skip
    image = image_ready(project, width=W, height=H)
    road = band(20, 120, 560, 40)
    gold_set(project=project, image_id=image.pk, annotations=[{"label": "road", "rle": rle(road)}],
             user=manager)  # fmt: skip
    project = project_transition(project=project, action="start")
    worker = WorkerFactory.create()
    lease = routing.assignment_next(project=project, worker=worker, rand=lambda: 0.0)
    assert lease is not None
    region = lease.task.region
    painted = inside(road, region)
    items = [{"label": "road", "rle": rle(painted)}] if painted.any() else []
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=items)
    result = GoldResult.objects.get()
    # The part of the road the tile shows, painted exactly, is a perfect answer.
    assert result.score == 1.0
