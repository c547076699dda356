"""The next task right after an answer (``submit?next=1``): routing claims at once, without
first reading the worker's leases, and looks for the project's expired leases at most once
per ``RELEASE_LOOK_SECONDS`` per process. The rules hold all the same: one open lease per
worker and project, expired slots come back, breadth-first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crowd.models import User
from qa.models import WorkerScore, WorkerStatus
from qa.services import worker_suspend
from tasks import routing
from tasks.models import Assignment, AssignmentStatus, Project, Task
from tasks.services import tasks_mark_gold
from tests.factories import WorkerFactory, project_with_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BOX = [{"label": "car", "bbox": [10, 10, 50, 40]}]


def _next(project: Project, worker: User, *, after_answer: bool = False) -> Assignment:
    lease = routing.assignment_next(project=project, worker=worker, after_answer=after_answer)
    assert lease is not None
    return lease


def _answered(project: Project, worker: User) -> None:
    lease = _next(project, worker)
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=BOX)


def test_a_worker_holding_a_lease_gets_it_back_and_no_second(manager, worker) -> None:
    project = project_with_tasks(manager, tasks=6, overlap=1)
    _answered(project, worker)
    held = _next(project, worker)
    # A replayed answer asks again while the worker holds a lease: the claim's insert meets
    # the one-lease constraint, and the full path hands back the lease they hold.
    routing._release_looked[project.pk] = float("inf")  # the look is not due
    again = _next(project, worker, after_answer=True)
    assert again.pk == held.pk
    leased = Assignment.objects.filter(worker=worker, status=AssignmentStatus.LEASED)
    assert list(leased.values_list("pk", flat=True)) == [held.pk]


def test_a_workers_own_expired_lease_is_released_and_a_new_one_claimed(manager, worker) -> None:
    project = project_with_tasks(manager, tasks=6, overlap=1)
    _answered(project, worker)
    stale = _next(project, worker)
    Assignment.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(1))
    routing._release_looked[project.pk] = float("inf")
    fresh = _next(project, worker, after_answer=True)
    assert fresh.pk != stale.pk
    assert Assignment.objects.get(pk=stale.pk).status == AssignmentStatus.EXPIRED
    assert Task.objects.get(pk=stale.task_id).open_leases == 0


def test_expired_slots_come_back_once_the_look_is_due(manager) -> None:
    """Another worker's expired lease holds the slot of the task closest to done: while the
    look is not due the claim passes it by; once it is, the slot is released and that task,
    closest to done, comes first again."""
    project = project_with_tasks(manager, tasks=6, overlap=2)
    first, third, another = (WorkerFactory.create() for _ in range(3))
    _answered(project, first)  # the oldest task has an answer: closest to done
    closest = Assignment.objects.get(worker=first).task_id
    stale = _next(project, third)
    assert stale.task_id == closest
    _answered(project, another)  # its slot is held: another task
    Assignment.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(1))

    routing._release_looked[project.pk] = float("inf")  # the look is not due
    passed_by = _next(project, another, after_answer=True)
    assert passed_by.task_id != closest
    assert Assignment.objects.get(pk=stale.pk).status == AssignmentStatus.LEASED
    routing.assignment_submit(assignment_id=passed_by.pk, worker=another, annotations=BOX)

    routing._release_looked.clear()  # the look is due
    next_one = _next(project, another, after_answer=True)
    assert Assignment.objects.get(pk=stale.pk).status == AssignmentStatus.EXPIRED
    assert next_one.task_id == closest


def test_with_nothing_to_claim_the_full_look_runs(manager, worker) -> None:
    """The last free slot held by an expired lease: an empty claim looks, releases it, and
    claims it."""
    project = project_with_tasks(manager, tasks=2, overlap=1)
    _answered(project, worker)
    stale = _next(project, WorkerFactory.create())
    Assignment.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(1))
    routing._release_looked[project.pk] = float("inf")
    assert _next(project, worker, after_answer=True).task_id == stale.task_id


def _look_not_due(project: Project) -> None:
    routing._release_looked[project.pk] = float("inf")


def test_after_an_answer_the_claim_itself_checks_admission(manager, worker) -> None:
    """No read of the worker's standing before the claim: its statement checks it."""
    project = project_with_tasks(manager, tasks=4, overlap=1)
    _answered(project, worker)
    _look_not_due(project)
    with CaptureQueriesContext(connection) as queries:
        lease = _next(project, worker, after_answer=True)
    assert lease.worker_id == worker.pk
    reads = [q["sql"] for q in queries.captured_queries if "qa_workerscore" in q["sql"]]
    assert len(reads) == 1, reads
    assert "tasks_task" in reads[0]


def test_a_worker_suspended_since_their_answer_gets_no_task(manager, worker) -> None:
    project = project_with_tasks(manager, tasks=4, overlap=1)
    _answered(project, worker)
    worker_suspend(project=project, worker_id=worker.pk, by=manager, reason="Random boxes.")
    _look_not_due(project)
    with pytest.raises(routing.NotEligible, match="Random boxes"):
        routing.assignment_next(project=project, worker=worker, after_answer=True)
    assert not Assignment.objects.filter(worker=worker, status=AssignmentStatus.LEASED).exists()


def test_a_worker_taking_the_exam_gets_gold_only(manager, worker) -> None:
    """The claim's check refuses a regular task to a worker taking the exam; the policy,
    asked, hands them gold."""
    project = project_with_tasks(manager, tasks=4, overlap=1)
    _answered(project, worker)
    gold = Task.objects.filter(project=project, answers=0).order_by("-pk")[0]
    tasks_mark_gold(image=gold.image)
    project.exam_tasks = 3
    project.save()
    WorkerScore.objects.filter(project=project, worker=worker).update(
        status=WorkerStatus.EXAM, exam_seen=0
    )
    _look_not_due(project)
    lease = _next(project, worker, after_answer=True)
    assert lease.task_id == gold.pk
