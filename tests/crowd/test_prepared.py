"""Prepared reads give exactly what the queryset they were written as gives."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db.models import Model
from django.utils import timezone

from crowd.models import User
from crowd.prepared import Joined, Prepared
from tasks.models import Assignment, AssignmentStatus, Image, Project, Task
from tests.factories import WorkerFactory, project_with_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

LEASES = Prepared(
    lambda project, worker, now: Assignment.objects.filter(
        project_id=project, worker_id=worker, expires_at__gt=now
    ).order_by("pk"),
    int,
    int,
    datetime,
)


def fields(instance: Model) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


def leases(project: Project, worker: User, count: int) -> list[Assignment]:
    now = timezone.now()
    tasks = list(project.tasks.order_by("pk")[:count])
    return [
        Assignment.objects.create(
            task=task,
            project=project,
            worker=worker,
            status=AssignmentStatus.SUBMITTED if i else AssignmentStatus.LEASED,
            leased_at=now,
            expires_at=now + timedelta(minutes=i),
            counted=bool(i % 2),
            answer=[{"label": "car", "bbox": [1, 2, 3, 4]}] if i else None,
        )
        for i, task in enumerate(tasks)
    ]


def test_a_prepared_read_returns_what_its_queryset_returns(manager: User) -> None:
    project = project_with_tasks(manager, tasks=4, overlap=1)
    worker, other = WorkerFactory.create(), WorkerFactory.create()
    leases(project, worker, 4)
    leases(project, other, 2)
    now = timezone.now()
    expected = list(
        Assignment.objects.filter(project=project, worker=worker, expires_at__gt=now).order_by("pk")
    )
    assert len(expected) == 3  # the first lease expires now
    got = LEASES.all(project.pk, worker.pk, now)
    assert got == expected
    assert [fields(a) for a in got] == [fields(a) for a in expected]
    assert isinstance(got[0].expires_at, datetime)
    assert isinstance(got[0].counted, bool)
    assert LEASES.all(project.pk, other.pk, now) != got  # its arguments, not the first call's
    assert LEASES.first(project.pk, 0, now) is None


def test_a_prepared_read_saves_like_any_instance(manager: User) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    read = Prepared(lambda pk: Project.objects.filter(pk=pk)[:1], int).first(project.pk)
    assert read is not None
    assert not read._state.adding
    read.name = "renamed"
    read.save(update_fields=["name"])
    assert Project.objects.get(pk=project.pk).name == "renamed"


def test_joined_rows_split_into_one_instance_per_model(manager: User) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    task = project.tasks.order_by("pk").last()
    assert task is not None
    joined = Joined(
        "SELECT {columns} FROM tasks_task t JOIN tasks_image i ON i.id = t.image_id "
        "WHERE t.id = %s",
        (Task, "t"),
        (Image, "i"),
    )
    found = joined.first([task.pk])
    assert found is not None
    assert fields(found[0]) == fields(task)
    assert fields(found[1]) == fields(task.image)
    assert joined.first([0]) is None


def test_reads_it_cannot_prepare_are_refused(manager: User) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    joined = Prepared(lambda pk: Task.objects.select_related("image").filter(pk=pk), int)
    with pytest.raises(ValueError, match="plain queryset"):
        joined.all(1)
    unused = Prepared(lambda pk: Task.objects.filter(project_id=project.pk), int)
    with pytest.raises(ValueError, match="every argument"):
        unused.all(1)


def test_joined_reads_every_row_with_an_in_list(manager: User) -> None:
    project = project_with_tasks(manager, tasks=5, overlap=1)
    tasks = list(project.tasks.order_by("pk"))
    joined = Joined(
        "SELECT {columns} FROM tasks_task t JOIN tasks_image i ON i.id = t.image_id "
        "WHERE t.id IN ({ids}) AND t.project_id = %s ORDER BY t.id",
        (Task, "t"),
        (Image, "i"),
    )
    wanted = [tasks[3].pk, tasks[0].pk, tasks[4].pk]
    rows = joined.all([*wanted, project.pk], expand={"ids": 3})
    assert [fields(task) for task, _ in rows] == [fields(tasks[i]) for i in (0, 3, 4)]
    assert [fields(image) for _, image in rows] == [fields(tasks[i].image) for i in (0, 3, 4)]
    assert joined.all([tasks[1].pk, project.pk], expand={"ids": 1})[0][0] == tasks[1]
    assert joined.all([0, project.pk], expand={"ids": 1}) == []
