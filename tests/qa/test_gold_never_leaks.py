"""Gold answers never leave the server in a worker-visible response, and gold tasks look
exactly like real ones: a walk over every API endpoint as a worker holding a gold lease."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from qa.services import gold_set
from tasks import routing
from tasks.models import Task
from tasks.services import project_transition
from tests.factories import image_ready, project_create

pytestmark = [pytest.mark.both_databases]

# Coordinates nobody would draw by chance: if they appear in a response, gold leaked.
GOLD = [{"label": "car", "bbox": [123.25, 77.75, 41.5, 29.125]}]
NUMBERS = ["123.25", "77.75", "41.5", "29.125"]
WORDS = ["is_gold", "gold"]


def api_routes() -> list[str]:
    """Every route under /api/v1/, as a pattern string like ``projects/<int:project_id>/``."""
    out: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                out.append(prefix + str(p.pattern))

    walk(get_resolver().url_patterns, "")
    return sorted(r.removeprefix("api/v1/") for r in out if r.startswith("api/v1/"))


def fill(route: str, ids: dict[str, int]) -> str:
    return "/api/v1/" + re.sub(r"<int:(\w+)>", lambda m: str(ids[str(m.group(1))]), route)


def assert_no_gold(body: str, where: str) -> None:
    lowered = body.lower()
    for word in WORDS:
        assert word not in lowered, f"{where} shows {word!r}: {body[:300]}"
    # A number, not a run of digits inside another (a timestamp's 02:28:41.592372).
    for number in NUMBERS:
        found = re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", body)
        assert found is None, f"{where} shows {number!r}: {body[:300]}"


@pytest.mark.django_db
def test_every_worker_visible_response_is_free_of_gold(api_as, manager, worker) -> None:
    project = project_create(manager, kind="bbox", labels=["car"], gold_rate=0.1, tile_size=0)
    gold_image = image_ready(project, seed=1)
    real_image = image_ready(project, seed=2)
    gold_set(project=project, image_id=gold_image.pk, annotations=GOLD, user=manager)
    project = project_transition(project=project, action="start")
    client = api_as(worker)

    # A gold lease and a real lease, through the API, look the same.
    gold_lease = routing.assignment_next(project=project, worker=worker, rand=lambda: 0.0)
    assert gold_lease is not None
    assert Task.objects.get(pk=gold_lease.task_id).is_gold
    gold_view = client.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert gold_view.status_code == 201
    assert_no_gold(gold_view.content.decode(), "next (gold)")

    ids = {
        "project_id": project.pk,
        "image_id": gold_image.pk,
        "assignment_id": gold_lease.pk,
        "task_id": gold_lease.task_id,
        "worker_id": worker.pk,
        "export_id": 1,
        "payout_id": 1,
        "batch_id": 1,
        "import_id": 1,
        "run_id": 1,
    }
    visited = []
    for route in api_routes():
        if "<" in route and not all(
            f"<int:{k}>" in route for k in re.findall(r"<int:(\w+)>", route)
        ):
            continue
        url = fill(route, ids)
        response = client.get(url)
        visited.append((url, response.status_code))
        assert response.status_code < 500, url
        assert_no_gold(response.content.decode(errors="replace"), f"GET {url}")
    # Submitting the gold answer (a perfect copy, even) reveals nothing either.
    submitted = client.post(
        f"/api/v1/assignments/{gold_lease.pk}/submit/", {"annotations": GOLD}, format="json"
    )
    assert submitted.status_code == 200
    assert_no_gold(submitted.content.decode(), "submit (gold)")
    assert set(submitted.json()) == {"id", "status", "clipped"}
    real_view = client.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert real_view.status_code == 201
    assert real_view.json()["task"]["image"] == real_image.pk
    assert _shape(real_view.json()) == _shape(gold_view.json())
    for url in (
        "/api/v1/me/",
        "/api/v1/me/assignments/",
        f"/api/v1/projects/{project.pk}/",
        f"/api/v1/projects/{project.pk}/me/",
        "/api/v1/projects/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_gold(response.content.decode(), f"GET {url} after the gold answer")
    # The walk reached the endpoints a worker has: it is not vacuous.
    ok = {url for url, status in visited if status == 200}
    assert f"/api/v1/projects/{project.pk}/me/" in ok
    assert "/api/v1/me/assignments/" in ok


def _shape(value):
    """The keys and value types of a JSON document, recursively."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


@pytest.mark.django_db(transaction=True)
async def test_the_worker_channel_snapshot_is_free_of_gold() -> None:
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from crowd.asgi import application
    from tests.factories import ManagerFactory, WorkerFactory, token_for

    @database_sync_to_async
    def setup() -> str:
        manager, worker = ManagerFactory.create(), WorkerFactory.create()
        project = project_create(manager, kind="bbox", labels=["car"], tile_size=0)
        image = image_ready(project, seed=1)
        image_ready(project, seed=2)
        gold_set(project=project, image_id=image.pk, annotations=GOLD, user=manager)
        project = project_transition(project=project, action="start")
        routing.assignment_next(project=project, worker=worker, rand=lambda: 0.0)
        return token_for(worker)

    token = await setup()
    communicator = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from()
    assert_no_gold(json.dumps(snapshot), "/ws/worker/ snapshot")
    await communicator.disconnect()
