"""A submission to an assignment already answered: an exact replay or the same
Idempotency-Key gets the original 200; a different answer is a 409 naming the answer kept."""

from __future__ import annotations

import pytest

from tasks import routing
from tasks.models import Assignment
from tests.factories import project_with_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BOX = {"annotations": [{"label": "car", "bbox": [10, 10, 50, 40]}]}
OTHER = {"annotations": [{"label": "car", "bbox": [200, 100, 30, 30]}]}


def test_a_different_answer_to_an_answered_task_is_a_conflict(manager, worker, api_as) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    api = api_as(worker)
    url = f"/api/v1/assignments/{lease.pk}/submit/"
    first = api.post(url, BOX, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 200, first.content
    assert first.json() == {"id": lease.pk, "status": "submitted", "clipped": 0}
    # A retry of the same request, and the same answer sent again (by any key), are replays.
    assert api.post(url, BOX, format="json", HTTP_IDEMPOTENCY_KEY="k-1").json() == first.json()
    same = api.post(url, BOX, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert (same.status_code, same.json()) == (200, first.json())
    # The same key with another body is the retry of the first request: the first result.
    assert api.post(url, OTHER, format="json", HTTP_IDEMPOTENCY_KEY="k-1").status_code == 200
    # A different answer under a new key is refused, naming what was kept.
    refused = api.post(url, OTHER, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert body["code"] == "already_submitted"
    assert "different answer" in body["detail"]
    assert body["errors"]["assignment"] == lease.pk
    assert body["errors"]["status"] == "submitted"
    stored = Assignment.objects.get(pk=lease.pk)
    assert stored.answer == BOX["annotations"]
    # An invalid answer to an answered task is still a 400 that says what is wrong.
    bad = api.post(url, {"annotations": [{"label": "bus", "bbox": [1, 1, 2, 2]}]}, format="json")
    assert bad.status_code == 400


def test_a_box_a_little_past_the_edge_is_clipped_and_the_response_says_so(
    manager, worker, api_as
) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)  # 640 x 480 images
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    url = f"/api/v1/assignments/{lease.pk}/submit/"
    far = {"annotations": [{"label": "car", "bbox": [600, 400, 100, 50]}]}
    assert api_as(worker).post(url, far, format="json").status_code == 400
    near = {"annotations": [
        {"label": "car", "bbox": [-2, 10, 50, 40]},
        {"label": "car", "bbox": [600, 440, 42, 41]},
        {"label": "tree", "bbox": [100, 100, 20, 20]},
    ]}  # fmt: skip
    response = api_as(worker).post(url, near, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["clipped"] == 2
    stored = Assignment.objects.get(pk=lease.pk).answer
    assert stored is not None
    assert [a["bbox"] for a in stored] == [
        [0, 10, 48, 40], [600, 440, 40, 40], [100, 100, 20, 20]
    ]  # fmt: skip
