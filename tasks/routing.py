"""The routing engine: which task a worker gets next, leases, submissions and skips.

Invariants (tests/tasks/test_routing.py and tests/concurrency/ check each one):

- a worker never gets a task twice (unique ``(task, worker)``), never holds more than one open
  lease per project (partial unique index), and gets a task only of an active project they
  are not blocked from;
- for every non-gold task, open leases + accepted answers <= required overlap, under any
  concurrency (a check constraint, and every counter change is a conditional update or
  happens under the task's row lock);
- counters change only in the transaction that changes the assignment rows they count.

Locking: on PostgreSQL a claim is one short transaction that picks the first claimable task
with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each other's
rows. SQLite has no row locks; its ``IMMEDIATE`` transactions serialise writers, and the
conditional ``UPDATE ... WHERE open_leases < required_overlap - answers`` that must change
exactly one row is the guard on both engines.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from crowd.errors import Conflict, Forbidden, NotFound
from crowd.models import User
from tasks import events
from tasks.hooks import routing_policy
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Image,
    Project,
    ProjectState,
    Task,
    TaskState,
)
from tasks.schema import annotations_clean

# New workers see more gold: the rate starts at min(3 x base, 50%) and falls linearly to the
# project's base rate over their first GOLD_WARMUP_TASKS tasks in the project.
GOLD_WARMUP_TASKS = 20
GOLD_WARMUP_MAX_RATE = 0.5
RELEASE_BATCH = 100
CLAIM_ATTEMPTS = 8
ANSWERED = (AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)


class LeaseExpired(Conflict):
    code = "lease_expired"
    default_detail = (
        "Your time on this task ran out and it no longer needs an answer; ask for the next task."
    )


class NotEligible(Forbidden):
    code = "not_eligible"


def gold_rate_for(*, project: Project, worker: User) -> float:
    base = project.gold_rate
    if base <= 0:
        return 0.0
    seen = Assignment.objects.filter(project=project, worker=worker).count()
    start = max(base, min(GOLD_WARMUP_MAX_RATE, 3 * base))
    return base + (start - base) * max(0.0, 1 - seen / GOLD_WARMUP_TASKS)


def _release(rows: list[tuple[int, int, int, bool]]) -> int:
    """Expire these leases and return their slots. Each lease is released by one conditional
    update, so concurrent releasers never give a slot back twice."""
    released = 0
    for pk, task_id, project_id, counted in rows:
        with transaction.atomic():
            won = Assignment.objects.filter(pk=pk, status=AssignmentStatus.LEASED).update(
                status=AssignmentStatus.EXPIRED
            )
            if won and counted:
                Task.objects.filter(pk=task_id).update(open_leases=F("open_leases") - 1)
            if won:
                released += 1
                events.lease_released(task_id=task_id, project_id=project_id)
    return released


def leases_release_expired(*, project_id: int | None = None, limit: int = RELEASE_BATCH) -> int:
    """Expire leases past their time (of one project, or all) and return their slots."""
    expired = Assignment.objects.filter(
        status=AssignmentStatus.LEASED, expires_at__lte=timezone.now()
    )
    if project_id is not None:
        expired = expired.filter(project_id=project_id)
    return _release(list(expired.values_list("pk", "task_id", "project_id", "counted")[:limit]))


def _own_lease_releasing_expired(project: Project, worker: User) -> Assignment | None:
    """The worker's open lease in the project, if any; on the way, release the project's
    expired leases (so no cron is needed for correctness). One query when nothing expired."""
    now = timezone.now()
    leases = list(
        Assignment.objects.select_related("task__image")
        .filter(project=project, status=AssignmentStatus.LEASED)
        .filter(Q(worker=worker) | Q(expires_at__lte=now))[: RELEASE_BATCH + 1]
    )
    expired = [a for a in leases if a.expires_at <= now]
    if expired:
        _release([(a.pk, a.task_id, a.project_id, a.counted) for a in expired])
    return next((a for a in leases if a.worker_id == worker.pk and a.expires_at > now), None)


def _open_lease(project: Project, worker: User) -> Assignment | None:
    return (
        Assignment.objects.select_related("task__image")
        .filter(worker=worker, project=project, status=AssignmentStatus.LEASED)
        .first()
    )


def _lease(task: Task, project: Project, worker: User, *, counted: bool) -> Assignment:
    now = timezone.now()
    assignment = Assignment.objects.create(
        task=task, project=project, worker=worker, status=AssignmentStatus.LEASED,
        leased_at=now, expires_at=now + timedelta(seconds=project.assignment_seconds),
        counted=counted,
    )  # fmt: skip
    events.lease_granted(assignment)
    return assignment


def _claimable(project: Project, worker: User) -> QuerySet[Task]:
    answered = Assignment.objects.filter(task=OuterRef("pk"), worker=worker)
    return (
        Task.objects.filter(
            project=project,
            state=TaskState.OPEN,
            is_gold=False,
            open_leases__lt=F("required_overlap") - F("answers"),
        )
        .exclude(Exists(answered))
        .order_by(F("required_overlap") - F("answers"), "-priority", "id")
    )


_TASK, _ASSIGNMENT, _IMAGE = (m._meta.db_table for m in (Task, Assignment, Image))
_CLAIM_SQL = f"""
WITH candidate AS (
    SELECT t.id FROM {_TASK} t
    WHERE t.project_id = %(project)s AND t.state = 'open' AND NOT t.is_gold
      AND t.open_leases < t.required_overlap - t.answers
      AND NOT EXISTS (
          SELECT 1 FROM {_ASSIGNMENT} a WHERE a.task_id = t.id AND a.worker_id = %(worker)s
      )
    ORDER BY t.required_overlap - t.answers, t.priority DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE {_TASK} AS u SET open_leases = u.open_leases + 1
FROM candidate, {_IMAGE} i
WHERE u.id = candidate.id AND i.id = u.image_id
RETURNING u.id, u.image_id, u.x, u.y, u.width, u.height, u.priority, i.width, i.height
"""


def _claim_regular_skip_locked(project: Project, worker: User) -> Assignment | None:
    """PostgreSQL: pick, lock and take the slot in one statement; concurrent claimers skip
    each other's locked rows instead of waiting."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, {"project": project.pk, "worker": worker.pk})
            row = cursor.fetchone()
        if row is None:
            return None
        task_id, image_id, x, y, width, height, priority, image_width, image_height = row
        task = Task(
            pk=task_id, project=project, x=x, y=y, width=width, height=height,
            priority=priority, image=Image(pk=image_id, width=image_width, height=image_height),
        )  # fmt: skip
        return _lease(task, project, worker, counted=True)


def _claim_regular(project: Project, worker: User) -> Assignment | None:
    if connection.features.has_select_for_update_skip_locked:
        return _claim_regular_skip_locked(project, worker)
    # SQLite: IMMEDIATE transactions serialise writers; the conditional update, which must
    # change exactly one row, is the guard.
    for _ in range(CLAIM_ATTEMPTS):
        with transaction.atomic():
            task = _claimable(project, worker).select_related("image").first()
            if task is None:
                return None
            taken = Task.objects.filter(
                pk=task.pk,
                state=TaskState.OPEN,
                open_leases__lt=F("required_overlap") - F("answers"),
            ).update(open_leases=F("open_leases") + 1)
            if taken == 1:
                return _lease(task, project, worker, counted=True)
    return None


def _claim_gold(project: Project, worker: User) -> Assignment | None:
    # Not a second gold task from an image the worker has already seen (its tiles overlap).
    seen_image = Assignment.objects.filter(
        project=project, worker=worker, task__image=OuterRef("image")
    )
    task = (
        Task.objects.filter(project=project, is_gold=True)
        .exclude(Exists(seen_image))
        .select_related("image")
        .order_by("?")
        .first()
    )
    if task is None:
        return None
    with transaction.atomic():
        # Gold has no overlap limit: the unique constraints are the only guard it needs.
        return _lease(task, project, worker, counted=False)


_last_sweep_kick = 0.0


def _keep_sweeping() -> None:
    """Make sure the periodic lease sweep is scheduled; at most one check per process per
    sweep interval, and one schedule per interval across processes (cache.add is atomic)."""
    global _last_sweep_kick
    interval = settings.LEASE_SWEEP_SECONDS
    now = time.monotonic()
    if not interval or now - _last_sweep_kick < interval:
        return
    _last_sweep_kick = now
    from tasks.jobs import leases_sweep_schedule

    leases_sweep_schedule()


def assignment_next(
    *, project: Project, worker: User, rand: Callable[[], float] | None = None
) -> Assignment | None:
    """The worker's task: their open lease if they hold one, else gold at the worker's gold
    rate, else the claimable task closest to done. None when nothing is available."""
    if project.state != ProjectState.ACTIVE:
        return None
    reason = routing_policy().blocked(project=project, worker=worker)
    if reason:
        raise NotEligible(reason)
    _keep_sweeping()
    own = _own_lease_releasing_expired(project, worker)
    if own is not None:
        return own
    try:
        draw = (rand or random.random)()
        want_gold = project.gold_rate > 0 and draw < gold_rate_for(project=project, worker=worker)
        if want_gold and (gold := _claim_gold(project, worker)) is not None:
            return gold
        return _claim_regular(project, worker)
    except IntegrityError:
        # A concurrent request of the same worker (a double click) took a lease first.
        return _open_lease(project, worker)


def _decide(task: Task, project: Project) -> None:
    """The task has its required answers: complete it, or ask for one more (dynamic overlap).
    Caller holds the task's row lock."""
    answers = list(
        Assignment.objects.filter(
            task=task, status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED]
        ).select_related("worker")
    )
    task.project = project  # the policy reads it; no second query
    decision = routing_policy().decide(task=task, answers=answers)
    if decision.complete or task.required_overlap >= project.max_overlap:
        task.state = TaskState.DONE
        task.done_at = timezone.now()
        task.confidence = decision.confidence
        task.low_confidence = not decision.complete
    else:
        task.required_overlap += 1


_ANSWER_SQL = f"""
UPDATE {_TASK} SET answers = answers + 1, open_leases = open_leases - %(released)s
WHERE id = %(task)s AND state = 'open'
  AND (%(holds_lease)s OR open_leases - %(released)s + answers < required_overlap)
RETURNING answers, required_overlap
"""


def _count_answer(assignment: Assignment, *, holds_lease: bool) -> tuple[int, int] | None:
    """Add the answer to its task's counters, giving back its lease slot if it still held
    one. A late answer counts only while the task needs it. One conditional statement, which
    is also where the task's row lock is first taken: it is held only to the commit.
    Returns (answers, required_overlap) after the update, or None if the task is not taken.
    """
    released = 1 if assignment.status == AssignmentStatus.LEASED else 0
    with connection.cursor() as cursor:
        cursor.execute(
            _ANSWER_SQL,
            {"released": released, "task": assignment.task_id, "holds_lease": holds_lease},
        )
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else None


def assignment_submit(
    *,
    assignment_id: int,
    worker: User,
    annotations: Any,
    idempotency_key: str = "",
    time_spent_ms: int | None = None,
) -> Assignment:
    """Record the worker's answer. Idempotent: a repeat returns the first result unchanged.

    A late answer (the lease expired) is accepted only while the task still needs one.
    """
    with transaction.atomic():
        # Lock the assignment (PostgreSQL; SQLite's IMMEDIATE transaction already excludes
        # other writers), so a double submit serialises here; bring what validation needs.
        assignment = (
            Assignment.objects.select_for_update(of=("self",))
            .select_related("task__image", "project")
            .filter(pk=assignment_id, worker=worker)
            .first()
        )
        if assignment is None:
            raise NotFound("No such assignment.")
        if assignment.status in ANSWERED:
            return assignment  # a repeat (or a concurrent double submit that already won)
        if assignment.status == AssignmentStatus.SKIPPED:
            raise Conflict("You skipped this task.", code="skipped")
        project, task = assignment.project, assignment.task
        clean = annotations_clean(project=project, image=task.image, payload=annotations)
        now = timezone.now()
        holds_lease = assignment.status == AssignmentStatus.LEASED and assignment.expires_at > now
        counts = None
        if assignment.counted:
            counts = _count_answer(assignment, holds_lease=holds_lease)
            if counts is None:
                raise LeaseExpired()
        elif not holds_lease and task.state != TaskState.OPEN:
            raise LeaseExpired()
        assignment.status = AssignmentStatus.SUBMITTED
        assignment.answer = clean
        assignment.submitted_at = now
        assignment.idempotency_key = idempotency_key[:100]
        elapsed_ms = int((now - assignment.leased_at).total_seconds() * 1000)
        assignment.time_spent_ms = min(time_spent_ms, elapsed_ms) if time_spent_ms else elapsed_ms
        assignment.save(
            update_fields=["status", "answer", "submitted_at", "idempotency_key", "time_spent_ms"]
        )
        if counts is None:
            routing_policy().gold_answered(assignment=assignment)
        elif counts[0] >= counts[1]:
            # The UPDATE above holds the task's row lock: decide, and record the decision.
            task.answers, task.required_overlap = counts
            _decide(task, project)
            task.save(
                update_fields=["required_overlap", "state", "done_at", "confidence",
                               "low_confidence"]
            )  # fmt: skip
        events.answer_submitted(assignment, task)
    return assignment


def assignment_skip(*, assignment_id: int, worker: User) -> Assignment:
    """Give the task back; it is not offered to this worker again. Idempotent."""
    with transaction.atomic():
        assignment = (
            Assignment.objects.select_for_update().filter(pk=assignment_id, worker=worker).first()
        )
        if assignment is None:
            raise NotFound("No such assignment.")
        if assignment.status in (AssignmentStatus.SKIPPED, AssignmentStatus.EXPIRED):
            if assignment.status == AssignmentStatus.EXPIRED:
                assignment.status = AssignmentStatus.SKIPPED  # keep it out of their way
                assignment.save(update_fields=["status"])
            return assignment
        if assignment.status != AssignmentStatus.LEASED:
            raise Conflict("This task was already answered.", code="already_submitted")
        assignment.status = AssignmentStatus.SKIPPED
        assignment.save(update_fields=["status"])
        if assignment.counted:
            Task.objects.filter(pk=assignment.task_id).update(open_leases=F("open_leases") - 1)
        events.lease_released(task_id=assignment.task_id, project_id=assignment.project_id)
    return assignment


def assignment_for_worker(*, assignment_id: int, worker: User) -> Assignment:
    assignment = Assignment.objects.filter(pk=assignment_id, worker=worker).first()
    if assignment is None:
        raise NotFound("No such assignment.")
    return assignment
