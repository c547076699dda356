"""The shapes of the quality routes: a consensus run is one object whichever way it is read,
gold answers and consensus results are pages, and writes answer the statuses they document."""

from __future__ import annotations

import pytest

from qa.merge import consensus_compute
from qa.services import gold_set
from tasks.services import project_client_add
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import answer, classification_project, no_gold, truthfully

pytestmark = pytest.mark.django_db

RUN_KEYS = {
    "id", "status", "method", "params", "images_total", "images_done", "error", "created_at",
    "finished_at",
}  # fmt: skip


def test_a_consensus_run_reads_as_it_was_started(api_as, manager, client_user) -> None:
    project, _ = classification_project(manager, images=2, gold=1)
    url = f"/api/v1/projects/{project.pk}/consensus/"
    project_client_add(project=project, username=client_user.username)
    missing = api_as(client_user).get(url)
    assert missing.status_code == 404
    assert missing.json()["code"] == "no_consensus_run"

    started = api_as(manager).post(url)
    assert started.status_code == 202
    run = started.json()
    assert set(run) == RUN_KEYS
    assert run["status"] == "queued"
    assert api_as(client_user).get(url).json() == run

    consensus_compute(run_id=run["id"])
    latest = api_as(manager).get(url)
    assert latest.status_code == 200
    body = latest.json()
    assert set(body) == RUN_KEYS
    assert (body["id"], body["status"]) == (run["id"], "done")
    # Classification merges by a vote or Dawid-Skene: no quorum to record.
    assert set(body["params"]) == {"iou_threshold"}


def test_consensus_results_are_a_page(api_as, manager) -> None:
    project, truth = classification_project(manager, images=3, gold=1)
    worker = WorkerFactory.create()
    while answer(project, worker, truthfully(truth), rand=no_gold) is not None:
        pass
    run = api_as(manager).post(f"/api/v1/projects/{project.pk}/consensus/").json()
    consensus_compute(run_id=run["id"])
    url = f"/api/v1/projects/{project.pk}/consensus/results/"
    page = api_as(manager).get(f"{url}?limit=3").json()
    assert page["count"] == 4  # three answered images and the gold one
    assert len(page["results"]) == 3
    assert page["next"]
    assert page["previous"] is None
    rest = api_as(manager).get(page["next"]).json()
    assert rest["next"] is None
    images = [r["image"] for r in page["results"] + rest["results"]]
    assert images == sorted(truth)


def test_gold_is_set_with_a_201_and_listed_as_a_page(api_as, manager) -> None:
    project = project_create(manager, kind="bbox", labels=["car"])
    images = [image_ready(project, seed=i) for i in range(3)]
    car = [{"label": "car", "bbox": [1, 1, 5, 5]}]
    url = f"/api/v1/projects/{project.pk}/gold/"
    first = api_as(manager).post(url, {"image": images[0].pk, "annotations": car}, format="json")
    assert first.status_code == 201
    assert first.json()["created"] is True
    for image in images[1:]:
        gold_set(project=project, image_id=image.pk, annotations=car, user=manager)
    page = api_as(manager).get(f"{url}?limit=2").json()
    assert page["count"] == 3
    assert [g["image"] for g in page["results"]] == [images[0].pk, images[1].pk]
    assert set(page["results"][0]) == {"image", "annotations", "tasks", "updated_at"}
    assert page["results"][0]["annotations"][0]["label"] == "car"
    last = api_as(manager).get(page["next"]).json()
    assert [g["image"] for g in last["results"]] == [images[2].pk]


def test_the_worker_list_stays_a_bare_array(api_as, manager) -> None:
    project, truth = classification_project(manager, images=2, gold=0)
    answer(project, WorkerFactory.create(), truthfully(truth), rand=no_gold)
    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/?limit=0").json()
    assert isinstance(listed, list)
    assert len(listed) == 1
