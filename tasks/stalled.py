"""Tasks no worker left can answer, and what becomes of them.

A task is *stalled* when it is open, needs answers, nobody holds a lease on it, and every
worker who may still work on the project (active worker accounts the routing policy does not
bar from it) has answered or skipped it: routing will never hand it out again unless a worker
joins. The sweep marks such tasks (``Task.stalled_at``) and clears the mark when a worker
who has not seen the task appears; ``/progress/`` counts them and the manager's list says why.

The project decides what becomes of them (``Project.stalled_action``): ``close`` (the default)
closes a task stalled for ``stalled_grace_minutes`` with low confidence on the answers it has,
so the project can finish and the export marks the label as uncertain; ``wait`` keeps it
open for workers who join later. A manager may also act at once: close the stalled tasks, or
offer them again to the workers who skipped them or let their lease run out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from crowd.models import Role, User
from tasks import events
from tasks.hooks import Decision, routing_policy
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Project,
    ProjectState,
    StalledAction,
    Task,
    TaskState,
)

NO_WORKERS_LEFT = "no_workers_left"


@dataclass(frozen=True)
class Pool:
    """The workers who may still answer the project's tasks."""

    barred: frozenset[int]
    size: int


def worker_pool(project: Project) -> Pool:
    barred = frozenset(routing_policy().barred_workers(project_id=project.pk))
    workers = User.objects.filter(is_active=True, role=Role.WORKER)
    size = workers.count() - workers.filter(pk__in=barred).count() if barred else workers.count()
    return Pool(barred=barred, size=size)


def _seen_by_pool(pool: Pool) -> Subquery:
    seen = Assignment.objects.filter(
        task=OuterRef("pk"), worker__is_active=True, worker__role=Role.WORKER
    )
    if pool.barred:
        seen = seen.exclude(worker_id__in=pool.barred)
    return Subquery(
        seen.order_by().values("task").annotate(n=Count("pk")).values("n"),
        output_field=IntegerField(),
    )


def stalled_now(project: Project, pool: Pool | None = None) -> QuerySet[Task]:
    """The project's tasks no worker left can answer, computed now."""
    pool = pool or worker_pool(project)
    if pool.size == 0:
        return Task.objects.none()  # nobody has joined yet: waiting, not stalled
    return (
        Task.objects.filter(
            project=project,
            state=TaskState.OPEN,
            is_gold=False,
            open_leases=0,
            answers__lt=F("required_overlap"),
        )
        .annotate(seen=Coalesce(_seen_by_pool(pool), Value(0)))
        .filter(seen__gte=pool.size)
    )


def stalled_mark(project: Project, *, now: datetime | None = None) -> int:
    """Set ``stalled_at`` on the project's newly stalled tasks and clear it on open tasks that
    are no longer stalled. Returns how many are stalled."""
    now = now or timezone.now()
    stalled = set(stalled_now(project).values_list("pk", flat=True))
    marked = Task.objects.filter(project=project, state=TaskState.OPEN, stalled_at__isnull=False)
    with transaction.atomic():
        cleared = marked.exclude(pk__in=stalled).update(stalled_at=None)
        added = (
            Task.objects.filter(pk__in=stalled, stalled_at__isnull=True).update(stalled_at=now)
            if stalled
            else 0
        )
    if cleared or added:
        events.project_changed(project.pk)
    return len(stalled)


def task_close(*, task_id: int, project: Project) -> bool:
    """Close an open task on the answers it has: done, with the confidence they give, and low
    confidence unless they agree at the project's threshold. Returns whether it closed."""
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(pk=task_id, project=project).first()
        if task is None or task.is_gold or task.state != TaskState.OPEN or task.open_leases:
            return False
        answers = list(
            Assignment.objects.filter(
                task=task,
                counted=True,
                status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED],
            ).select_related("worker")
        )
        task.project = project
        decision = (
            routing_policy().decide(task=task, answers=answers)
            if answers
            else Decision(complete=False)
        )
        task.state, task.done_at = TaskState.DONE, timezone.now()
        task.confidence, task.low_confidence = decision.confidence, not decision.complete
        task.stalled_at = task.stalled_at or task.done_at
        task.save(update_fields=["state", "done_at", "confidence", "low_confidence", "stalled_at"])
    events.project_changed(project.pk)
    return True


def stalled_close(project: Project, task_ids: Sequence[int] | None = None) -> int:
    """Close the project's stalled tasks (of ``task_ids``, when given) now."""
    stalled = stalled_now(project)
    if task_ids is not None:
        stalled = stalled.filter(pk__in=list(task_ids))
    return sum(
        task_close(task_id=pk, project=project) for pk in stalled.values_list("pk", flat=True)
    )


def stalled_reoffer(project: Project, task_ids: Sequence[int] | None = None) -> int:
    """Offer the project's stalled tasks again to the workers who skipped them or let their
    lease run out: those leases (which hold no slot and no answer) are forgotten, so the
    workers may be routed the task once more. Returns how many tasks can be handed out."""
    stalled = stalled_now(project)
    if task_ids is not None:
        stalled = stalled.filter(pk__in=list(task_ids))
    ids = list(stalled.values_list("pk", flat=True))
    with transaction.atomic():
        Assignment.objects.filter(
            task_id__in=ids, status__in=[AssignmentStatus.SKIPPED, AssignmentStatus.EXPIRED]
        ).delete()
        Task.objects.filter(pk__in=ids).update(stalled_at=None)
    reoffered = len(ids) - stalled_now(project).filter(pk__in=ids).count()
    if ids:
        events.project_changed(project.pk)
    return reoffered


def stalled_sweep(*, now: datetime | None = None) -> int:
    """Mark stalled tasks in every active project and close those of projects that close
    them, once stalled for the project's grace period. Part of the periodic sweep."""
    now = now or timezone.now()
    closed = 0
    for project in Project.objects.filter(state=ProjectState.ACTIVE):
        if not stalled_mark(project, now=now) or project.stalled_action != StalledAction.CLOSE:
            continue
        due = Task.objects.filter(
            project=project,
            state=TaskState.OPEN,
            stalled_at__lte=now - timedelta(minutes=project.stalled_grace_minutes),
        )
        closed += sum(
            task_close(task_id=pk, project=project) for pk in due.values_list("pk", flat=True)
        )
    return closed


def stalled_report(project: Project, *, limit: int = 500) -> dict[str, object]:
    """The stalled tasks with the reason for each, for the manager (marks them on the way)."""
    stalled_mark(project)
    pool = worker_pool(project)
    rows = (
        stalled_now(project, pool)
        .select_related("image")
        .annotate(
            skipped=Count(
                "assignments",
                filter=Q(
                    assignments__status__in=[AssignmentStatus.SKIPPED, AssignmentStatus.EXPIRED]
                ),
            ),
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
        .order_by("stalled_at", "pk")
    )
    total = rows.count()
    tasks = []
    for task in rows[:limit]:
        not_counting = task.answered - task.answers
        tasks.append(
            {
                "task": task.pk,
                "image": task.image_id,
                "image_name": task.image.name,
                "region": task.region,
                "answers": task.answers,
                "required_overlap": task.required_overlap,
                "not_counting": not_counting,
                "skipped": task.skipped,
                "stalled_since": task.stalled_at.isoformat() if task.stalled_at else None,
                "reason": NO_WORKERS_LEFT,
                "message": (
                    f"All {pool.size} workers who may work on this project have seen this task "
                    f"({task.answers} answers count of {task.required_overlap} needed, "
                    f"{not_counting} rejected or from suspended workers, {task.skipped} "
                    f"skipped or let expire); nobody is left to answer it."
                ),
            }
        )
    return {
        "count": total,
        "workers": pool.size,
        "action": project.stalled_action,
        "grace_minutes": project.stalled_grace_minutes,
        "tasks": tasks,
    }
