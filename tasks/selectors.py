"""Reads with permission checks: who may see which project and image."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone

from crowd.errors import NotFound
from crowd.models import Role, User
from crowd.prepared import Prepared
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Image,
    ImageStatus,
    MemberRole,
    Project,
    ProjectState,
    Task,
    TaskState,
)


def projects_for_user(user: User) -> QuerySet[Project]:
    """Managers: the projects they manage; clients: those shared with them; workers: the
    active ones."""
    projects = Project.objects.order_by("-created_at")
    if user.role == Role.WORKER:
        return projects.filter(state=ProjectState.ACTIVE)
    role = MemberRole.MANAGER if user.role == Role.MANAGER else MemberRole.CLIENT
    return projects.filter(members__user=user, members__role=role)


def project_for_user(user: User, project_id: int) -> Project:
    """The project if this user may see it; 404 otherwise (no hint that it exists)."""
    project = projects_for_user(user).filter(pk=project_id).first()
    if project is None:
        raise NotFound("No such project.")
    return project


_PROJECT = Prepared(lambda pk: Project.objects.filter(pk=pk)[:1], int)


def project_for_worker(user: User, project_id: int) -> Project:
    """A project a worker may ask for work: active ones, and paused ones (which hand out
    nothing for now, rather than vanishing under a working crowd)."""
    return project_open_to_workers(_PROJECT.first(project_id))


def project_open_to_workers(project: Project | None) -> Project:
    """:func:`project_for_worker` for a project already read (404 when it is not open)."""
    if project is None or project.state not in (ProjectState.ACTIVE, ProjectState.PAUSED):
        raise NotFound("No such project.")
    return project


def assignments_for_worker(user: User) -> QuerySet[Assignment]:
    return (
        Assignment.objects.filter(worker=user)
        .select_related("project")
        .order_by("-leased_at", "-pk")
    )


def project_for_manager(user: User, project_id: int) -> Project:
    project = (
        Project.objects.filter(
            pk=project_id, members__user=user, members__role=MemberRole.MANAGER
        ).first()
        if user.role == Role.MANAGER
        else None
    )
    if project is None:
        raise NotFound("No such project.")
    return project


def is_project_member(user: User, project_id: int) -> bool:
    return Project.objects.filter(pk=project_id, members__user=user).exists()


def image_for_viewer(user: User, image_id: int) -> Image:
    """An image file may be fetched by the project's managers and clients, and by a worker
    only while holding an unexpired lease on one of its tasks."""
    image = Image.objects.filter(pk=image_id, status=ImageStatus.READY).first()
    if image is not None:
        if user.role == Role.WORKER:
            allowed = Assignment.objects.filter(
                worker=user,
                task__image=image,
                status=AssignmentStatus.LEASED,
                expires_at__gt=timezone.now(),
            ).exists()
        else:
            allowed = is_project_member(user, image.project_id)
        if allowed:
            return image
    raise NotFound("No such image.")


def project_images(project: Project) -> QuerySet[Image]:
    return project.images.order_by("pk")


def project_progress(project: Project) -> dict[str, Any]:
    """Task, image and answer counts (``stalled``: open tasks no worker left can answer, as
    the sweep last marked them; see ``tasks.stalled``). One statement of plain SQL: the live
    progress frame computes this up to ten times a second per project while answers stream
    in, and the ORM's compilation of these filtered counts took four times as long as
    running them."""
    tasks, images, assignments = (
        Task._meta.db_table, Image._meta.db_table, Assignment._meta.db_table
    )  # fmt: skip
    sql = f"""
        SELECT t.total, t.done, t.in_progress, t.open, t.gold, t.stalled,
               i.total, i.pending, i.ready, i.failed, i.near_duplicates, a.submitted
        FROM (SELECT COUNT(*) AS total,
                     SUM(CASE WHEN state = %s THEN 1 ELSE 0 END) AS done,
                     SUM(CASE WHEN state = %s AND open_leases > 0 THEN 1 ELSE 0 END)
                         AS in_progress,
                     SUM(CASE WHEN state = %s AND open_leases = 0 THEN 1 ELSE 0 END) AS open,
                     SUM(CASE WHEN is_gold THEN 1 ELSE 0 END) AS gold,
                     SUM(CASE WHEN state = %s AND stalled_at IS NOT NULL THEN 1 ELSE 0 END)
                         AS stalled
              FROM {tasks} WHERE project_id = %s) t,
             (SELECT COUNT(*) AS total,
                     SUM(CASE WHEN status = %s THEN 1 ELSE 0 END) AS pending,
                     SUM(CASE WHEN status = %s THEN 1 ELSE 0 END) AS ready,
                     SUM(CASE WHEN status = %s THEN 1 ELSE 0 END) AS failed,
                     SUM(CASE WHEN near_duplicate_of_id IS NOT NULL THEN 1 ELSE 0 END)
                         AS near_duplicates
              FROM {images} WHERE project_id = %s) i,
             (SELECT COUNT(*) AS submitted FROM {assignments}
              WHERE project_id = %s AND status IN (%s, %s, %s)) a
    """  # table names from the models, values as parameters
    params: list[str | int] = [
        TaskState.DONE, TaskState.OPEN, TaskState.OPEN, TaskState.OPEN, project.pk,
        ImageStatus.PENDING, ImageStatus.READY, ImageStatus.FAILED, project.pk,
        project.pk, *AssignmentStatus.answered(),
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = [int(value or 0) for value in cursor.fetchone()]
    task_keys = ("tasks", "done", "in_progress", "open", "gold", "stalled")
    image_keys = ("total", "pending", "ready", "failed", "near_duplicates")
    return {
        **dict(zip(task_keys, row[:6], strict=True)),
        "assignments_submitted": row[11],
        "images": dict(zip(image_keys, row[6:11], strict=True)),
    }


# The median is taken over the most recent answers: a task's time is judged as it is now.
RECENT_ANSWERS = 5000


def median_seconds_per_task(project: Project) -> float | None:
    """Median active time of the project's recent answers (the server-capped time)."""
    return work_figures([project.pk])[project.pk][1]


def work_figures(project_ids: Sequence[int]) -> dict[int, tuple[int, float | None]]:
    """Per project: the answers it could hand out now (``tasks.events.available_slots``) and
    the median active seconds of its ``RECENT_ANSWERS`` latest answers. Two statements for any
    number of projects (the workers' project list shows both for every active project); the
    median is the middle row, or the mean of the middle two, of each project's times."""
    from tasks.events import available_by_project

    ids = list(dict.fromkeys(int(pk) for pk in project_ids))
    if not ids:
        return {}
    available = available_by_project(ids)
    marks = ", ".join(["%s"] * len(ids))
    answered = AssignmentStatus.answered()
    statuses = ", ".join(["%s"] * len(answered))
    sql = f"""
        WITH recent AS (
            SELECT project_id, time_spent_ms AS t,
                   ROW_NUMBER() OVER (PARTITION BY project_id ORDER BY submitted_at DESC, id DESC)
                       AS latest
            FROM {Assignment._meta.db_table}
            WHERE project_id IN ({marks}) AND status IN ({statuses}) AND time_spent_ms > 0
        ), ranked AS (
            SELECT project_id, t,
                   ROW_NUMBER() OVER (PARTITION BY project_id ORDER BY t) AS r,
                   COUNT(*) OVER (PARTITION BY project_id) AS n
            FROM recent WHERE latest <= %s
        )
        SELECT project_id, AVG(t) FROM ranked
        WHERE r = (n + 1) / 2 OR r = (n + 2) / 2
        GROUP BY project_id
    """  # the table name from the model, values as parameters
    params: list[int | str] = [*ids, *answered, RECENT_ANSWERS]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        medians = {int(pk): float(ms) / 1000 for pk, ms in cursor.fetchall()}
    return {pk: (available[pk], medians.get(pk)) for pk in ids}


THROUGHPUT_MAX_MINUTES = 24 * 60


def _per_minute(rows: QuerySet[Any], column: str) -> dict[Any, int]:
    """Row counts by the minute of ``column``."""
    return dict(
        rows.annotate(minute=TruncMinute(column))
        .values_list("minute")
        .annotate(n=Count("pk"))
        .values_list("minute", "n")
    )


def project_throughput(project: Project, *, minutes: int) -> dict[str, Any]:
    """Answers submitted and tasks completed per minute over the last ``minutes`` minutes,
    oldest first, with empty minutes included so a chart's x axis is time."""
    now = timezone.now().replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes - 1)
    submitted = _per_minute(
        Assignment.objects.filter(project=project, submitted_at__gte=start), "submitted_at"
    )
    done = _per_minute(Task.objects.filter(project=project, done_at__gte=start), "done_at")
    points = []
    for i in range(minutes):
        minute = start + timedelta(minutes=i)
        points.append(
            {
                "t": minute.isoformat(),
                "submitted": int(submitted.get(minute, 0)),
                "done": int(done.get(minute, 0)),
            }
        )
    return {"bucket_seconds": 60, "points": points}
