from __future__ import annotations

from django.db.models import Count, Q

from tasks.models import Assignment, AssignmentStatus, Task


def assert_counters_match_recount(project) -> None:
    """Every non-gold task's denormalised counters equal a recount of its assignments, and
    none is over-assigned."""
    tasks = Task.objects.filter(project=project, is_gold=False).annotate(
        leased=Count("assignments", filter=Q(assignments__status=AssignmentStatus.LEASED)),
        answered=Count(
            "assignments",
            filter=Q(
                assignments__status__in=[
                    AssignmentStatus.SUBMITTED,
                    AssignmentStatus.APPROVED,
                    AssignmentStatus.REJECTED,
                ]
            ),
        ),
    )
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
