"""The routing engine: which task a worker gets next, leases, submissions and skips.

Invariants (tests/tasks/test_routing.py and tests/concurrency/ check each one):

- a worker never gets a task twice (unique ``(task, worker)``), never holds more than one open
  lease per project (partial unique index), and gets a task only of an active project the
  routing policy admits them to (gold only while they take its exam);
- for every non-gold task, open leases + accepted answers <= required overlap, under any
  concurrency (a check constraint, and every counter change is a conditional update);
- counters change only in the transaction (or statement) that changes the assignment rows
  they count.

Locking: on PostgreSQL a claim is one statement (pick with ``FOR UPDATE SKIP LOCKED``, take
the slot, insert the lease) and so is a counted answer (the assignment and its task's
counters together, or neither): no row lock outlives a statement, and concurrent workers skip
each other's rows instead of waiting behind a process the scheduler has paused. SQLite has no
row locks; its ``IMMEDIATE`` transactions serialise writers, and a conditional
``UPDATE ... WHERE open_leases < required_overlap - answers`` that must change exactly one
row is the guard.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from crowd.errors import Conflict, Forbidden, InvalidInput, NotFound
from crowd.models import User
from crowd.prepared import Joined, Prepared
from tasks import events, prelabels
from tasks.hooks import Admission, budget_exhausted, routing_policy
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Image,
    Project,
    ProjectState,
    Task,
    TaskOrder,
    TaskState,
)
from tasks.schema import annotations_clean

# New workers see more gold: the rate starts at min(3 x base, 50%) and falls linearly to the
# project's base rate over their first GOLD_WARMUP_TASKS tasks in the project.
GOLD_WARMUP_TASKS = 20
GOLD_WARMUP_MAX_RATE = 0.5
log = logging.getLogger(__name__)
RELEASE_BATCH = 100
CLAIM_ATTEMPTS = 8
DECISION_BATCH = 500
# A lost decision job (its process died) leaves its mark this long; the sweep decides its
# tasks meanwhile, and the next completed task after the mark lapses asks for a new job.
DECISION_MARK_SECONDS = 60
# A job that died deciding frees its project for the next one after this long (the job's
# own time limit); one that finds another at work asks again after this many milliseconds.
DECISION_RUN_SECONDS = 600
DECISION_LOCK = 0x7461736B  # the advisory lock space of decision jobs (with a project id)
DECISION_RETRY_MS = 200


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
    start = _warmup_start(base)
    return base + (start - base) * max(0.0, 1 - seen / GOLD_WARMUP_TASKS)


def _warmup_start(base: float) -> float:
    """A new worker's gold rate at a base rate of ``base``."""
    return max(base, min(GOLD_WARMUP_MAX_RATE, 3 * base))


def _admission(project: Project, worker: User) -> Admission:
    """The routing policy's admission of the worker; NotEligible with its reason."""
    admission = routing_policy().admission(project=project, worker=worker)
    if admission.reason:
        raise NotEligible(admission.reason)
    return admission


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
                events.lease_released(project_id=project_id)
    return released


def leases_release_expired(*, project_id: int | None = None, limit: int = RELEASE_BATCH) -> int:
    """Expire leases past their time (of one project, or all) and return their slots."""
    expired = Assignment.objects.filter(
        status=AssignmentStatus.LEASED, expires_at__lte=timezone.now()
    )
    if project_id is not None:
        expired = expired.filter(project_id=project_id)
    return _release(list(expired.values_list("pk", "task_id", "project_id", "counted")[:limit]))


def leases_warn_expiring(*, now: datetime | None = None, limit: int = RELEASE_BATCH) -> int:
    """Tell workers whose lease ends within ``LEASE_WARNING_SECONDS`` (at most half the
    lease), once per lease. Run by the periodic sweep: a warning comes between the lead time
    and the lead time less the sweep interval before expiry."""
    now = now or timezone.now()
    soon = Assignment.objects.filter(
        status=AssignmentStatus.LEASED,
        expiry_warned=False,
        expires_at__gt=now,
        expires_at__lte=now + timedelta(seconds=settings.LEASE_WARNING_SECONDS),
    ).order_by("expires_at")[:limit]
    due = []
    for assignment in soon:
        lease = (assignment.expires_at - assignment.leased_at).total_seconds()
        lead = min(settings.LEASE_WARNING_SECONDS, lease / 2)
        if (assignment.expires_at - now).total_seconds() <= lead:
            due.append(assignment)
    if not due:
        return 0
    warned = []
    with transaction.atomic():
        for assignment in due:
            # Once, even if two sweeps race: only the one that flips the flag tells.
            if Assignment.objects.filter(pk=assignment.pk, expiry_warned=False).update(
                expiry_warned=True
            ):
                warned.append(assignment)
                events.lease_expiring(assignment)
    return len(warned)


def leases_release_for_worker(*, project_id: int, worker_id: int) -> int:
    """Give back the worker's open leases in the project (they were suspended)."""
    leases = Assignment.objects.filter(
        project_id=project_id, worker_id=worker_id, status=AssignmentStatus.LEASED
    )
    return _release(list(leases.values_list("pk", "task_id", "project_id", "counted")))


_OPEN_LEASES = Prepared(
    lambda project, worker, now: Assignment.objects.filter(
        project_id=project, status=AssignmentStatus.LEASED
    ).filter(Q(worker_id=worker) | Q(expires_at__lte=now))[: RELEASE_BATCH + 1],
    int,
    int,
    datetime,
)
_TASK_WITH_IMAGE = Joined(
    f"SELECT {{columns}} FROM {Task._meta.db_table} t "
    f"JOIN {Image._meta.db_table} i ON i.id = t.image_id WHERE t.id = %s",
    (Task, "t"),
    (Image, "i"),
)


def _own_lease_releasing_expired(project: Project, worker: User) -> Assignment | None:
    """The worker's open lease in the project, if any; on the way, release the project's
    expired leases (so no cron is needed for correctness). One query when nothing expired
    and the worker holds no lease (the common case: they have just submitted)."""
    now = timezone.now()
    leases = _OPEN_LEASES.all(project.pk, worker.pk, now)
    expired = [a for a in leases if a.expires_at <= now]
    if expired:
        _release([(a.pk, a.task_id, a.project_id, a.counted) for a in expired])
    own = next((a for a in leases if a.worker_id == worker.pk and a.expires_at > now), None)
    if own is not None:
        found = _TASK_WITH_IMAGE.first([own.task_id])
        if found is None:  # the task was deleted meanwhile (with its project's images)
            return None
        own.task = cast(Task, found[0])
        own.task.image = cast(Image, found[1])
    return own


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


_TASK, _ASSIGNMENT, _IMAGE = (m._meta.db_table for m in (Task, Assignment, Image))
# The routing order of each ``task_order``, as the partial indexes ``task_routing_order`` and
# ``task_uncertain_order`` have it: closest to done, then priority, then the oldest, or the
# least sure model confidence (none, as 2, after any) before the oldest.
UNSURE = "COALESCE(t.model_confidence, 2.0)"
_ORDER: dict[str, str] = {
    TaskOrder.DEFAULT: "t.required_overlap - t.answers, t.priority DESC, t.id",
    TaskOrder.UNCERTAIN_FIRST: f"t.required_overlap - t.answers, t.priority DESC, {UNSURE}, t.id",
}
# The tasks a worker may claim. A free slot implies answers still needed, and saying so
# bounds the routing index's scan: it starts past the tasks with none needed, which sort
# first (closest to done) and are many when their decisions wait for a job, rather than
# reading each and its row only to drop it.
_CLAIMABLE_TEMPLATE = f"""t.project_id = %(project)s AND t.state = 'open' AND NOT t.is_gold
      AND t.required_overlap - t.answers > 0
      AND t.open_leases < t.required_overlap - t.answers
      AND NOT EXISTS (
          SELECT 1 FROM {_ASSIGNMENT} a WHERE a.task_id = t.id AND {{answered_by}}
      )"""
_CLAIMABLE = _CLAIMABLE_TEMPLATE.format(answered_by="a.worker_id = %(worker)s")
# PostgreSQL: the worker's own answered tasks that still need others' answers sort first
# (closest to done), and the scan reads past each. Each is left out by a probe of that
# task's few assignments (the index on task), whatever the statistics say of the worker:
# `OFFSET 0` keeps the test a per-row subplan (not an anti-join the planner may build as a
# scan of all the worker's assignments, compared with every task read), and `+ 0` keeps
# the worker's index out of the subplan (statistics taken before the worker answered much
# put them at one assignment, and each probe then read all of theirs). With 1,100 such
# tasks and such statistics the pick took 52 ms, and takes 1.4 ms this way; 0.02 ms with
# none (`tests/tasks/test_claim_plan.py`).
_CLAIMABLE_PG = _CLAIMABLE_TEMPLATE.format(answered_by="a.worker_id + 0 = %(worker)s OFFSET 0")


def _admitted(condition: str | None) -> str:
    """``_CLAIMABLE``'s addition for a claim that checks the routing policy's admission
    itself (:meth:`~tasks.hooks.RoutingPolicy.admitted_sql`), or none."""
    return f"\n      AND {condition}" if condition else ""


# Pick, lock, take the slot and insert the lease in one statement: the task's row lock lives
# only while the statement runs, never across a round trip to this process. One statement
# text per task order, built once.
_CLAIM_TEMPLATE = f"""
WITH candidate AS (
    SELECT t.id FROM {_TASK} t
    WHERE {_CLAIMABLE_PG}{{admitted}}
    ORDER BY {{order}}
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
), taken AS (
    UPDATE {_TASK} AS u SET open_leases = u.open_leases + 1
    FROM candidate WHERE u.id = candidate.id
    RETURNING u.id, u.image_id, u.x, u.y, u.width, u.height, u.priority
), leased AS (
    INSERT INTO {_ASSIGNMENT}
        (task_id, project_id, worker_id, status, leased_at, expires_at, idempotency_key, counted)
    SELECT taken.id, %(project)s, %(worker)s, 'leased', %(now)s, %(expires)s, '', true
    FROM taken
    RETURNING id, task_id
)
SELECT leased.id, taken.id, taken.image_id, taken.x, taken.y, taken.width, taken.height,
       taken.priority, i.width, i.height
FROM leased JOIN taken ON taken.id = leased.task_id JOIN {_IMAGE} i ON i.id = taken.image_id
"""


@functools.cache
def _claim_sql(order: str, admitted: str | None) -> str:
    return _CLAIM_TEMPLATE.format(order=_ORDER[order], admitted=_admitted(admitted))


def _claim_regular_skip_locked(
    project: Project, worker: User, admitted: str | None
) -> Assignment | None:
    """PostgreSQL: concurrent claimers skip each other's locked rows instead of waiting."""
    now = timezone.now()
    expires = now + timedelta(seconds=project.assignment_seconds)
    params: dict[str, Any] = {
        "project": project.pk, "worker": worker.pk, "now": now, "expires": expires
    }  # fmt: skip
    # Alone, the statement is its own transaction. Inside a caller's transaction it gets a
    # savepoint, so a unique violation (a double click) does not abort the caller's work.
    guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(_claim_sql(_order_of(project), admitted), params)
        row = cursor.fetchone()
    if row is None:
        return None
    assignment_id, task_id, image_id, x, y, width, height, priority, image_w, image_h = row
    task = Task(
        pk=task_id, project=project, x=x, y=y, width=width, height=height, priority=priority,
        image=Image(pk=image_id, project=project, width=image_w, height=image_h),
    )  # fmt: skip
    assignment = Assignment(
        pk=assignment_id, task=task, project=project, worker=worker,
        status=AssignmentStatus.LEASED, leased_at=now, expires_at=expires, counted=True,
    )  # fmt: skip
    events.lease_granted(assignment)
    return assignment


# SQLite: the pick (the routing order, as the partial index ``task_routing_order`` has it),
# the slot and the lease as three statements of one IMMEDIATE transaction.
@functools.cache
def _pick(order: str, admitted: str | None) -> Joined:
    return Joined(
        f"SELECT {{columns}} FROM {_TASK} t JOIN {_IMAGE} i ON i.id = t.image_id "
        f"WHERE {_CLAIMABLE}{_admitted(admitted)} ORDER BY {_ORDER[order]} LIMIT 1",
        (Task, "t"),
        (Image, "i"),
    )


# The model confidence of the task the worker would be offered next (``uncertain_first``):
# the one a gold task offered instead is chosen nearest to.
_FRONTIER_SQL = {
    vendor: f"SELECT {UNSURE} FROM {_TASK} t WHERE {claimable} "
    f"ORDER BY {_ORDER[TaskOrder.UNCERTAIN_FIRST]} LIMIT 1"
    for vendor, claimable in (("postgresql", _CLAIMABLE_PG), ("sqlite", _CLAIMABLE))
}


def _order_of(project: Project) -> str:
    return (
        TaskOrder.UNCERTAIN_FIRST
        if project.task_order == TaskOrder.UNCERTAIN_FIRST
        else TaskOrder.DEFAULT
    )


_TAKE_SLOT_SQL = f"""
UPDATE {_TASK} SET open_leases = open_leases + 1
WHERE id = %(task)s AND state = 'open' AND open_leases < required_overlap - answers
"""
_LEASE_SQL = f"""
INSERT INTO {_ASSIGNMENT}
    (task_id, project_id, worker_id, status, leased_at, expires_at, idempotency_key, counted)
VALUES (%(task)s, %(project)s, %(worker)s, 'leased', %(now)s, %(expires)s, '', %(counted)s)
RETURNING id
"""


def _claim_regular(
    project: Project, worker: User, admitted: str | None = None
) -> Assignment | None:
    """The claimable task closest to done; ``admitted``: the routing policy's condition for
    admission, checked by the claim itself (the policy was not asked)."""
    if connection.features.has_select_for_update_skip_locked:
        return _claim_regular_skip_locked(project, worker, admitted)
    # SQLite: IMMEDIATE transactions serialise writers; the conditional update, which must
    # change exactly one row, is the guard.
    for _ in range(CLAIM_ATTEMPTS):
        with transaction.atomic():
            pick = _pick(_order_of(project), admitted)
            found = pick.first({"project": project.pk, "worker": worker.pk})
            if found is None:
                return None
            task, image = cast(Task, found[0]), cast(Image, found[1])
            with connection.cursor() as cursor:
                cursor.execute(_TAKE_SLOT_SQL, {"task": task.pk})
                if cursor.rowcount == 1:
                    task.image, task.project = image, project
                    task.open_leases += 1
                    return _lease_raw(cursor, task, project, worker)
    return None


def _lease_raw(cursor: Any, task: Task, project: Project, worker: User) -> Assignment:
    """``_lease`` for a counted lease, as one prepared statement."""
    now = timezone.now()
    expires = now + timedelta(seconds=project.assignment_seconds)
    adapt = connection.ops.adapt_datetimefield_value
    cursor.execute(
        _LEASE_SQL,
        {"task": task.pk, "project": project.pk, "worker": worker.pk, "now": adapt(now),
         "expires": adapt(expires), "counted": True},
    )  # fmt: skip
    assignment = Assignment(
        pk=cursor.fetchone()[0], task=task, project=project, worker=worker,
        status=AssignmentStatus.LEASED, leased_at=now, expires_at=expires, counted=True,
    )  # fmt: skip
    events.lease_granted(assignment)
    return assignment


def _frontier(project: Project, worker: User) -> float | None:
    """The model confidence (2 for none) of the task the worker would be offered next, or
    None when there is none for them."""
    with connection.cursor() as cursor:
        sql = _FRONTIER_SQL[connection.vendor]
        cursor.execute(sql, {"project": project.pk, "worker": worker.pk})
        row = cursor.fetchone()
    return None if row is None else float(row[0])


def _claim_gold(
    project: Project, worker: User, rand: Callable[[], float] | None
) -> Assignment | None:
    """A gold task the worker has not met, drawn with ``rand`` (``random.random`` if None)
    among their candidates, so that a seeded caller meets the same gold every run."""
    # Not a second gold task from an image the worker has already seen (its tiles overlap).
    seen_image = Assignment.objects.filter(
        project=project, worker=worker, task__image=OuterRef("image")
    )
    candidates = Task.objects.filter(project=project, is_gold=True).exclude(Exists(seen_image))
    frontier = None
    if project.task_order == TaskOrder.UNCERTAIN_FIRST:
        frontier = _frontier(project, worker)
    if frontier is None:
        pool = list(candidates.order_by("pk").values_list("pk", flat=True))
    else:
        # Real tasks come least sure first; a gold task drawn at random would stand out by
        # its model's confidence (its pre-labels' scores show it), so it is the unseen one
        # nearest to the confidence of the real task offered next, ties at random.
        gap = Abs(Coalesce(F("model_confidence"), Value(2.0)) - Value(frontier))
        ranked = list(candidates.annotate(gap=gap).order_by("gap", "pk").values_list("pk", "gap"))
        pool = [pk for pk, g in ranked if g == ranked[0][1]]
    if not pool:
        return None
    chosen = pool[min(int((rand or random.random)() * len(pool)), len(pool) - 1)]
    task = Task.objects.select_related("image").get(pk=chosen)
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


# Asked for the next task right after an answer, a worker holds no lease in the project (one
# at most, and they answered it): routing claims at once, and looks for the project's expired
# leases (to release them) at most this often per process. A lease of theirs after all (a
# concurrent request's) makes the claim's insert fail on the one-lease constraint, and the
# full path runs.
RELEASE_LOOK_SECONDS = 1.0
_release_looked: dict[int, float] = {}


def _release_look_due(project_id: int) -> bool:
    now = time.monotonic()
    if now - _release_looked.get(project_id, float("-inf")) < RELEASE_LOOK_SECONDS:
        return False
    _release_looked[project_id] = now
    return True


def assignment_next(
    *,
    project: Project,
    worker: User,
    rand: Callable[[], float] | None = None,
    after_answer: bool = False,
) -> Assignment | None:
    """The worker's task: their open lease if they hold one, else gold at the worker's gold
    rate, else the claimable task closest to done. None when nothing is available.
    ``after_answer``: the worker has just answered their lease in this project."""
    if project.state != ProjectState.ACTIVE:
        return None
    looked = not after_answer or _release_look_due(project.pk)
    # Right after an answer, with no look due, the claim checks the worker's admission in
    # its own statement where the policy can say it in SQL; when that claim finds nothing,
    # the full path below asks the policy.
    admitted = None if looked else routing_policy().admitted_sql()
    admission = None if admitted is not None else _admission(project, worker)
    _keep_sweeping()
    if looked:
        own = _own_lease_releasing_expired(project, worker)
        if own is not None:
            return own
    try:
        lease = _claim_within_budget(project, worker, admission, rand, admitted)
    except IntegrityError:
        # The worker holds a lease: a concurrent request of theirs (a double click) took it
        # first, or (after an answer) one this claim did not look for, perhaps expired.
        if looked:
            return _open_lease(project, worker)
        return assignment_next(project=project, worker=worker, rand=rand)
    if lease is None and not looked:
        # Nothing to claim: the worker may hold a lease after all (a replayed answer),
        # expired leases may hold the last free slots, or the policy may not admit them.
        # The full look decides.
        return assignment_next(project=project, worker=worker, rand=rand)
    return lease


def _claim_within_budget(
    project: Project,
    worker: User,
    admission: Admission | None,
    rand: Callable[[], float] | None,
    admitted: str | None,
) -> Assignment | None:
    if project.budget is None:
        return _claim(project, worker, admission, rand, admitted)
    # The budget check and the claim are one step under the project's row lock (which
    # bonuses take too): checked apart, concurrent claims each passed a check that only
    # some of them fitted, and the project spent past its budget by a reward each.
    with transaction.atomic():
        project.lock()
        if budget_exhausted(project):
            return None
        return _claim(project, worker, admission, rand, admitted)


def _claim(
    project: Project,
    worker: User,
    admission: Admission | None,
    rand: Callable[[], float] | None,
    admitted: str | None,
) -> Assignment | None:
    """``admission`` None: the policy was not asked, and ``admitted`` is its condition, which
    the regular claim checks; a gold task asks the policy first."""
    if admission is not None and admission.gold_only:
        return _claim_gold(project, worker, rand)
    draw = (rand or random.random)()
    if _wants_gold(project, worker, draw):
        if admission is None:
            admission = _admission(project, worker)
        if (gold := _claim_gold(project, worker, rand)) is not None:
            return gold
        if admission.gold_only:
            return None
    return _claim_regular(project, worker, admitted if admission is None else None)


def _wants_gold(project: Project, worker: User, draw: float) -> bool:
    """Whether ``draw`` falls within the worker's gold rate. The rate lies between the
    project's base rate and the warm-up's start, so the worker's count is read only for a
    draw between the two."""
    base = project.gold_rate
    if base <= 0 or draw >= _warmup_start(base):
        return False
    return draw < base or draw < gold_rate_for(project=project, worker=worker)


def _decide(task: Task, project: Project) -> None:
    """The task has its required answers: complete it, or ask for one more (dynamic overlap).
    Caller holds the task's row lock and saves the task."""
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


_DECISION_FIELDS = ["required_overlap", "state", "done_at", "confidence", "low_confidence"]


def task_decide_if_due(
    *, task_id: int, project: Project, image: Image | None = None
) -> Task | None:
    """Decide a task whose answers have reached its required overlap, in a short transaction
    of its own. Safe to call twice and at any time: it acts only on a task still due.
    ``image``: the task's image, when the caller has read it already."""
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(pk=task_id).first()
        if task is None or task.is_gold or task.state != TaskState.OPEN:
            return task
        if task.answers < task.required_overlap:
            return task
        if image is not None and image.pk == task.image_id:
            task.image = image  # the policy reads its size; no second query
        _decide(task, project)
        task.save(update_fields=_DECISION_FIELDS)
        events.project_changed(project.pk)
        return task


# PostgreSQL: record a counted answer in one statement. The assignment and its task are
# locked and updated together, or neither is: the answer counts only if the assignment is
# still open (not a concurrent double submit) and the task still needs it (its lease is
# live, or a slot is free). No lock outlives the statement.
_SUBMIT_SQL = f"""
WITH a AS (
    SELECT id, task_id, status = 'leased' AS leased,
           status = 'leased' AND expires_at > %(now)s AS live
    FROM {_ASSIGNMENT}
    WHERE id = %(assignment)s AND worker_id = %(worker)s AND status IN ('leased', 'expired')
    FOR UPDATE
), t AS (
    UPDATE {_TASK} AS u
    SET answers = u.answers + 1, open_leases = u.open_leases - a.leased::int
    FROM a
    WHERE u.id = a.task_id AND u.state = 'open'
      AND (a.live OR u.open_leases - a.leased::int + u.answers < u.required_overlap)
    RETURNING u.answers, u.required_overlap
), s AS (
    UPDATE {_ASSIGNMENT} AS x
    SET status = 'submitted', answer = %(answer)s, submitted_at = %(now)s,
        idempotency_key = %(key)s, time_spent_ms = %(spent)s, prelabels = %(prelabels)s
    FROM t
    WHERE x.id = %(assignment)s
    RETURNING x.id
)
SELECT t.answers, t.required_overlap FROM t, s
"""


def _record_in_one_statement(
    assignment: Assignment, values: dict[str, Any]
) -> tuple[int, int] | None:
    with connection.cursor() as cursor:
        cursor.execute(
            _SUBMIT_SQL,
            {**values, "assignment": assignment.pk, "worker": assignment.worker_id,
             "answer": json.dumps(values["answer"]), "prelabels": _json_or_null(values)},
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        current = Assignment.objects.filter(pk=assignment.pk).values_list("status", flat=True)
        if current and current[0] in AssignmentStatus.answered():
            raise _AlreadyAnswered()
        raise LeaseExpired()
    return int(row[0]), int(row[1])


def _record_live_answer(assignment: Assignment, values: dict[str, Any]) -> bool:
    """Record the answer of a counted assignment whose lease is live; False (nothing
    written) when it is not that any more."""
    now = connection.ops.adapt_datetimefield_value(values["now"])
    with connection.cursor() as cursor:
        cursor.execute(
            _LIVE_ANSWER_SQL,
            {"assignment": assignment.pk, "now": now, "answer": json.dumps(values["answer"]),
             "key": values["key"], "spent": values["spent"],
             "prelabels": _json_or_null(values)},
        )  # fmt: skip
        return bool(cursor.rowcount == 1)


def _json_or_null(values: dict[str, Any]) -> str | None:
    """The pre-label record as the raw statements store a JSON column: SQL NULL when none."""
    return None if values["prelabels"] is None else json.dumps(values["prelabels"])


_LIVE_ANSWER_SQL = f"""
UPDATE {_ASSIGNMENT}
SET status = 'submitted', answer = %(answer)s, submitted_at = %(now)s,
    idempotency_key = %(key)s, time_spent_ms = %(spent)s, prelabels = %(prelabels)s
WHERE id = %(assignment)s AND status = 'leased' AND expires_at > %(now)s AND counted
"""


def _record_in_transaction(
    assignment: Assignment, values: dict[str, Any]
) -> tuple[int, int] | None:
    """Every engine, and gold answers: lock the assignment, then count the answer last, so
    the task's row lock is held only until the commit. SQLite's IMMEDIATE transaction
    excludes other writers throughout.

    The common case, a counted answer within its lease, is one conditional update of the
    assignment instead of a read and an update: it changes the row only while it is still
    that (leased, live, counted), which is what the read would have found."""
    with transaction.atomic():
        if assignment.counted and _record_live_answer(assignment, values):
            counts = _count_answer(assignment.task_id, released=True, holds_lease=True)
            if counts is None:
                raise LeaseExpired()  # rolls back the assignment's update too
            return counts
        locked = Assignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.status in AssignmentStatus.answered():
            raise _AlreadyAnswered()
        if locked.status not in (AssignmentStatus.LEASED, AssignmentStatus.EXPIRED):
            raise Conflict("You skipped this task.", code="skipped")
        live = locked.status == AssignmentStatus.LEASED and locked.expires_at > values["now"]
        if not locked.counted and not live and assignment.task.state != TaskState.OPEN:
            raise LeaseExpired()
        was_leased = locked.status == AssignmentStatus.LEASED
        Assignment.objects.filter(pk=locked.pk).update(
            status=AssignmentStatus.SUBMITTED, answer=values["answer"],
            submitted_at=values["now"], idempotency_key=values["key"],
            time_spent_ms=values["spent"], prelabels=values["prelabels"],
        )  # fmt: skip
        if not locked.counted:
            assignment.status = AssignmentStatus.SUBMITTED
            assignment.answer = values["answer"]
            assignment.time_spent_ms = values["spent"]
            assignment.prelabels = values["prelabels"]
            routing_policy().gold_answered(assignment=assignment)
            return None
        counts = _count_answer(locked.task_id, released=was_leased, holds_lease=live)
        if counts is None:
            raise LeaseExpired()  # rolls back the assignment's update too
        return counts


class AnswerConflict(Conflict):
    code = "already_submitted"


def _replayed(stored: Assignment, annotations: Any, idempotency_key: str) -> Assignment:
    """The stored answer, if this submission repeats it (same key, or the same answer once
    validated); otherwise a conflict naming the answer that was kept."""
    if idempotency_key and stored.idempotency_key == idempotency_key[:100]:
        return stored
    clean = annotations_clean(
        project=stored.project,
        image=stored.task.image,
        payload=annotations,
        region=stored.task.region,
    )
    if clean == stored.answer:
        stored.clipped = clean.clipped
        return stored
    submitted = stored.submitted_at.isoformat() if stored.submitted_at else None
    raise AnswerConflict(
        "This task was already answered with a different answer, which is the one kept; "
        "ask for the next task.",
        errors={"assignment": stored.pk, "status": stored.status, "submitted_at": submitted},
    )


class _AlreadyAnswered(Exception):
    """A concurrent submission of the same assignment won; return its result."""


_ANSWER_SQL = f"""
UPDATE {_TASK} SET answers = answers + 1, open_leases = open_leases - %(released)s
WHERE id = %(task)s AND state = 'open'
  AND (%(holds_lease)s OR open_leases - %(released)s + answers < required_overlap)
RETURNING answers, required_overlap
"""


def _count_answer(task_id: int, *, released: bool, holds_lease: bool) -> tuple[int, int] | None:
    """Add an answer to its task's counters, giving back its lease slot if it held one. A
    late answer counts only while the task needs it. Returns (answers, required_overlap),
    or None if the task does not take it."""
    with connection.cursor() as cursor:
        cursor.execute(
            _ANSWER_SQL,
            {"released": int(released), "task": task_id, "holds_lease": holds_lease},
        )
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else None


_ASSIGNMENT_TO_SUBMIT = Joined(
    f"SELECT {{columns}} FROM {_ASSIGNMENT} a JOIN {_TASK} t ON t.id = a.task_id "
    f"JOIN {_IMAGE} i ON i.id = t.image_id JOIN {Project._meta.db_table} p "
    "ON p.id = a.project_id WHERE a.id = %(assignment)s AND a.worker_id = %(worker)s",
    (Assignment, "a"),
    (Task, "t"),
    (Image, "i"),
    (Project, "p"),
)


def assignment_submit(
    *,
    assignment_id: int,
    worker: User,
    annotations: Any,
    idempotency_key: str = "",
    time_spent_ms: int | None = None,
    prelabel_version: str | None = None,
) -> Assignment:
    """Record the worker's answer. Idempotent: a repeat (the same ``Idempotency-Key``, or the
    same answer) returns the first result unchanged; a different answer to an assignment
    already answered is a conflict that says the first answer is kept.

    A late answer (the lease expired) is accepted only while the task still needs one.
    When the answers reach the task's required overlap, the routing policy decides it.
    """
    found = _ASSIGNMENT_TO_SUBMIT.first({"assignment": assignment_id, "worker": worker.pk})
    if found is None:
        raise NotFound("No such assignment.")
    assignment, task = cast(Assignment, found[0]), cast(Task, found[1])
    task.image = cast(Image, found[2])
    assignment.task, assignment.project = task, cast(Project, found[3])
    if assignment.status in AssignmentStatus.answered():
        return _replayed(assignment, annotations, idempotency_key)
    if assignment.status == AssignmentStatus.SKIPPED:
        raise Conflict("You skipped this task.", code="skipped")
    project, task = assignment.project, assignment.task
    clean = annotations_clean(
        project=project, image=task.image, payload=annotations, region=task.region
    )
    record = prelabels.answer_record(
        project=project, task=task, payload=annotations, clean=clean, version=prelabel_version
    )
    now = timezone.now()
    elapsed_ms = max(0, int((now - assignment.leased_at).total_seconds() * 1000))
    values: dict[str, Any] = {
        "answer": clean,
        "now": now,
        "key": idempotency_key[:100],
        "spent": min(time_spent_ms, elapsed_ms) if time_spent_ms else elapsed_ms,
        "prelabels": record,
    }
    try:
        if assignment.counted and connection.vendor == "postgresql":
            counts = _record_in_one_statement(assignment, values)
        else:
            counts = _record_in_transaction(assignment, values)
    except _AlreadyAnswered:
        stored = Assignment.objects.select_related("task__image", "project").get(pk=assignment.pk)
        return _replayed(stored, annotations, idempotency_key)
    if counts is not None and counts[0] >= counts[1]:
        # Nobody else can lease this task now (it has no free slot), so its decision can
        # wait: a job decides the project's due tasks together, off the request path, and
        # the sweep decides any task a crash left due.
        if settings.TASK_DECISIONS == "inline":
            task_decide_if_due(task_id=task.pk, project=project, image=task.image)
        else:
            decisions_request(project.pk)
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.answer = clean
    assignment.clipped = clean.clipped
    assignment.submitted_at = now
    assignment.idempotency_key = values["key"]
    assignment.time_spent_ms = values["spent"]
    assignment.prelabels = record
    events.answer_submitted(assignment, task)
    return assignment


def tasks_decide_due(*, project_id: int | None = None, limit: int = 1000) -> int:
    """Decide tasks whose answers reached their overlap (of one project, or all): the
    decision job's work, and the periodic sweep's for tasks a crash left due. Each project's
    tasks are decided together (:func:`_decide_batch`); returns how many were looked at."""
    with connection.cursor() as cursor:
        if project_id is None:
            cursor.execute(_DUE_SQL.format(project=""), [limit])
        else:
            cursor.execute(_DUE_SQL.format(project="AND project_id = %s"), [project_id, limit])
        found = cursor.fetchall()
    by_project: dict[int, list[int]] = {}
    for task_id, project in found:
        by_project.setdefault(project, []).append(task_id)
    if project_id is not None and by_project:
        one = _PROJECT.first(project_id)
        projects = {} if one is None else {project_id: one}
    else:
        projects = Project.objects.in_bulk(list(by_project))
    for project, task_ids in by_project.items():
        if project in projects:  # not deleted meanwhile
            _decide_batch(projects[project], task_ids)
    return len(found)


# A decision batch's reads, compiled once: under light load a batch holds a task or two,
# and compiling its queries each time cost more than deciding them.
_DUE_SQL = (
    f"SELECT id, project_id FROM {_TASK} WHERE state = 'open' AND NOT is_gold "
    "AND answers >= required_overlap {project} ORDER BY id LIMIT %s"
)
_PROJECT = Prepared(lambda project: Project.objects.filter(pk=project), int)
_DUE_TASKS = Joined(
    f"SELECT {{columns}} FROM {_TASK} t JOIN {_IMAGE} i ON i.id = t.image_id "
    "WHERE t.id IN ({ids}) AND t.state = 'open' AND NOT t.is_gold "
    "AND t.answers >= t.required_overlap ORDER BY t.id",
    (Task, "t"),
    (Image, "i"),
)
_COUNTED_ANSWERS = Joined(
    f"SELECT {{columns}} FROM {_ASSIGNMENT} a WHERE a.task_id IN ({{ids}}) "
    f"AND a.status IN ('{AssignmentStatus.SUBMITTED.value}', '{AssignmentStatus.APPROVED.value}') "
    "ORDER BY a.id",
    (Assignment, "a"),
)


_APPLY_DECISION_SQL = f"""
UPDATE {_TASK} SET state = %(state)s, done_at = %(done_at)s, confidence = %(confidence)s,
    low_confidence = %(low)s, required_overlap = %(required)s
WHERE id = %(task)s AND state = 'open' AND answers = %(answers)s
  AND required_overlap = %(was_required)s
"""


def _decide_batch(project: Project, task_ids: list[int]) -> int:
    """Decide these due tasks of the project together: their answers read in one query, the
    policy's decisions made for all at once with no lock held, then stored in one short
    transaction, each only if its task is still as it was read (open, the same answers and
    overlap; a task that moved meanwhile is left for the next look). Returns how many
    decisions were stored."""
    tasks: list[Task] = []
    for task, image in _DUE_TASKS.all(task_ids, expand={"ids": len(task_ids)}):
        task = cast(Task, task)
        task.image = cast(Image, image)
        tasks.append(task)
    if not tasks:
        return 0
    answers: dict[int, list[Assignment]] = {task.pk: [] for task in tasks}
    for (assignment,) in _COUNTED_ANSWERS.all(list(answers), expand={"ids": len(answers)}):
        answers[cast(Assignment, assignment).task_id].append(cast(Assignment, assignment))
    for task in tasks:
        task.project = project  # the policy reads it; no second query
    policy = routing_policy()
    decisions = policy.decide_many(
        project=project, tasks=tasks, answers=[answers[task.pk] for task in tasks]
    )
    now = timezone.now()
    stored = []
    with transaction.atomic(), connection.cursor() as cursor:
        for task, decision in zip(tasks, decisions, strict=True):
            done = decision.complete or task.required_overlap >= project.max_overlap
            cursor.execute(
                _APPLY_DECISION_SQL,
                {
                    "state": (TaskState.DONE if done else TaskState.OPEN).value,
                    "done_at": connection.ops.adapt_datetimefield_value(now) if done else None,
                    "confidence": decision.confidence if done else task.confidence,
                    "low": (not decision.complete) if done else task.low_confidence,
                    "required": task.required_overlap + (0 if done else 1),
                    "task": task.pk,
                    "answers": task.answers,
                    "was_required": task.required_overlap,
                },
            )
            if cursor.rowcount == 1:
                stored.append(decision)
        if stored:
            policy.decisions_applied(project=project, decisions=stored)
            events.project_changed(project.pk)
    return len(stored)


def _decisions_key(project_id: int) -> str:
    return f"tasks:decide:{project_id}"


def decisions_request(project_id: int) -> None:
    """After commit, have the project's due tasks decided by a job: one job waiting per
    project at a time (``cache.add`` is atomic, and shared between processes with Redis),
    which decides every task that came due meanwhile. The job clears the mark before it
    looks, so a task that comes due after its look asks for the next job."""

    def enqueue() -> None:
        from tasks.jobs import tasks_decide

        marked = cache.add(_decisions_key(project_id), 1, timeout=DECISION_MARK_SECONDS)
        if not marked and not _cache_down():
            return  # a job is waiting already
        try:
            tasks_decide.send_with_options(
                args=(project_id,), delay=settings.TASK_DECISION_DELAY_MS or None
            )
        except Exception:
            # The broker is unreachable (Redis down): decide here rather than leave the
            # project's completed tasks waiting for a sweep that needs the broker too.
            log.warning("decision job not sent; deciding in the request", exc_info=True)
            tasks_decide_due(project_id=project_id, limit=DECISION_BATCH)

    transaction.on_commit(enqueue)


def _cache_down() -> bool:
    """Whether the shared cache is known to be unreachable (it then fails open, and a
    decision job's mark cannot be told from its absence)."""
    return bool(getattr(cache, "is_down", lambda: False)())


@contextlib.contextmanager
def _deciding(project_id: int) -> Iterator[bool]:
    """Whether this job may decide the project now: no other job is. On PostgreSQL a
    session advisory lock, which a job that dies lets go of with its connection; elsewhere
    (the embedded default's one process) a cache entry."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [DECISION_LOCK, project_id])
            held = bool(cursor.fetchone()[0])
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [DECISION_LOCK, project_id])
        return
    key = f"tasks:deciding:{project_id}"
    held = cache.add(key, 1, timeout=DECISION_RUN_SECONDS)
    try:
        yield held
    finally:
        if held:
            cache.delete(key)


def decisions_run(*, project_id: int) -> int:
    """The decision job: decide the project's due tasks, in batches, until none is left. One
    job decides a project at a time (two would read and merge the same tasks, and wait on
    each other's row locks); a job that finds another at work looks again shortly."""
    with _deciding(project_id) as alone:
        if not alone:
            from tasks.jobs import tasks_decide

            delay = max(settings.TASK_DECISION_DELAY_MS, DECISION_RETRY_MS)
            tasks_decide.send_with_options(args=(project_id,), delay=delay)
            return 0
        cache.delete(_decisions_key(project_id))
        decided = 0
        while (batch := tasks_decide_due(project_id=project_id, limit=DECISION_BATCH)) > 0:
            decided += batch
            if batch < DECISION_BATCH:
                break
        return decided


def answer_withdraw(*, assignment: Assignment, open_only: bool = False) -> bool:
    """A rejected answer stops counting: it gives its slot back, and a task it had completed
    opens again and asks for one more answer (which goes to a worker who has not seen it).
    Call in the transaction that rejects it. With ``open_only``, an answer to a task already
    decided is left alone. Returns whether anything changed; a second call changes nothing."""
    if open_only:
        state = Task.objects.select_for_update().filter(pk=assignment.task_id)
        if state.values_list("state", flat=True).first() != TaskState.OPEN:
            return False
    if not Assignment.objects.filter(pk=assignment.pk, counted=True).update(counted=False):
        return False
    assignment.counted = False
    Task.objects.filter(pk=assignment.task_id, is_gold=False).update(
        answers=F("answers") - 1, state=TaskState.OPEN, done_at=None, confidence=None,
        low_confidence=False,
    )  # fmt: skip
    events.project_changed(assignment.project_id)
    return True


def answers_withdraw_for_worker(*, project_id: int, worker_id: int) -> int:
    """The worker was suspended: their answers to the project's open tasks stop holding
    slots, so those tasks ask other workers for answers that count (instead of reaching
    their maximum overlap on answers consensus leaves out). Decided tasks keep their
    decision. Each answer in its own short transaction; returns how many were withdrawn."""
    pending = Assignment.objects.filter(
        project_id=project_id, worker_id=worker_id, counted=True,
        status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED],
        task__state=TaskState.OPEN, task__is_gold=False,
    )  # fmt: skip
    withdrawn = 0
    for assignment in pending.only("pk", "task_id", "project_id"):
        with transaction.atomic():
            withdrawn += answer_withdraw(assignment=assignment, open_only=True)
    return withdrawn


def answer_restore(*, assignment: Assignment) -> bool:
    """A rejected answer approved again counts again if its task still has room for it (no
    other worker has taken its slot meanwhile); otherwise it is paid but stays out of the
    task's answers, so the overlap is never exceeded. Call in the approving transaction."""
    if assignment.counted or assignment.task.is_gold:
        return False
    room = Task.objects.filter(
        pk=assignment.task_id,
        state=TaskState.OPEN,
        open_leases__lt=F("required_overlap") - F("answers"),
    ).update(answers=F("answers") + 1)
    if not room:
        return False
    Assignment.objects.filter(pk=assignment.pk).update(counted=True)
    assignment.counted = True
    # This transaction already holds the task's row lock (the update above).
    task_decide_if_due(task_id=assignment.task_id, project=assignment.project)
    events.project_changed(assignment.project_id)
    return True


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
        events.lease_released(project_id=assignment.project_id)
    return assignment


class _NotWhole(Exception):
    """Some task of the image was not free to complete: undo the others."""


def image_auto_accept(
    *, project: Project, image_id: int, model_version: str, confidence: float
) -> bool:
    """Complete every task of the image with the model's answer and no human one (auto-accept):
    no assignment, no pay. All or nothing: only when each of its tasks is open, not gold, and
    has neither an answer nor a lease, so a task a worker holds or answered stays theirs.

    The guard is the claim's own rule, a conditional ``UPDATE ... WHERE`` on the task rows.
    On PostgreSQL the update waits for a claim holding a row's lock and then sees its lease
    (``open_leases`` > 0), so it skips that row; once the update holds the rows, claims skip
    them (``SKIP LOCKED``) and then find them done. On SQLite the IMMEDIATE transaction
    serialises the two. Fewer rows changed than the image has tasks undoes the whole image."""
    now = timezone.now()
    try:
        with transaction.atomic():
            total = Task.objects.filter(project=project, image_id=image_id).count()
            changed = Task.objects.filter(
                project=project, image_id=image_id, state=TaskState.OPEN, is_gold=False,
                open_leases=0, answers=0, people_only=False,
            ).update(
                state=TaskState.DONE, done_at=now, confidence=confidence, low_confidence=False,
                auto_accepted_version=model_version, stalled_at=None,
            )  # fmt: skip
            if not total or changed != total:
                raise _NotWhole
    except _NotWhole:
        return False
    events.project_changed(project.pk)
    return True


class NotAutoAccepted(InvalidInput):
    def __init__(self, missing: list[int]) -> None:
        super().__init__(
            f"{len(missing)} of the images were not labelled by the model alone in this "
            "project; nothing was reopened.",
            code="not_auto_accepted",
            errors={
                "images": [f"Image {i} was not labelled by the model alone." for i in missing[:100]]
            },
        )


def auto_accepted_tasks(project: Project) -> QuerySet[Task]:
    """The project's tasks the model labelled alone (auto-accept)."""
    return Task.objects.filter(project=project).exclude(auto_accepted_version="")


def auto_accepted_reopen(*, project: Project, image_ids: list[int] | None) -> int:
    """Send images the model labelled alone back to the crowd (``None``: all of them): their
    tasks are open again, with no answer, and auto-accept never labels them again. Returns
    the images reopened. NotAutoAccepted naming the images the model did not label alone in
    the project, and nothing reopened."""
    tasks = auto_accepted_tasks(project)
    if image_ids is not None:
        tasks = tasks.filter(image_id__in=image_ids)
    with transaction.atomic():
        images = set(tasks.values_list("image_id", flat=True))
        if image_ids is not None and (missing := sorted(set(image_ids) - images)):
            raise NotAutoAccepted(missing)
        tasks.update(
            state=TaskState.OPEN, done_at=None, confidence=None, low_confidence=False,
            auto_accepted_version="", people_only=True,
        )  # fmt: skip
    if images:
        events.project_changed(project.pk)
    return len(images)
