"""A rejected answer stops counting (shared/API.md, "Review and money"): the task it had
completed asks for another answer, the counters stay true, and the next worker gets it."""

from __future__ import annotations

import pytest

from payouts import services as reviews
from tasks import routing
from tasks.models import Assignment, AssignmentStatus, Task, TaskState
from tests.factories import WorkerFactory, project_with_tasks
from tests.tasks.routing_helpers import assert_counters_match_recount, assert_no_worker_twice

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]


def answer(project, worker) -> Assignment:
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=BOX)
    return Assignment.objects.get(pk=lease.pk)


def test_rejecting_an_answer_reopens_its_task_for_the_next_worker(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=3, overlap=1)
    first = WorkerFactory.create()
    answers = [answer(project, first) for _ in range(3)]
    manager_api = api_as(manager)
    assert manager_api.get(f"/api/v1/projects/{project.pk}/progress/").json()["done"] == 3

    rejected = answers[1]
    response = manager_api.post(
        f"/api/v1/assignments/{rejected.pk}/reject/", {"reason": "Boxes drawn at random."}
    )
    assert response.status_code == 200, response.content

    progress = manager_api.get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert (progress["done"], progress["open"]) == (2, 1)
    task = Task.objects.get(pk=rejected.task_id)
    assert (task.state, task.answers, task.confidence, task.done_at) == (
        TaskState.OPEN, 0, None, None
    )  # fmt: skip
    assert_counters_match_recount(project)

    # The rejected worker never gets it again; the next worker gets exactly that task.
    assert routing.assignment_next(project=project, worker=first) is None
    second = WorkerFactory.create()
    replacement = answer(project, second)
    assert replacement.task_id == rejected.task_id
    assert Task.objects.get(pk=rejected.task_id).state == TaskState.DONE
    assert manager_api.get(f"/api/v1/projects/{project.pk}/progress/").json()["done"] == 3
    assert_counters_match_recount(project)
    assert_no_worker_twice(project)


def test_rejecting_twice_or_after_approval_withdraws_the_answer_once(manager) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    worker = WorkerFactory.create()
    done = answer(project, worker)
    reviews.assignment_approve(assignment_id=done.pk, by=manager)
    reviews.assignment_reject(assignment_id=done.pk, by=manager, reason="Wrong object.")
    reviews.assignment_reject(assignment_id=done.pk, by=manager, reason="Wrong object.")
    task = Task.objects.get(pk=done.task_id)
    assert (task.state, task.answers) == (TaskState.OPEN, 0)
    assert_counters_match_recount(project)


def test_a_rejected_answer_approved_again_counts_while_its_task_has_room(manager) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    worker = WorkerFactory.create()
    done = answer(project, worker)
    reviews.assignment_reject(assignment_id=done.pk, by=manager, reason="Missed a car.")
    assert Task.objects.get().state == TaskState.OPEN
    # The manager changes their mind before anyone else answered: it counts again.
    reviews.assignment_approve(assignment_id=done.pk, by=manager)
    task = Task.objects.get()
    assert (task.state, task.answers) == (TaskState.DONE, 1)
    assert_counters_match_recount(project)


def test_a_rejected_answer_approved_after_its_replacement_is_paid_but_not_counted(
    manager,
) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    first, second = WorkerFactory.create(), WorkerFactory.create()
    done = answer(project, first)
    reviews.assignment_reject(assignment_id=done.pk, by=manager, reason="Missed a car.")
    answer(project, second)
    reviews.assignment_approve(assignment_id=done.pk, by=manager)
    done.refresh_from_db()
    assert (done.status, done.counted) == (AssignmentStatus.APPROVED, False)
    task = Task.objects.get()
    assert (task.state, task.answers) == (TaskState.DONE, 1)
    assert_counters_match_recount(project)


def test_rejecting_one_of_three_agreeing_answers_asks_for_one_more(manager) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=3)
    workers = [WorkerFactory.create() for _ in range(4)]
    given = [answer(project, w) for w in workers[:3]]
    assert Task.objects.get().state == TaskState.DONE
    reviews.assignment_reject(assignment_id=given[0].pk, by=manager, reason="Copied.")
    task = Task.objects.get()
    assert (task.state, task.answers, task.required_overlap) == (TaskState.OPEN, 2, 3)
    answer(project, workers[3])
    assert Task.objects.get().state == TaskState.DONE
    assert_counters_match_recount(project)
