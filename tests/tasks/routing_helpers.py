from __future__ import annotations

from django.db.models import Count, Q

from tasks.models import Assignment, AssignmentStatus, Task


def assert_counters_match_recount(project) -> None:
    """Every non-gold task's denormalised counters equal a recount of its assignments (open
    leases, and answers that count: submitted or approved, never rejected), and none is
    over-assigned."""
    tasks = Task.objects.filter(project=project, is_gold=False).annotate(
        leased=Count("assignments", filter=Q(assignments__status=AssignmentStatus.LEASED)),
        answered=Count(
            "assignments",
            filter=Q(
                assignments__status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED],
                assignments__counted=True,
            ),
        ),
    )
    # A rejected answer never holds a slot.
    rejected = Assignment.objects.filter(project=project, status=AssignmentStatus.REJECTED)
    assert not rejected.filter(counted=True, task__is_gold=False).exists()
    for task in tasks:
        assert (task.open_leases, task.answers) == (task.leased, task.answered), task.pk
        assert task.open_leases + task.answers <= task.required_overlap, task.pk


def assert_no_worker_twice(project) -> None:
    pairs = Assignment.objects.filter(project=project).values("task", "worker")
    duplicates = pairs.annotate(n=Count("id")).filter(n__gt=1)
    assert not duplicates.exists()
    leases = (
        Assignment.objects.filter(project=project, status=AssignmentStatus.LEASED)
        .values("worker")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not leases.exists()
