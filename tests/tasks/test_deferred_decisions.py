"""Deciding completed tasks off the request path (the default, ``TASK_DECISIONS=deferred``).

A submit that gives a task its last required answer commits the answer and asks for a job;
the task is "due" (open, answers = required overlap, no free slot) until the job decides it,
exactly as a crash between the answer and its decision leaves it, and the sweep decides what
a lost job left. One job waits per project at a time and decides every task due by then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from crowd.jobs import wait_for_jobs
from crowd.models import User
from tasks import jobs, routing
from tasks.models import Project, Task
from tests.factories import WorkerFactory, project_with_tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.deferred_decisions]

BOX = {"annotations": [{"label": "car", "bbox": [10, 10, 50, 40]}]}


def answer(api: APIClient, project: Project) -> int:
    lease = api.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert lease.status_code == 201
    done = api.post(f"/api/v1/assignments/{lease.json()['id']}/submit/", BOX, format="json")
    assert done.status_code == 200
    return int(lease.json()["task"]["id"])


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The decision jobs asked for (each still sent to the broker and run)."""
    calls: list[tuple[Any, ...]] = []
    send = jobs.tasks_decide.send_with_options

    def spy(*, args: tuple[Any, ...], **options: Any) -> Any:
        calls.append(args)
        return send(args=args, **options)

    monkeypatch.setattr(jobs.tasks_decide, "send_with_options", spy)
    return calls


def test_a_job_decides_the_task_its_last_answer_completed(
    settings, manager: User, api_as: Callable[[User], APIClient], sent: list
) -> None:
    settings.TASK_DECISION_DELAY_MS = 0
    project = project_with_tasks(manager, tasks=3, overlap=2)
    first, second = api_as(WorkerFactory.create()), api_as(WorkerFactory.create())
    task_id = answer(first, project)
    assert sent == []  # one answer of two: nothing to decide
    assert answer(second, project) == task_id
    assert sent == [(project.pk,)]
    wait_for_jobs()
    task = Task.objects.get(pk=task_id)
    assert task.state == "done"
    assert task.done_at is not None


def test_one_job_waits_per_project_and_decides_every_task_due_by_then(
    settings, manager: User, api_as: Callable[[User], APIClient], sent: list
) -> None:
    # The job waits long enough here that all three completions find it waiting.
    settings.TASK_DECISION_DELAY_MS = 2000
    project = project_with_tasks(manager, tasks=3, overlap=1)
    crowd = [api_as(WorkerFactory.create()) for _ in range(3)]
    tasks = [answer(api, project) for api in crowd]
    assert sent == [(project.pk,)]
    due = Task.objects.filter(pk__in=tasks, state="open", answers=1, required_overlap=1)
    assert due.count() == 3  # answered, not yet decided
    wait_for_jobs()
    assert Task.objects.filter(pk__in=tasks, state="done").count() == 3
    # The job cleared its mark: the next completion asks for a job of its own.
    more = project_with_tasks(manager, tasks=1, overlap=1)
    answer(crowd[0], more)
    assert sent == [(project.pk,), (more.pk,)]


def test_the_sweep_decides_what_a_lost_job_left_due(
    settings, manager: User, api_as: Callable[[User], APIClient], sent: list
) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    # A job is marked as waiting, but its process died with it: none is sent.
    cache.add(routing._decisions_key(project.pk), 1, timeout=60)
    task_id = answer(api_as(WorkerFactory.create()), project)
    assert sent == []
    assert Task.objects.get(pk=task_id).state == "open"
    assert routing.tasks_decide_due() == 1
    assert Task.objects.get(pk=task_id).state == "done"
    assert routing.tasks_decide_due() == 0  # a decided task is not decided again


def test_deciding_twice_changes_nothing(manager: User, api_as: Callable[[User], APIClient]) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    task_id = answer(api_as(WorkerFactory.create()), project)
    wait_for_jobs()
    decided = Task.objects.get(pk=task_id)
    assert routing.decisions_run(project_id=project.pk) == 0
    again = Task.objects.get(pk=task_id)
    assert (again.state, again.done_at, again.required_overlap) == (
        decided.state,
        decided.done_at,
        decided.required_overlap,
    )


@contextmanager
def another_job_deciding(project: Project) -> Iterator[None]:
    """Another job holds the project: its advisory lock on PostgreSQL (a session of its
    own), its cache entry elsewhere."""
    if connection.vendor != "postgresql":
        cache.add(f"tasks:deciding:{project.pk}", 1, timeout=60)
        yield
        cache.delete(f"tasks:deciding:{project.pk}")
        return
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"],
        port=db["PORT"], autocommit=True,
    ) as other:  # fmt: skip
        other.execute("SELECT pg_advisory_lock(%s, %s)", [routing.DECISION_LOCK, project.pk])
        yield


@pytest.mark.both_databases
def test_a_job_that_finds_another_deciding_the_project_looks_again_later(
    settings, manager: User, api_as: Callable[[User], APIClient], sent: list
) -> None:
    settings.TASK_DECISION_DELAY_MS = 0
    project = project_with_tasks(manager, tasks=1, overlap=1)
    holding = another_job_deciding(project)
    holding.__enter__()
    task_id = answer(api_as(WorkerFactory.create()), project)
    assert sent[0] == (project.pk,)
    # The job sent by the answer stepped aside and asked for another, which steps aside too
    # while the first is still deciding: the task stays due.
    assert routing.decisions_run(project_id=project.pk) == 0
    assert Task.objects.get(pk=task_id).state == "open"
    assert len(sent) >= 2
    holding.__exit__(None, None, None)  # the other job is done
    wait_for_jobs()
    assert Task.objects.get(pk=task_id).state == "done"
