"""``POST /assignments/{id}/submit/?next=1``: the answer and the next lease in one round trip
(shared/API.md). The lease is exactly what ``next/`` answers; a replay gets the same one; null
when nothing is left or the worker may not work on."""

from __future__ import annotations

import pytest

from qa.services import worker_suspend
from tasks import routing
from tasks.models import Assignment, AssignmentStatus
from tests.factories import project_with_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BOX = {"annotations": [{"label": "car", "bbox": [10, 10, 50, 40]}]}


def test_submit_with_next_hands_over_the_next_lease(manager, worker, api_as) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    api = api_as(worker)
    first = api.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    url = f"/api/v1/assignments/{first['id']}/submit/?next=1"
    done = api.post(url, BOX, format="json", HTTP_IDEMPOTENCY_KEY="a")
    assert done.status_code == 200, done.content
    body = done.json()
    assert (body["id"], body["status"], body["clipped"]) == (first["id"], "submitted", 0)
    lease = body["next"]
    assert lease["id"] != first["id"]
    assert lease["task"]["id"] != first["task"]["id"]
    # The same lease next/ would answer, field for field.
    again = api.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert (again.status_code, again.json()) == (201, lease)
    # A double click replays the submission and hands over the same lease, not a second one.
    replay = api.post(url, BOX, format="json", HTTP_IDEMPOTENCY_KEY="a")
    assert (replay.status_code, replay.json()) == (200, body)
    assert Assignment.objects.filter(worker=worker, status=AssignmentStatus.LEASED).count() == 1
    # The last task: its submission carries next null.
    last = api.post(f"/api/v1/assignments/{lease['id']}/submit/?next=1", BOX, format="json")
    assert last.status_code == 200, last.content
    assert last.json()["next"] is None
    assert "next_refused" not in last.json()


def test_without_next_the_response_is_as_before(manager, worker, api_as) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    response = api_as(worker).post(f"/api/v1/assignments/{lease.pk}/submit/", BOX, format="json")
    assert response.json() == {"id": lease.pk, "status": "submitted", "clipped": 0}
    off = api_as(worker).post(f"/api/v1/assignments/{lease.pk}/submit/?next=0", BOX, format="json")
    assert "next" not in off.json()


def test_a_worker_who_may_not_go_on_gets_next_null_and_the_reason(manager, worker, api_as) -> None:
    project = project_with_tasks(manager, tasks=3, overlap=1)
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    worker_suspend(project=project, worker_id=worker.pk, by=manager, reason="Random boxes.")
    response = api_as(worker).post(
        f"/api/v1/assignments/{lease.pk}/submit/?next=1", BOX, format="json"
    )
    assert response.status_code == 200, response.content  # the answer to a held lease counts
    body = response.json()
    assert body["next"] is None
    assert body["next_refused"]["code"] == "not_eligible"
    assert "Random boxes." in body["next_refused"]["detail"]


def test_a_bad_next_value_is_a_400(manager, worker, api_as) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    response = api_as(worker).post(
        f"/api/v1/assignments/{lease.pk}/submit/?next=maybe", BOX, format="json"
    )
    assert response.status_code == 400
    assert "next" in response.json()["errors"]
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.LEASED
