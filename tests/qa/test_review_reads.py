"""The reads the pages are built on: the review queue with each answer's reference (gold or
consensus so far), throughput per minute, and what a worker sees of a project."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from qa.models import GoldAnswer, WorkerScore, WorkerStatus
from tasks import routing
from tasks.models import Assignment, Project, Task
from tests.factories import ManagerFactory, WorkerFactory, project_with_tasks

CAR = {"label": "car", "bbox": [10, 10, 100, 50]}


def answer(project: Project, worker, annotations, seconds: float = 4.0) -> Assignment:
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    Assignment.objects.filter(pk=lease.pk).update(
        leased_at=timezone.now() - timedelta(seconds=seconds)
    )
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=annotations)
    lease.refresh_from_db()
    return lease


@pytest.mark.django_db
@pytest.mark.both_databases
def test_the_review_queue_lists_submitted_answers_oldest_first(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=3, overlap=3)
    workers = [WorkerFactory.create() for _ in range(3)]
    first = answer(project, workers[0], [CAR])
    second = answer(project, workers[1], [])
    api = api_as(manager)

    body = api.get(f"/api/v1/projects/{project.pk}/reviews/").json()
    assert body["count"] == 2
    assert [r["id"] for r in body["results"]] == [first.pk, second.pk]
    row = body["results"][0]
    assert row["annotations"] == [CAR]
    assert row["worker"] == workers[0].username
    assert row["image_url"] == f"/api/v1/images/{row['image']}/file/"
    assert row["region"] == [0, 0, 640, 480]
    assert row["is_gold"] is False

    assert (
        api.post(f"/api/v1/assignments/{first.pk}/approve/", {}, format="json").status_code == 200
    )
    assert [
        r["id"] for r in api.get(f"/api/v1/projects/{project.pk}/reviews/").json()["results"]
    ] == [second.pk]
    approved = api.get(f"/api/v1/projects/{project.pk}/reviews/?status=approved").json()
    assert [r["id"] for r in approved["results"]] == [first.pk]
    mine = api.get(f"/api/v1/projects/{project.pk}/reviews/?status=all&worker={workers[1].pk}")
    assert [r["id"] for r in mine.json()["results"]] == [second.pk]
    bad = api.get(f"/api/v1/projects/{project.pk}/reviews/?status=paid&worker=x")
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"status", "worker"}

    # Another manager, a worker: the queue is not theirs.
    assert (
        api_as(ManagerFactory()).get(f"/api/v1/projects/{project.pk}/reviews/").status_code == 404
    )
    assert api_as(workers[0]).get(f"/api/v1/projects/{project.pk}/reviews/").status_code == 403


@pytest.mark.django_db
def test_the_reference_is_the_consensus_so_far_without_suspended_workers(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=3)
    task = Task.objects.get(project=project)
    good = [WorkerFactory() for _ in range(2)]
    spammer = WorkerFactory()
    for worker in good:
        answer(project, worker, [CAR])
    answer(project, spammer, [{"label": "tree", "bbox": [300, 300, 40, 40]}])
    url = f"/api/v1/projects/{project.pk}/tasks/{task.pk}/reference/"
    api = api_as(manager)

    with_spammer = api.get(url).json()
    assert with_spammer["source"] == "consensus"
    assert with_spammer["answers"] == 3
    labels = sorted(a["label"] for a in with_spammer["annotations"])
    assert labels == ["car"]  # one of three is below the quorum
    assert with_spammer["annotations"][0]["bbox"] == pytest.approx([10, 10, 100, 50])

    WorkerScore.objects.update_or_create(
        project=project, worker=spammer, defaults={"status": WorkerStatus.SUSPENDED}
    )
    assert api.get(url).json()["answers"] == 2

    other_manager = ManagerFactory.create()
    other = project_with_tasks(other_manager, tasks=1, overlap=1)
    other_task = Task.objects.get(project=other)
    assert (
        api.get(f"/api/v1/projects/{project.pk}/tasks/{other_task.pk}/reference/").status_code
        == 404
    )
    assert api_as(good[0]).get(url).status_code == 403


@pytest.mark.django_db
def test_the_reference_of_a_gold_task_is_the_gold_answer(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    task = Task.objects.get(project=project)
    Task.objects.filter(pk=task.pk).update(is_gold=True)
    GoldAnswer.objects.create(project=project, image=task.image, annotations=[CAR])
    body = api_as(manager).get(f"/api/v1/projects/{project.pk}/tasks/{task.pk}/reference/").json()
    assert body == {
        "task": task.pk, "source": "gold", "annotations": [CAR], "confidence": None, "answers": None,
    }  # fmt: skip


@pytest.mark.django_db
@pytest.mark.both_databases
def test_throughput_counts_answers_and_completed_tasks_per_minute(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=4, overlap=1)
    for _ in range(3):
        answer(project, WorkerFactory(), [])
    old = Assignment.objects.filter(project=project).first()
    assert old is not None
    Assignment.objects.filter(pk=old.pk).update(submitted_at=timezone.now() - timedelta(minutes=5))
    api = api_as(manager)

    body = api.get(f"/api/v1/projects/{project.pk}/throughput/?minutes=10").json()
    assert body["bucket_seconds"] == 60
    points = body["points"]
    assert len(points) == 10
    assert points == sorted(points, key=lambda p: p["t"])
    assert sum(p["submitted"] for p in points) == 3
    assert points[-1]["submitted"] == 2
    assert points[-6]["submitted"] == 1
    assert sum(p["done"] for p in points) == 3  # overlap 1: each answer completes its task
    assert api.get(f"/api/v1/projects/{project.pk}/throughput/").status_code == 200
    for bad in ("0", "x", "100000", "-3"):
        response = api.get(f"/api/v1/projects/{project.pk}/throughput/?minutes={bad}")
        assert response.status_code == 400, bad


@pytest.mark.django_db
def test_workers_see_availability_and_the_time_a_task_takes(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=4, overlap=2)
    worker = WorkerFactory()
    api = api_as(worker)
    [listed] = api.get("/api/v1/projects/").json()["results"]
    assert listed["available"] == 8
    assert listed["estimated_seconds"] is None
    assert "owner" not in listed

    answer(project, WorkerFactory(), [], seconds=6)
    [listed] = api.get("/api/v1/projects/").json()["results"]
    assert listed["available"] == 7
    assert listed["estimated_seconds"] == pytest.approx(6, abs=0.5)

    detail = api.get(f"/api/v1/projects/{project.pk}/").json()
    assert detail["available"] == 7
