from __future__ import annotations

import pytest

from qa.models import GoldAnswer
from tasks.models import ImageStatus, Task
from tests.factories import ManagerFactory, image_ready, project_create

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


@pytest.fixture
def project(manager):
    return project_create(
        manager, kind="bbox", labels=["car", "tree"], tile_size=1024, tile_overlap=128
    )


def post_gold(client, project, body):
    return client.post(f"/api/v1/projects/{project.pk}/gold/", body, format="json")


def test_gold_marks_every_tile_of_the_image(api_as, manager, project) -> None:
    image = image_ready(project, width=2000, height=1000)
    assert Task.objects.filter(image=image).count() > 1
    annotations = [{"label": "car", "bbox": [10, 10, 100, 50]}]
    response = post_gold(api_as(manager), project, {"image": image.pk, "annotations": annotations})
    assert response.status_code == 201, response.json()
    assert set(Task.objects.filter(image=image).values_list("is_gold", flat=True)) == {True}
    assert GoldAnswer.objects.get(image=image).annotations == [
        {"label": "car", "bbox": [10.0, 10.0, 100.0, 50.0]}
    ]
    assert response.json()["created"] is True
    # Replacing it keeps one answer, and says it replaced one.
    response = post_gold(api_as(manager), project, {"image": image.pk, "annotations": []})
    assert response.status_code == 201
    assert response.json()["created"] is False
    assert GoldAnswer.objects.count() == 1
    # Removing it unmarks the tasks.
    assert (
        api_as(manager).delete(f"/api/v1/projects/{project.pk}/gold/{image.pk}/").status_code == 204
    )
    assert not Task.objects.filter(image=image, is_gold=True).exists()


@pytest.mark.parametrize(
    ("annotations", "where"),
    [
        ([{"label": "bus", "bbox": [0, 0, 5, 5]}], "annotations[0].label"),
        ([{"label": "car", "bbox": [300, 200, 50, 50]}], "annotations[0].bbox"),
        ([{"label": "car", "bbox": [0, 0, -5, 5]}], "annotations[0].bbox"),
        ([{"label": "car", "bbox": "0,0,5,5"}], "annotations[0].bbox"),
        ({"label": "car"}, "annotations"),
        (None, "annotations"),
    ],
)
def test_gold_is_validated_against_labels_and_image_bounds(
    api_as, manager, project, annotations, where
) -> None:
    image = image_ready(project, width=320, height=240)
    response = post_gold(api_as(manager), project, {"image": image.pk, "annotations": annotations})
    assert response.status_code == 400, response.json()
    assert where in response.json()["errors"], response.json()
    assert not GoldAnswer.objects.exists()
    assert not Task.objects.filter(is_gold=True).exists()


def test_gold_for_an_unknown_or_foreign_image_is_a_404(api_as, manager, project) -> None:
    other_project = project_create(ManagerFactory.create())
    foreign = image_ready(other_project)
    for image_id in (foreign.pk, 999999, "abc", True):
        response = post_gold(api_as(manager), project, {"image": image_id, "annotations": []})
        assert response.status_code == 404, image_id


def test_gold_waits_for_the_image_to_be_ready(api_as, manager, project) -> None:
    image = image_ready(project)
    image.status = ImageStatus.PENDING
    image.save()
    response = post_gold(api_as(manager), project, {"image": image.pk, "annotations": []})
    assert response.status_code == 409


def test_only_the_projects_managers_set_gold(api_as, manager, worker, client_user, project) -> None:
    image = image_ready(project)
    body = {"image": image.pk, "annotations": []}
    assert post_gold(api_as(worker), project, body).status_code == 403
    assert post_gold(api_as(client_user), project, body).status_code == 403
    assert post_gold(api_as(ManagerFactory.create()), project, body).status_code == 404
    assert api_as(worker).get(f"/api/v1/projects/{project.pk}/gold/").status_code == 403
