"""Image files go only to those entitled: the project's managers and clients, and a worker
while holding an unexpired lease on one of the image's tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from rest_framework.test import APIClient

from tasks.models import Assignment, AssignmentStatus, Task
from tasks.services import project_client_add
from tests import images
from tests.factories import (
    ClientFactory,
    ManagerFactory,
    WorkerFactory,
    image_ready,
    project_create,
)

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


@pytest.fixture
def image(manager):
    project = project_create(manager)
    image = image_ready(project)
    image.file.name = default_storage.save(image.file.name, ContentFile(images.jpeg()))
    image.save()
    return image


def lease(worker, task: Task, expires_in: timedelta) -> Assignment:
    now = timezone.now()
    return Assignment.objects.create(
        task=task, project=task.project, worker=worker, status=AssignmentStatus.LEASED,
        leased_at=now, expires_at=now + expires_in,
    )  # fmt: skip


def status_for(client: APIClient, image) -> int:
    return client.get(f"/api/v1/images/{image.pk}/file/").status_code


def test_managers_and_clients_of_the_project(api_as, manager, image) -> None:
    response = api_as(manager).get(f"/api/v1/images/{image.pk}/file/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"].startswith("private")
    assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"
    client = ClientFactory.create()
    assert status_for(api_as(client), image) == 404
    project_client_add(project=image.project, username=client.username)
    assert status_for(api_as(client), image) == 200
    assert status_for(api_as(ManagerFactory.create()), image) == 404


def test_workers_only_while_leasing_a_task_of_the_image(api_as, image) -> None:
    worker = WorkerFactory.create()
    assert status_for(api_as(worker), image) == 404
    assignment = lease(worker, image.tasks.get(), timedelta(minutes=5))
    assert status_for(api_as(worker), image) == 200
    assert status_for(api_as(WorkerFactory.create()), image) == 404
    assignment.expires_at = timezone.now() - timedelta(seconds=1)
    assignment.save()
    assert status_for(api_as(worker), image) == 404
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.expires_at = timezone.now() + timedelta(minutes=5)
    assignment.save()
    assert status_for(api_as(worker), image) == 404


def test_anonymous_and_guessed_ids(api, api_as, manager, image) -> None:
    assert status_for(api, image) == 401
    assert api_as(manager).get("/api/v1/images/987654/file/").status_code == 404
    assert api_as(manager).get(f"/api/v1/images/{image.pk}/thumbnail/").status_code == 404
