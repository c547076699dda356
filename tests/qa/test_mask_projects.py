"""A mask project through scoring and merging: gold, dynamic overlap, agreement, a run."""

from __future__ import annotations

import numpy as np
import pytest

from qa.merge import consensus_compute
from qa.models import ConsensusResult, ConsensusRun, GoldResult, WorkerModelFit
from qa.selectors import project_agreement
from qa.services import gold_set
from tasks import routing
from tasks.models import Task
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import no_gold
from tests.qa.mask_crowd import rle

W, H = 64, 48

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


def blob(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def work(project, worker, items, rand=no_gold):
    lease = routing.assignment_next(project=project, worker=worker, rand=rand)
    assert lease is not None
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=items)
    return lease


@pytest.mark.parametrize("mode", ["instance", "semantic"])
def test_agreeing_masks_complete_a_task_and_merge_into_its_result(manager, mode) -> None:
    project = project_create(
        manager, kind="mask", mask_mode=mode, labels=["road", "car"], gold_rate=0.0,
        min_overlap=3, max_overlap=5, agreement_threshold=0.7,
    )  # fmt: skip
    image_ready(project, width=W, height=H)
    project = project_transition(project=project, action="start")
    road, car = blob(0, 30, 64, 18), blob(10, 5, 20, 12)
    workers = [WorkerFactory.create() for _ in range(4)]
    for w, dx in zip(workers[:2], (0, 1), strict=True):
        work(project, w, [{"label": "road", "rle": rle(road)},
                          {"label": "car", "rle": rle(np.roll(car, dx, axis=1))}])  # fmt: skip
    # The third marks nothing: two answers of three agree (confidence 2/3), not enough.
    work(project, workers[2], [])
    task = Task.objects.get()
    assert task.state != "done"
    work(
        project,
        workers[3],
        [{"label": "road", "rle": rle(road)}, {"label": "car", "rle": rle(car)}],
    )
    task.refresh_from_db()
    assert task.state == "done"
    assert task.confidence == pytest.approx(0.75)

    agreement = project_agreement(project)
    assert agreement["kind"] == "mask"
    assert agreement["mean_pairwise_iou"] > 0.8

    consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    (result,) = ConsensusResult.objects.filter(project=project)
    merged = {item["label"]: item for item in result.annotations}
    assert set(merged) == {"road", "car"}
    from qa.geometry import mask_iou

    assert mask_iou([merged["road"]["rle"]], [rle(road)])[0, 0] == 1.0
    assert mask_iou([merged["car"]["rle"]], [rle(car)])[0, 0] > 0.9
    assert 0 < merged["car"]["score"] <= 1
    fit = WorkerModelFit.objects.get(project=project)
    assert fit.method == ("mask_em" if mode == "instance" else "mask_semantic_em")
    if mode == "instance":
        # A task decided between runs clusters at the tolerance the fit measured.
        from qa import worker_model

        stored = worker_model.stored_model(project, [w.pk for w in workers])
        assert fit.crowd["edge_tolerance"] > 0
        assert stored.edge_tolerance == pytest.approx(fit.crowd["edge_tolerance"])


def test_a_gold_mask_answer_is_scored_by_iou(manager) -> None:
    project = project_create(
        manager, kind="mask", labels=["road"], gold_rate=0.5, min_overlap=1, max_overlap=1
    )
    image = image_ready(project, width=W, height=H)
    gold_set(
        project=project,
        image_id=image.pk,
        annotations=[{"label": "road", "rle": rle(blob(0, 0, 20, 20))}],
        user=manager,
    )
    project = project_transition(project=project, action="start")
    worker = WorkerFactory.create()
    # 20 x 20 gold, the answer 20 x 16 inside it: IoU 0.8, Dice 8/9.
    work(project, worker, [{"label": "road", "rle": rle(blob(0, 0, 20, 16))}], rand=lambda: 0.0)
    result = GoldResult.objects.get()
    assert result.score == 1.0
    assert result.details["mean_iou"] == 0.8
    assert result.details["mean_dice"] == round(2 * 0.8 / 1.8, 4)
