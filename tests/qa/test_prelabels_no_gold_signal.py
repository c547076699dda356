"""Pre-labels never tell gold from real work: a walk over a crowd's leases and answers with
pre-labels on (and a held-out share) finds the same response shape, the same pre-labels and
the same absence of them on gold tasks as on real ones, and the same queries behind them."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from qa.services import gold_set
from tasks import prelabels
from tasks.models import Prediction, PredictionSource, Task
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.test_gold_never_leaks import GOLD, _shape, assert_no_gold

pytestmark = [pytest.mark.both_databases]

IMAGES = 16  # half of them gold


def model_items(seed: int) -> list[dict[str, Any]]:
    """Two boxes per image, where the model put them (not where gold is)."""
    return [
        {"label": "car", "bbox": [10.0 + seed, 12.0, 40.0, 30.0], "score": 0.91},
        {"label": "car", "bbox": [150.0, 90.0 + seed, 60.0, 45.0], "score": 0.55},
    ]


def crowd_project(manager, *, holdout: float):
    project = project_create(
        manager, kind="bbox", labels=["car"], gold_rate=0.5, tile_size=0, min_overlap=3,
        max_overlap=3, prelabels=True, prelabel_holdout=holdout,
    )  # fmt: skip
    images = [image_ready(project, seed=i + 1) for i in range(IMAGES)]
    for i, image in enumerate(images):
        if i % 2 == 0:
            gold_set(project=project, image_id=image.pk, annotations=GOLD, user=manager)
        Prediction.objects.create(
            project=project, image=image, model_version="detector-3", annotations=model_items(i),
            source=PredictionSource.IMPORT,
        )  # fmt: skip
    return project_transition(project=project, action="start")


def strip(body: dict[str, Any]) -> dict[str, Any]:
    """The lease without what differs from task to task by design."""
    return {k: v for k, v in body.items() if k not in ("prelabels",)}


@pytest.mark.django_db
@pytest.mark.parametrize("holdout", [0.0, 0.4, 1.0])
def test_leases_and_answers_show_no_gold_signal_with_or_without_prelabels(
    manager, api_as, holdout
) -> None:
    project = crowd_project(manager, holdout=holdout)
    gold_tasks = set(
        Task.objects.filter(project=project, is_gold=True).values_list("pk", flat=True)
    )
    expected = {
        t.pk: model_items(i)
        for i, t in enumerate(Task.objects.filter(project=project).order_by("image_id"))
    }
    seen: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    submits: dict[bool, set[frozenset[str]]] = {True: set(), False: set()}
    for n in range(6):
        api = api_as(WorkerFactory.create(username=f"walker{n}"))
        while True:
            response = api.post(f"/api/v1/projects/{project.pk}/assignments/next/")
            if response.status_code == 204:
                break
            assert response.status_code == 201, response.content
            body = response.json()
            task = body["task"]["id"]
            is_gold = task in gold_tasks
            text = response.content.decode()
            if is_gold:
                assert_no_gold(text, "lease (gold, with pre-labels)")
            # The pre-labels are the draw's and the model's alone: gold or not, a task held
            # out gets none and every other task gets its image's prediction.
            if prelabels.held_out(project, task):
                assert body["prelabels"] == []
            else:
                want = [{**item, "model_version": "detector-3"} for item in expected[task]]
                assert body["prelabels"] == want
            seen[is_gold].append(body)
            # Accept every pre-label as it is.
            answer = [
                {"label": p["label"], "bbox": p["bbox"], "prelabel": k}
                for k, p in enumerate(body["prelabels"])
            ]
            done = api.post(
                f"/api/v1/assignments/{body['id']}/submit/", {"annotations": answer}, format="json"
            )
            assert done.status_code == 200, done.content
            submits[is_gold].add(frozenset(done.json()))
            if is_gold:
                assert_no_gold(done.content.decode(), "submit (gold, with pre-labels)")
    assert seen[True], "the walk met gold tasks"
    assert seen[False], "the walk met real tasks"
    # Every lease has the same shape, gold or not (pre-labels aside, compared next).
    shapes = {repr(_shape(strip(body))) for bodies in seen.values() for body in bodies}
    assert len(shapes) == 1, shapes
    item_shapes = {
        repr(_shape(item)) for bodies in seen.values() for b in bodies for item in b["prelabels"]
    }
    assert len(item_shapes) <= 1, item_shapes
    assert submits[True] == submits[False] == {frozenset({"id", "status", "clipped"})}
    # The share with pre-labels is that of the draw on both sides.
    for is_gold, bodies in seen.items():
        empty = [not b["prelabels"] for b in bodies]
        drawn = [prelabels.held_out(project, b["task"]["id"]) for b in bodies]
        assert empty == drawn, f"gold={is_gold}"
    if holdout == 0.0:
        assert not any(not b["prelabels"] for bodies in seen.values() for b in bodies)
    if holdout == 1.0:
        assert all(not b["prelabels"] for bodies in seen.values() for b in bodies)


@pytest.mark.django_db
def test_reading_prelabels_costs_the_same_queries_for_every_task(manager) -> None:
    """No timing signal from the database: gold, real, held-out or not, the same queries."""
    project = crowd_project(manager, holdout=0.5)
    tasks = list(Task.objects.filter(project=project).select_related("image"))
    counts = set()
    kinds = set()
    for task in tasks:
        with CaptureQueriesContext(connection) as queries:
            prelabels.lease_prelabels(project, task)
        counts.add(len(queries))
        kinds.add((task.is_gold, prelabels.held_out(project, task.pk)))
    assert counts == {1}
    assert len(kinds) >= 3  # the loop met gold and real tasks, held out and not


@pytest.mark.django_db
def test_the_manager_is_warned_when_gold_images_lack_predictions(manager, api_as) -> None:
    project = crowd_project(manager, holdout=0.1)
    gold_image = Task.objects.filter(project=project, is_gold=True).values_list(
        "image_id", flat=True
    )[0]
    Prediction.objects.filter(image_id=gold_image).delete()
    body = api_as(manager).get(f"/api/v1/projects/{project.pk}/prelabels/effect/").json()
    coverage = body["coverage"]
    assert (coverage["gold_images"], coverage["gold_images_predicted"]) == (8, 7)
    assert (coverage["images"], coverage["images_predicted"]) == (16, 15)
    assert len(coverage["warnings"]) == 1
    assert "hints at gold" in coverage["warnings"][0]
    Prediction.objects.create(
        project=project, image_id=gold_image, model_version="detector-3", annotations=[],
        source=PredictionSource.IMPORT,
    )  # fmt: skip
    body = api_as(manager).get(f"/api/v1/projects/{project.pk}/prelabels/effect/").json()
    assert body["coverage"]["warnings"] == []
