"""Gold answers and suspensions over HTTP: what a request may say, and what a refusal says."""

from __future__ import annotations

import pytest

from qa.models import GoldAnswer, WorkerScore
from tests.factories import image_ready, project_create

pytestmark = pytest.mark.django_db

CAR = {"label": "car", "bbox": [10, 10, 50, 50]}


@pytest.fixture
def project(manager):
    return project_create(manager, kind="bbox", labels=["car", "tree"])


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"image": "IMAGE"}, {"annotations": ["This field is required."]}),
        ({"image": "IMAGE", "annotations": "car"}, {"annotations": ["Give the annotations as a list."]}),
        ({"image": "IMAGE", "annotations": None}, {"annotations": ["Give the annotations as a list."]}),
        ({"image": "IMAGE", "annotations": [CAR, 1, "x"]}, {"annotations[1]": ["Each annotation is a JSON object."], "annotations[2]": ["Each annotation is a JSON object."]}),
        ([CAR], {"non_field_errors": ['Send {"image": id, "annotations": [...]}.']}),
    ],
)  # fmt: skip
def test_gold_that_is_not_valid_is_refused(api_as, manager, project, body, errors) -> None:
    image = image_ready(project)
    if isinstance(body, dict):
        body = {k: image.pk if v == "IMAGE" else v for k, v in body.items()}
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/gold/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == errors
    assert not GoldAnswer.objects.exists()


@pytest.mark.parametrize("image", [None, "abc", True, 1.0, 10**30])
def test_gold_for_no_image_by_that_id_is_a_404(api_as, manager, project, image) -> None:
    image_ready(project)
    body = {"image": image, "annotations": [CAR]}
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/gold/", body, format="json")
    assert response.status_code == 404, response.content


def test_a_suspension_reason_is_text_and_may_be_left_out(api_as, manager, project) -> None:
    from tasks import routing
    from tasks.services import project_transition
    from tests.factories import WorkerFactory

    image_ready(project)
    project = project_transition(project=project, action="start")
    worker = WorkerFactory.create()
    assert routing.assignment_next(project=project, worker=worker) is not None
    url = f"/api/v1/projects/{project.pk}/workers/{worker.pk}/suspend/"
    refused = api_as(manager).post(url, {"reason": 5}, format="json")
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"reason": ["Give the reason as text."]}
    assert api_as(manager).post(url, {}, format="json").status_code == 200
    row = WorkerScore.objects.get(project=project, worker=worker)
    assert (row.status, row.status_reason) == ("suspended", "Suspended by the project's manager.")
