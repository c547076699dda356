"""The next task right after an answer (``submit?next=1``): routing claims at once, without
first reading the worker's leases, and looks for the project's expired leases at most once
per ``RELEASE_LOOK_SECONDS`` per process. The rules hold all the same: one open lease per
worker and project, expired slots come back, breadth-first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from crowd.models import User
from tasks import routing
from tasks.models import Assignment, AssignmentStatus, Project, Task
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
