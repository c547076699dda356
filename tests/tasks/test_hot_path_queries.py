"""The worker's hot path in queries (SQLite): what next/ and submit/ cost a worker in the
middle of their work, pinned so that a query added to either fails here.

The figures count every statement Django sends, the savepoints of the test's transaction
included; they are those of a worker holding a score row in the project, with the project's
labels already read by the process. With ``TOKEN_CACHE_SECONDS`` set (the default with
Redis) the token's user comes from the cache: one query less per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from crowd.models import User
from tasks import routing
from tasks.models import Project
from tests.factories import WorkerFactory, project_with_tasks

pytestmark = [pytest.mark.django_db]

BOX = {"annotations": [{"label": "car", "bbox": [10, 10, 50, 40]}]}

# (next, submit, submit?next=1, and submit?next=1 again) with the token's user cached, and
# without. The first submit?next=1 of the project in this process looks for its expired
# leases; the next within routing.RELEASE_LOOK_SECONDS claims without that read, and without
# a read of the worker's standing (the claim's statement checks it).
CACHED = (8, 5, 12, 10)
UNCACHED = (9, 6, 13, 11)
# The submit that gives a task its last required answer leaves its decision (consensus,
# agreement of each worker) to a job: it costs what any submit does.
COMPLETING = CACHED[1]
# Deciding it in the request instead (TASK_DECISIONS=inline), two answers here; one of them
# asks whether the project has a model that votes (its newest prediction, none here).
COMPLETING_INLINE = 18


def queries(request: Callable[[], Any]) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = request()
    return response, [q["sql"] for q in captured]


def started(manager: User, worker: User, api_as: Callable[[User], APIClient]) -> tuple:
    """A project of tasks of overlap 2 where the worker already did one task."""
    project = project_with_tasks(manager, tasks=10, overlap=2)
    api = api_as(worker)
    first = api.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert first.status_code == 201
    done = api.post(f"/api/v1/assignments/{first.json()['id']}/submit/", BOX, format="json")
    assert done.status_code == 200
    return project, api


def cycle(project: Project, api: APIClient) -> tuple[int, int, int, int]:
    """One next, one submit, two submit?next=1 (none completes a task): their queries."""
    lease, next_sql = queries(lambda: api.post(f"/api/v1/projects/{project.pk}/assignments/next/"))
    assert lease.status_code == 201
    url = f"/api/v1/assignments/{lease.json()['id']}/submit/"
    done, submit_sql = queries(lambda: api.post(url, BOX, format="json"))
    assert done.status_code == 200
    lease = api.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    counts = []
    for _ in range(2):
        url = f"/api/v1/assignments/{lease['id']}/submit/?next=1"
        done, both_sql = queries(lambda: api.post(url, BOX, format="json"))  # noqa: B023
        assert done.status_code == 200
        lease = done.json()["next"]
        assert lease is not None
        counts.append(len(both_sql))
    return len(next_sql), len(submit_sql), counts[0], counts[1]


@pytest.mark.parametrize(("seconds", "expected"), [(60, CACHED), (0, UNCACHED)])
def test_next_and_submit_cost_no_more_queries_than_pinned(
    settings, monkeypatch, manager: User, worker: User, api_as, seconds: int, expected: tuple
) -> None:
    settings.TOKEN_CACHE_SECONDS = seconds
    # However slow the machine, the second submit?next=1 comes within the look's interval.
    monkeypatch.setattr(routing, "RELEASE_LOOK_SECONDS", 3600.0)
    project, api = started(manager, worker, api_as)
    assert cycle(project, api) == expected


def test_the_token_cache_spares_the_user_lookup_on_every_hot_request(
    settings, manager: User, worker: User, api_as
) -> None:
    settings.TOKEN_CACHE_SECONDS = 60
    project, api = started(manager, worker, api_as)
    lease, sql = queries(lambda: api.post(f"/api/v1/projects/{project.pk}/assignments/next/"))
    url = f"/api/v1/assignments/{lease.json()['id']}/submit/?next=1"
    _, more = queries(lambda: api.post(url, BOX, format="json"))
    assert not [q for q in sql + more if "authtoken_token" in q or '"crowd_user"' in q]


def completing_submit(
    manager: User, worker: User, api_as: Callable[[User], APIClient]
) -> tuple[Project, int, list[str]]:
    project, _ = started(manager, worker, api_as)
    other = api_as(WorkerFactory.create())
    lease = other.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    url = f"/api/v1/assignments/{lease['id']}/submit/"
    done, sql = queries(lambda: other.post(url, BOX, format="json"))
    assert done.status_code == 200
    return project, lease["task"]["id"], sql


@pytest.mark.deferred_decisions
def test_the_submit_that_completes_a_task_leaves_its_decision_to_a_job(
    settings, manager: User, worker: User, api_as
) -> None:
    settings.TOKEN_CACHE_SECONDS = 60
    project, task_id, sql = completing_submit(manager, worker, api_as)
    task = project.tasks.get(pk=task_id)
    assert (task.state, task.answers, task.required_overlap) == ("open", 2, 2)  # due
    assert len(sql) == COMPLETING
    assert routing.decisions_run(project_id=project.pk) == 1
    assert project.tasks.get(pk=task_id).state == "done"


def test_deciding_in_the_request_costs_no_more_than_pinned(
    settings, manager: User, worker: User, api_as
) -> None:
    settings.TOKEN_CACHE_SECONDS = 60
    project, task_id, sql = completing_submit(manager, worker, api_as)
    assert project.tasks.get(pk=task_id).state == "done"
    assert len(sql) == COMPLETING_INLINE
