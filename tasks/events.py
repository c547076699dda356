"""Live events of routing, published after commit.

Groups: ``user.<id>`` (one worker: their leases), ``project.<id>`` (the project's managers:
progress frames, worker, export and prediction run events), ``project.<id>.workers``
(workers who may work on the project: the work available) and ``workers`` (every connected
worker: a project opened).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from crowd.live import publish, publish_coalesced, send_control, user_group
from tasks.models import Assignment, PredictionRun, Project, ProjectState, Task, TaskState

ALL_WORKERS = "workers"


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def project_workers_group(project_id: int) -> str:
    return f"project.{project_id}.workers"


def available_slots(project_id: int) -> int:
    """Answers the project could hand out right now (open tasks' free overlap)."""
    return available_by_project([project_id])[project_id]


def available_by_project(project_ids: Sequence[int]) -> dict[int, int]:
    """``available_slots`` of many projects in one aggregate."""
    from django.db.models import F, Sum

    free = dict.fromkeys(project_ids, 0)
    rows = (
        Task.objects.filter(project_id__in=list(free), state=TaskState.OPEN, is_gold=False)
        .values("project_id")
        .annotate(free=Sum(F("required_overlap") - F("answers") - F("open_leases")))
        .values_list("project_id", "free")
    )
    for project_id, total in rows:
        free[project_id] = max(int(total or 0), 0)
    return free


EXACT_UP_TO = 20


def coarse(available: int) -> tuple[int, bool]:
    """Availability as workers are shown it: exact up to ``EXACT_UP_TO``, then rounded down
    to two significant digits (1,523 is "1,500 or more"), and whether that is exact. The
    frame to every connected worker then changes only when the number a person reads does,
    not on each of the thousands of leases and answers a busy project sees a minute."""
    if available <= EXACT_UP_TO:
        return available, True
    step = 10 ** (len(str(available)) - 2)
    rounded = available // step * step
    return rounded, rounded == available


def queue_frame(project_id: int) -> dict[str, Any] | None:
    return next(iter(queue_frames([project_id])), None)


def queue_frames(project_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The ``queue`` frames of these projects (those that exist), in two queries whatever
    their number: a worker's snapshot on connect carries one per active project."""
    projects = Project.objects.filter(pk__in=list(project_ids)).only("state", "name")
    by_id = {p.pk: p for p in projects}
    active = [pk for pk, p in by_id.items() if p.state == ProjectState.ACTIVE]
    free = available_by_project(active) if active else {}
    frames = []
    for project_id in project_ids:
        project = by_id.get(project_id)
        if project is None:
            continue
        available, exact = coarse(free.get(project_id, 0))
        frames.append(
            {
                "type": "queue",
                "project": project_id,
                "name": project.name,
                "available": available,
                "exact": exact,
                "state": project.state,
            }
        )
    return frames


def progress_frame(project_id: int) -> dict[str, Any] | None:
    from tasks.hooks import progress_contributions
    from tasks.selectors import project_progress

    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    return {
        "type": "progress",
        "project": project_id,
        **project_progress(project),
        **progress_contributions.collect(project),
    }


def project_changed(project_id: int) -> None:
    """The project's counts moved: coalesced progress for managers, work for workers."""
    publish_coalesced(
        f"progress.{project_id}", project_group(project_id), lambda: progress_frame(project_id)
    )
    publish_coalesced(
        f"queue.{project_id}", project_workers_group(project_id), lambda: queue_frame(project_id)
    )


def project_opened(project: Project) -> None:
    """A project became active: connected workers join its group and hear of its work (all
    but those barred from it, who stay out)."""
    from tasks.hooks import routing_policy

    def announce() -> None:
        message = {
            "type": "live.join",
            "group": project_workers_group(project.pk),
            "event": queue_frame(project.pk),
            "barred": sorted(routing_policy().barred_workers(project_id=project.pk)),
        }
        send_control(ALL_WORKERS, message)

    transaction.on_commit(announce)
    project_changed(project.pk)


def worker_barred(*, project_id: int, worker_id: int) -> None:
    """The worker may no longer see the project's work: their connections leave its group."""
    message = {"type": "live.leave", "group": project_workers_group(project_id)}
    transaction.on_commit(lambda: send_control(user_group(worker_id), message))


def worker_admitted(*, project_id: int, worker_id: int) -> None:
    """The worker may see the project's work again: their connections join its group, with
    its availability, while it is active."""

    def announce() -> None:
        frame = queue_frame(project_id)
        if frame is None or frame["state"] != ProjectState.ACTIVE:
            return
        message = {"type": "live.join", "group": project_workers_group(project_id), "event": frame}
        send_control(user_group(worker_id), message)

    transaction.on_commit(announce)


def lease_granted(assignment: Assignment) -> None:
    publish(
        user_group(assignment.worker_id),
        {
            "type": "lease",
            "assignment": assignment.pk,
            "project": assignment.project_id,
            "expires_at": assignment.expires_at.isoformat(),
        },
    )
    project_changed(assignment.project_id)


def lease_expiring(assignment: Assignment) -> None:
    seconds = max((assignment.expires_at - timezone.now()).total_seconds(), 0.0)
    publish(
        user_group(assignment.worker_id),
        {
            "type": "lease_expiring",
            "assignment": assignment.pk,
            "project": assignment.project_id,
            "expires_at": assignment.expires_at.isoformat(),
            "seconds_left": round(seconds, 1),
        },
    )


def lease_released(*, project_id: int) -> None:
    project_changed(project_id)


def answer_submitted(assignment: Assignment, task: Task) -> None:
    project_changed(task.project_id)


def prediction_run_changed(run: PredictionRun) -> None:
    """A run of the ML backend's status and progress, for the project's managers."""
    publish(
        project_group(run.project_id),
        {
            "type": "prediction_run",
            "project": run.project_id,
            "id": run.pk,
            "status": run.status,
            "model_version": run.model_version or None,
            "images_total": run.images_total,
            "images_done": run.images_done,
            "predicted": run.predicted,
            "failed": run.failed,
        },
    )
