"""Consensus runs of a project (job and API)."""

from __future__ import annotations

import pytest

from crowd.jobs import wait_for_jobs
from qa.models import ConsensusResult, ConsensusRun
from tasks import routing
from tasks.models import Task
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import classification_project, no_gold


def work(project, worker, items) -> None:
    lease = routing.assignment_next(project=project, worker=worker, rand=no_gold)
    assert lease is not None
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=items)


@pytest.mark.django_db(transaction=True)
@pytest.mark.both_databases
def test_a_consensus_run_stores_traceable_results(api_as, manager, client_user) -> None:
    project, truth = classification_project(
        manager, gold=1, images=3, min_overlap=3, max_overlap=3, agreement_threshold=0.5
    )
    workers = [WorkerFactory.create() for _ in range(3)]
    for _ in range(3):
        for i, w in enumerate(workers):
            # The third worker says "fish" to everything; the others tell the truth.
            lease = routing.assignment_next(project=project, worker=w, rand=no_gold)
            assert lease is not None
            label = "fish" if i == 2 else truth[lease.task.image_id]
            routing.assignment_submit(
                assignment_id=lease.pk, worker=w, annotations=[{"label": label}]
            )
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/consensus/")
    assert response.status_code == 202
    wait_for_jobs()
    run = ConsensusRun.objects.get(pk=response.json()["id"])
    assert run.status == "done", run.error
    latest = api_as(client_user).get(f"/api/v1/projects/{project.pk}/consensus/")
    assert latest.status_code == 404  # the client is not on this project
    results = api_as(manager).get(f"/api/v1/projects/{project.pk}/consensus/results/").json()
    assert results["count"] == 4  # three answered images and the gold one
    by_image = {r["image"]: r for r in results["results"]}
    for image_id, row in by_image.items():
        assert row["annotations"][0]["label"] == truth[image_id]
        if row["method"] == "gold":
            continue
        assert row["votes"] == 3
        assert row["annotations"][0]["num_votes"] == 3
        said = {c["worker"]: c["label"] for c in row["contributors"]["answers"]}
        assert said[workers[2].pk] == "fish"
    # Running it again replaces the results; nothing is duplicated.
    api_as(manager).post(f"/api/v1/projects/{project.pk}/consensus/")
    wait_for_jobs()
    assert ConsensusResult.objects.filter(project=project).count() == 4
    # Workers see none of it.
    assert api_as(workers[0]).get(f"/api/v1/projects/{project.pk}/consensus/").status_code == 403


@pytest.mark.django_db
def test_boxes_across_a_tile_seam_come_out_as_one(manager) -> None:
    from qa.merge import consensus_compute

    project = project_create(
        manager, kind="bbox", labels=["car"], gold_rate=0.0, min_overlap=2, max_overlap=2,
        tile_size=512, tile_overlap=64, agreement_threshold=0.1,
    )  # fmt: skip
    image_ready(project, width=960, height=400)
    project = project_transition(project=project, action="start")
    tiles = list(Task.objects.order_by("x"))
    assert [t.region for t in tiles] == [[0, 0, 512, 400], [448, 0, 512, 400]]
    # A car from x=400 to x=600 crosses the seam: each tile's workers mark the part they see.
    left = [{"label": "car", "bbox": [400, 100, 112, 50]}]
    right = [{"label": "car", "bbox": [448, 100, 152, 50]}]
    workers = [WorkerFactory.create() for _ in range(4)]
    for w in workers[:2]:
        work(project, w, left)
    for w in workers[2:]:
        work(project, w, right)
    assert set(Task.objects.values_list("state", flat=True)) == {"done"}
    run = ConsensusRun.objects.create(project=project)
    consensus_compute(run_id=run.pk)
    result = ConsensusResult.objects.get()
    assert len(result.annotations) == 1, result.annotations
    assert result.annotations[0]["bbox"] == pytest.approx([400, 100, 200, 50], abs=1)
    members = result.contributors["objects"][0]
    assert len(members) == 4  # every worker's piece is traceable


@pytest.mark.django_db
def test_a_spammer_is_outweighed_then_suspended_out_of_the_merge(manager) -> None:
    """Three workers box every image; the third marks a box nowhere near any object. While
    they count, their box finds no quorum; once suspended, their answers leave the merge and
    the contributors, and the vote count drops to the two who remain."""
    from qa.merge import consensus_compute
    from qa.services import worker_suspend

    project = project_create(
        manager, kind="bbox", labels=["car", "person"], gold_rate=0.0, min_overlap=3,
        max_overlap=3, agreement_threshold=0.1,
    )  # fmt: skip
    for seed in range(2):
        image_ready(project, width=400, height=300, seed=seed)
    project = project_transition(project=project, action="start")
    car = [{"label": "car", "bbox": [50, 60, 100, 80]}]
    workers = [WorkerFactory.create() for _ in range(3)]
    for _ in range(2):
        for i, w in enumerate(workers):
            if i < 2:
                work(project, w, car)
            else:
                work(project, w, [{"label": "person", "bbox": [300, 200, 40, 40]}])

    def merged() -> list[ConsensusResult]:
        consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
        return list(ConsensusResult.objects.filter(project=project))

    for result in merged():
        assert [a["label"] for a in result.annotations] == ["car"]
        assert result.annotations[0]["num_votes"] == 2
        assert result.votes == 3
        assert str(workers[2].pk) in result.contributors["weights"]
    worker_suspend(project=project, worker_id=workers[2].pk, by=manager, reason="spam")
    for result in merged():
        assert [a["label"] for a in result.annotations] == ["car"]
        assert result.annotations[0]["bbox"] == [50, 60, 100, 80]
        assert result.votes == 2
        assert str(workers[2].pk) not in result.contributors["weights"]
