"""Data for the reliability tests and the soak run, written inside a Django process.

Run through ``manage.py shell -c`` (see :func:`seed_in`) so the data lands in the database
of the server processes under test. Images are rows only (their files are never read: the
simulated workers do not download them, and label exports do not open them).
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

from tests.e2e.server import manage

MARK = "SEEDED "


def seed_in(env: dict[str, str], call: str) -> dict[str, Any]:
    """Run ``call``, an expression on this module (``seeding.crowd(workers=2, ...)``), in a
    Django process of ``env``; returns what it emitted."""
    out = manage(env, "shell", "-c", f"from tests.reliability import seeding; {call}")
    result: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(MARK):
            result.update(json.loads(line[len(MARK) :]))
    if not result:
        raise RuntimeError(f"{call} emitted nothing:\n{out}")
    return result


def _emit(result: dict[str, Any]) -> None:
    print(MARK + json.dumps(result), flush=True)


def _people(workers: int, prefix: str) -> tuple[Any, list[Any]]:
    from rest_framework.authtoken.models import Token

    from crowd.models import Role, User

    # Token users only: no password to hash (each hash takes a good part of a second).
    manager = User.objects.create_user(f"{prefix}-boss", password=None, role=Role.MANAGER)
    crowd = [
        User.objects.create_user(f"{prefix}-w{i}", password=None, role=Role.WORKER)
        for i in range(workers)
    ]
    Token.objects.bulk_create(Token(user=u, key=secrets.token_hex(20)) for u in [manager, *crowd])
    return manager, crowd


def _project(manager: Any, *, overlap: int, name: str) -> Any:
    from tasks.services import project_create

    return project_create(
        owner=manager,
        data={"name": name, "kind": "bbox", "labels": ["car", "tree"], "min_overlap": overlap,
              "max_overlap": overlap, "gold_rate": 0, "tile_size": 0},
    )  # fmt: skip


def _images(project: Any, count: int) -> list[Any]:
    from tasks.models import Image, ImageStatus

    start = Image.objects.filter(project=project).count()
    return Image.objects.bulk_create(
        Image(project=project, name=f"{i}.jpg", file=f"x/{i}.jpg", sha256=f"{i:064x}",
              format="JPEG", width=640, height=480, size_bytes=1, status=ImageStatus.READY)
        for i in range(start, start + count)
    )  # fmt: skip


def tasks_add(project_id: int, count: int, emit: bool = True) -> int:
    """Add ``count`` ready images with one open task each to the project."""
    from tasks.models import Project, Task

    project = Project.objects.get(pk=project_id)
    images = _images(project, count)
    Task.objects.bulk_create(
        Task(project=project, image=image, width=640, height=480,
             required_overlap=project.min_overlap)
        for image in images
    )  # fmt: skip
    if emit:
        _emit({"added": count})
    return count


def auto_accepted(project_id: int, images: int, model_version: str = "m1") -> None:
    """The model alone labels the project's first ``images`` images (as auto-accept does once
    its threshold is calibrated); prints their ids."""
    from tasks.models import Image, Project
    from tasks.routing import image_auto_accept

    project = Project.objects.get(pk=project_id)
    ids = list(Image.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    done = [
        i for i in ids[:images]
        if image_auto_accept(project=project, image_id=i, model_version=model_version,
                             confidence=0.99)
    ]  # fmt: skip
    _emit({"images": done})


def crowd(*, workers: int, tasks: int, overlap: int, prefix: str = "crowd") -> None:
    """A manager, ``workers`` workers and an active bbox project with ``tasks`` open tasks
    needing ``overlap`` answers each; prints the tokens and the project id."""
    from rest_framework.authtoken.models import Token

    from tasks.services import project_transition

    manager, people = _people(workers, prefix)
    project = _project(manager, overlap=overlap, name=f"{prefix} project")
    tasks_add(project.pk, tasks, emit=False)
    project_transition(project=project, action="start")
    tokens = dict(Token.objects.values_list("user_id", "key"))
    _emit({"project": project.pk, "manager": tokens[manager.pk],
           "workers": [tokens[w.pk] for w in people]})  # fmt: skip


def boxes(image_index: int, worker_index: int) -> list[dict[str, Any]]:
    """Five separate cars per image; each worker draws them a pixel apart from the others."""
    return [
        {"label": "car", "bbox": [10 + 60 * j + worker_index, 20 + image_index % 7, 40, 40]}
        for j in range(5)
    ]


def answered(*, images: int, workers: int = 3, prefix: str = "answered") -> dict[str, int]:
    """A bbox project whose ``images`` tasks each have ``workers`` submitted answers (of
    :func:`boxes`): work enough for consensus and exports to take a few seconds."""
    from django.utils import timezone

    from tasks.models import Assignment, AssignmentStatus, Task, TaskState

    manager, people = _people(workers, prefix)
    project = _project(manager, overlap=workers, name=f"{prefix} project")
    now = timezone.now()
    tasks = Task.objects.bulk_create(
        Task(project=project, image=image, width=640, height=480, required_overlap=workers,
             answers=workers, state=TaskState.DONE, done_at=now)
        for image in _images(project, images)
    )  # fmt: skip
    Assignment.objects.bulk_create(
        (
            Assignment(
                task=task,
                project=project,
                worker=worker,
                status=AssignmentStatus.SUBMITTED,
                leased_at=now,
                expires_at=now + timedelta(minutes=10),
                submitted_at=now,
                answer=boxes(i, w),
                time_spent_ms=1000,
            )
            for i, task in enumerate(tasks)
            for w, worker in enumerate(people)
        ),
        batch_size=5000,
    )
    result = {"project": project.pk, "manager": manager.pk}
    _emit(result)
    return result


def export_queue(*, project_id: int, user_id: int) -> None:
    """Request a COCO export of the project through the service (queues ``export_build``)."""
    from crowd.models import User
    from qa.exports.build import export_request
    from tasks.models import Project

    export = export_request(
        project=Project.objects.get(pk=project_id),
        user=User.objects.get(pk=user_id),
        data={"format": "coco"},
    )
    _emit({"export": export.pk})


def consensus_queue(*, project_id: int, user_id: int) -> None:
    """Request a consensus run of the project through the service (queues the job)."""
    from crowd.models import User
    from qa.merge import consensus_run_request
    from tasks.models import Project

    run = consensus_run_request(
        project=Project.objects.get(pk=project_id), user=User.objects.get(pk=user_id)
    )
    _emit({"run": run.pk})


def sweep() -> None:
    """One run of the periodic sweep job (which the tests' environment never schedules)."""
    from tasks.jobs import leases_sweep

    leases_sweep.fn()
    _emit({"swept": True})
