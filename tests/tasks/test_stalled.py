"""Tasks no worker left can answer: listed with the reason, counted in /progress/, resolved
by the project's choice; a suspended worker's answers stop holding slots on open tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from qa import services as qa_services
from tasks import routing, stalled
from tasks.models import Assignment, Project, Task, TaskState
from tests.factories import WorkerFactory, project_with_tasks
from tests.tasks.routing_helpers import assert_counters_match_recount

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BOX = [{"label": "car", "bbox": [10, 10, 50, 40]}]
OTHER = [{"label": "car", "bbox": [300, 200, 40, 40]}]


def answer(project, worker, annotations=BOX) -> Assignment | None:
    lease = routing.assignment_next(project=project, worker=worker)
    if lease is None:
        return None
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=annotations)
    return Assignment.objects.get(pk=lease.pk)


def skip(project, worker) -> None:
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    routing.assignment_skip(assignment_id=lease.pk, worker=worker)


def disagreeing_task(manager, **settings) -> tuple[Project, list]:
    """One task, min overlap 2 and max 4, answered by both of the site's two workers with
    boxes that do not agree: it asks for a third answer nobody is left to give."""
    project = project_with_tasks(manager, tasks=1, overlap=2)
    Project.objects.filter(pk=project.pk).update(max_overlap=4, **settings)
    project.refresh_from_db()
    workers = [WorkerFactory.create(), WorkerFactory.create()]
    answer(project, workers[0], BOX)
    answer(project, workers[1], OTHER)
    task = Task.objects.get()
    assert (task.state, task.answers, task.required_overlap) == (TaskState.OPEN, 2, 3)
    return project, workers


def test_a_task_every_worker_has_seen_is_listed_with_the_reason(manager, api_as) -> None:
    project, _ = disagreeing_task(manager, stalled_action="wait")
    api = api_as(manager)
    assert api.get(f"/api/v1/projects/{project.pk}/progress/").json()["stalled"] == 0
    report = api.get(f"/api/v1/projects/{project.pk}/tasks/stalled/").json()
    assert report["count"] == 1
    assert (report["workers"], report["action"]) == (2, "wait")
    [entry] = report["tasks"]
    assert entry["reason"] == "no_workers_left"
    assert (entry["answers"], entry["required_overlap"]) == (2, 3)
    assert "All 2 workers" in entry["message"]
    # Listing marked it: /progress/ counts it too, and the sweep keeps it (the project waits).
    assert api.get(f"/api/v1/projects/{project.pk}/progress/").json()["stalled"] == 1
    assert stalled.stalled_sweep(now=timezone.now() + timedelta(days=1)) == 0
    assert Task.objects.get().state == TaskState.OPEN
    # A worker joins: the task is theirs, and no longer stalled.
    newcomer = WorkerFactory.create()
    assert stalled.stalled_mark(project) == 0
    assert api.get(f"/api/v1/projects/{project.pk}/progress/").json()["stalled"] == 0
    assert answer(project, newcomer, BOX) is not None
    assert Task.objects.get().answers == 3


def test_by_default_a_stalled_task_closes_with_low_confidence_after_the_grace(manager) -> None:
    project, _ = disagreeing_task(manager)
    assert (project.stalled_action, project.stalled_grace_minutes) == ("close", 60)
    now = timezone.now()
    assert stalled.stalled_sweep(now=now) == 0  # marked, within its grace
    task = Task.objects.get()
    assert (task.state, task.stalled_at) == (TaskState.OPEN, now)
    assert stalled.stalled_sweep(now=now + timedelta(minutes=61)) == 1
    task = Task.objects.get()
    assert (task.state, task.low_confidence) == (TaskState.DONE, True)
    assert task.stalled_at == now  # kept: the reason it closed with what it had
    assert_counters_match_recount(project)


def test_the_manager_closes_or_reoffers_stalled_tasks_at_once(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    Project.objects.filter(pk=project.pk).update(stalled_action="wait")
    only = WorkerFactory.create()
    skip(project, only)
    skip(project, only)  # the site's only worker skipped both tasks
    api = api_as(manager)
    url = f"/api/v1/projects/{project.pk}/tasks/stalled/"
    assert api.get(url).json()["count"] == 2
    # Offered again to the worker who skipped them.
    first = Task.objects.order_by("pk").first()
    assert first is not None
    response = api.post(url, {"action": "reoffer", "tasks": [first.pk]}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["reoffered"], response.json()["count"]) == (1, 1)
    again = routing.assignment_next(project=project, worker=only)
    assert again is not None
    assert again.task_id == first.pk
    # The other is closed with what it has (nothing): done, low confidence.
    response = api.post(url, {"action": "close"}, format="json")
    assert (response.json()["closed"], response.json()["count"]) == (1, 0)
    closed = Task.objects.exclude(pk=first.pk).get()
    assert (closed.state, closed.low_confidence) == (TaskState.DONE, True)
    assert_counters_match_recount(project)
    # Bad input is a 400 naming the field; other roles never see the list.
    assert api.post(url, {"action": "ignore"}, format="json").status_code == 400
    assert api.post(url, {"action": "close", "tasks": "x"}, format="json").status_code == 400
    assert api_as(only).get(url).status_code == 403


def test_the_stalled_settings_are_validated(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    url = f"/api/v1/projects/{project.pk}/"
    api = api_as(manager)
    bad = api.patch(url, {"stalled_action": "forget"}, format="json")
    assert bad.status_code == 400
    assert "stalled_action" in str(bad.json())
    ok = api.patch(url, {"stalled_action": "wait", "stalled_grace_minutes": 5}, format="json")
    assert ok.status_code == 200
    assert (ok.json()["stalled_action"], ok.json()["stalled_grace_minutes"]) == ("wait", 5)


def test_a_suspended_workers_answer_stops_holding_a_slot_on_open_tasks(
    manager, django_capture_on_commit_callbacks
) -> None:
    # Overlap fixed at 2: without this, the suspended worker's answer filled one of the two
    # slots, the task reached its maximum and closed with low confidence on one answer.
    project = project_with_tasks(manager, tasks=1, overlap=2)
    suspended, second, third = (WorkerFactory.create() for _ in range(3))
    answer(project, suspended)
    with django_capture_on_commit_callbacks(execute=True):
        qa_services.worker_suspend(
            project=project, worker_id=suspended.pk, by=manager, reason="Spam."
        )
    task = Task.objects.get()
    assert (task.state, task.answers) == (TaskState.OPEN, 0)
    assert_counters_match_recount(project)
    answer(project, second)
    assert Task.objects.get().state == TaskState.OPEN
    answer(project, third)
    task = Task.objects.get()
    assert (task.state, task.answers, task.low_confidence) == (TaskState.DONE, 2, False)
    assert_counters_match_recount(project)


def test_task_ids_beyond_a_database_integer_are_a_400(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    url = f"/api/v1/projects/{project.pk}/tasks/stalled/"
    response = api_as(manager).post(url, {"action": "close", "tasks": [2**63]}, format="json")
    assert response.status_code == 400
    assert "tasks" in response.json()["errors"]
