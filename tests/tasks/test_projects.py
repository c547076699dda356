from __future__ import annotations

import pytest

from tasks.models import Label, Project, ProjectMember
from tests.factories import ClientFactory, ManagerFactory, image_ready, project_create

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

VALID = {
    "name": "Street cars",
    "instructions": "Box every car.",
    "kind": "bbox",
    "labels": ["car", {"name": "truck", "color": "#112233"}],
    "min_overlap": 2,
    "max_overlap": 4,
    "agreement_threshold": 0.8,
    "gold_rate": 0.1,
    "reward": "0.05",
    "currency": "usd",
    "assignment_seconds": 300,
    "min_worker_score": 0.6,
}


def test_manager_creates_a_project(api_as, manager) -> None:
    response = api_as(manager).post("/api/v1/projects/", VALID, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "draft"
    assert body["reward"] == "0.05"
    assert body["currency"] == "USD"
    assert body["labels"][1] == {"name": "truck", "color": "#112233"}
    assert body["labels"][0]["color"].startswith("#")
    project = Project.objects.get(pk=body["id"])
    assert project.reward == 5  # minor units
    assert ProjectMember.objects.filter(project=project, user=manager, role="manager").exists()


def test_keypoint_labels_carry_their_keypoint_names(api_as, manager) -> None:
    data = {**VALID, "kind": "keypoints",
            "labels": [{"name": "person", "keypoints": ["nose", "left_eye", "right_eye"]}]}  # fmt: skip
    response = api_as(manager).post("/api/v1/projects/", data, format="json")
    assert response.status_code == 201, response.json()
    assert Label.objects.get(name="person").keypoints == ["nose", "left_eye", "right_eye"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_overlap": 3, "max_overlap": 2}, "max_overlap"),
        ({"gold_rate": 1.0}, "gold_rate"),
        ({"gold_rate": -0.1}, "gold_rate"),
        ({"reward": "-1"}, "reward"),
        ({"reward": "0.001"}, "reward"),
        ({"reward": "lots"}, "reward"),
        ({"reward": 1e308}, "reward"),  # more than a 64-bit column of cents holds
        ({"reward": "1" + "0" * 30}, "reward"),
        ({"budget": "1e+40"}, "budget"),
        ({"currency": "dollars"}, "currency"),
        ({"labels": []}, "labels"),
        ({"labels": ["car", "Car"]}, "labels"),
        ({"labels": [""]}, "labels"),
        ({"labels": "car"}, "labels"),
        ({"labels": [{"name": "car", "color": "red"}]}, "labels"),
        ({"labels": [{"name": "car", "keypoints": ["a"]}]}, "labels"),
        ({"kind": "video"}, "kind"),
        ({"agreement_threshold": 2}, "agreement_threshold"),
        ({"assignment_seconds": 5}, "assignment_seconds"),
        ({"tile_size": 100}, "tile_size"),
        ({"name": ""}, "name"),
        ({"min_overlap": "three"}, "min_overlap"),
    ],
)
def test_invalid_settings_are_rejected_naming_the_field(api_as, manager, change, field) -> None:
    response = api_as(manager).post("/api/v1/projects/", {**VALID, **change}, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert not Project.objects.exists()


def test_keypoint_projects_need_keypoint_names(api_as, manager) -> None:
    data = {**VALID, "kind": "keypoints", "labels": ["person"]}
    response = api_as(manager).post("/api/v1/projects/", data, format="json")
    assert response.status_code == 400
    assert "labels" in response.json()["errors"]


def test_workers_and_clients_cannot_create_projects(api_as, worker, client_user) -> None:
    assert api_as(worker).post("/api/v1/projects/", VALID, format="json").status_code == 403
    assert api_as(client_user).post("/api/v1/projects/", VALID, format="json").status_code == 403


def test_each_role_lists_what_it_may_see(api_as, manager, worker) -> None:
    mine = project_create(manager, name="Mine")
    theirs = project_create(ManagerFactory.create(), name="Theirs")
    client = ClientFactory.create()
    from tasks.services import project_client_add

    project_client_add(project=theirs, username=client.username)
    image_ready(theirs)
    from tasks.services import project_transition

    project_transition(project=theirs, action="start")

    def names(user) -> list[str]:
        return [p["name"] for p in api_as(user).get("/api/v1/projects/").json()["results"]]

    assert names(manager) == ["Mine"]
    assert names(client) == ["Theirs"]
    assert names(worker) == ["Theirs"]
    # Workers see what they need to work, not the project's configuration.
    worker_view = api_as(worker).get(f"/api/v1/projects/{theirs.pk}/").json()
    assert "gold_rate" not in worker_view
    assert "min_worker_score" not in worker_view
    # Another manager's project is a 404, not a 403: no hint that it exists.
    assert api_as(manager).get(f"/api/v1/projects/{theirs.pk}/").status_code == 404
    assert api_as(worker).get(f"/api/v1/projects/{mine.pk}/").status_code == 404


@pytest.mark.parametrize("role", ["manager", "worker", "client"])
def test_the_project_list_pages_for_each_role(api_as, manager, role, monkeypatch) -> None:
    from crowd.pagination import Page
    from tasks.services import project_client_add
    from tests.factories import WorkerFactory, project_with_tasks

    client = ClientFactory.create()
    projects = [project_with_tasks(manager, tasks=2, overlap=1) for _ in range(3)]
    for project in projects:
        project_client_add(project=project, username=client.username)
    user = {"manager": manager, "worker": WorkerFactory.create(), "client": client}[role]
    api = api_as(user)

    first = api.get("/api/v1/projects/?limit=2").json()
    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 3
    assert first["previous"] is None
    assert "limit=2" in first["next"]
    assert "offset=2" in first["next"]
    second = api.get(first["next"]).json()
    assert second["next"] is None
    listed = [p["id"] for p in first["results"] + second["results"]]
    assert listed == [p.pk for p in reversed(projects)]  # newest first, each once
    if role == "worker":
        assert [p["available"] for p in first["results"] + second["results"]] == [2, 2, 2]
    else:
        assert all("owner" in p for p in first["results"] + second["results"])

    # A client asking for more rows than a page holds gets a full page, and the rest after.
    monkeypatch.setattr(Page, "max_limit", 2)
    capped = api.get("/api/v1/projects/?limit=1000").json()
    assert len(capped["results"]) == 2
    assert "limit=2" in capped["next"]


def test_throughput_minutes_in_digits_other_than_ascii_are_a_400(api_as, manager) -> None:
    project = project_create(manager)
    for odd in ("\u00b2", "\u0661\u0662"):  # a superscript two; Arabic-Indic twelve
        response = api_as(manager).get(f"/api/v1/projects/{project.pk}/throughput/?minutes={odd}")
        assert response.status_code == 400, odd
        assert response.json()["code"] == "invalid"


def test_patch_updates_settings_and_kind_is_locked_once_tasks_exist(api_as, manager) -> None:
    project = project_create(manager)
    client = api_as(manager)
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"kind": "polygon"}, format="json")
    assert response.status_code == 200
    assert response.json()["kind"] == "polygon"
    image_ready(project)
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"kind": "bbox"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "kind_locked"
    # Labels may be added and recoloured, not removed, once tasks exist.
    labels = [{"name": "car", "color": "#000000"}, "tree", "bus"]
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"labels": labels}, format="json")
    assert response.status_code == 200, response.json()
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"labels": ["car"]}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "labels_locked"
    response = client.patch(f"/api/v1/projects/{project.pk}/", {"max_overlap": 1}, format="json")
    assert response.status_code == 400


def test_another_manager_cannot_patch(api_as, manager) -> None:
    project = project_create(manager)
    other = ManagerFactory.create()
    response = api_as(other).patch(f"/api/v1/projects/{project.pk}/", {"name": "x"}, format="json")
    assert response.status_code == 404


def test_start_needs_tasks_and_pause_resume(api_as, manager) -> None:
    project = project_create(manager)
    client = api_as(manager)
    response = client.post(f"/api/v1/projects/{project.pk}/start/")
    assert response.status_code == 409
    assert response.json()["code"] == "no_tasks"
    image_ready(project)
    assert client.post(f"/api/v1/projects/{project.pk}/start/").json()["state"] == "active"
    assert client.post(f"/api/v1/projects/{project.pk}/start/").json()["state"] == "active"
    assert client.post(f"/api/v1/projects/{project.pk}/pause/").json()["state"] == "paused"
    assert client.post(f"/api/v1/projects/{project.pk}/start/").json()["state"] == "active"


def test_grant_a_client(api_as, manager, worker) -> None:
    project = project_create(manager)
    client_user = ClientFactory.create(username="acme")
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/clients/", {"username": "ACME"}, format="json"
    )
    assert response.status_code == 201
    assert ProjectMember.objects.filter(project=project, user=client_user, role="client").exists()
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/clients/", {"username": worker.username}, format="json"
    )
    assert response.status_code == 400
    assert api_as(client_user).get(f"/api/v1/projects/{project.pk}/progress/").status_code == 200


def test_progress_counts_every_state(manager) -> None:
    """The progress counts (one statement of plain SQL) against the same counts through the
    ORM, with tasks and images in every state and answers in every status."""
    from django.db.models import Count, Q
    from django.utils import timezone

    from tasks import routing
    from tasks.models import Assignment, AssignmentStatus, Image, ImageStatus, Task, TaskState
    from tasks.selectors import project_progress
    from tests import factories
    from tests.factories import WorkerFactory, project_with_tasks

    project = project_with_tasks(manager, tasks=8, overlap=2)
    other = project_with_tasks(manager, tasks=3, overlap=1)  # counted for its own project only
    workers = [WorkerFactory.create() for _ in range(3)]
    box = [{"label": "car", "bbox": [1, 1, 10, 10]}]
    for worker in workers[:2]:  # two tasks done, answered by both
        for _ in range(2):
            lease = routing.assignment_next(project=project, worker=worker)
            assert lease is not None
            routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=box)
    routing.assignment_next(project=project, worker=workers[2])  # one task in progress
    skipped = routing.assignment_next(project=other, worker=workers[2])
    assert skipped is not None
    routing.assignment_skip(assignment_id=skipped.pk, worker=workers[2])
    gold = Task.objects.filter(project=project, state=TaskState.OPEN, open_leases=0).first()
    assert gold is not None
    Task.objects.filter(pk=gold.pk).update(is_gold=True)
    left = Task.objects.filter(project=project, state=TaskState.OPEN, is_gold=False).first()
    assert left is not None
    Task.objects.filter(pk=left.pk).update(stalled_at=timezone.now())
    images = list(Image.objects.filter(project=project).order_by("pk"))
    Image.objects.filter(pk=images[-1].pk).update(status=ImageStatus.FAILED)
    Image.objects.filter(pk=images[-2].pk).update(status=ImageStatus.PENDING)
    Image.objects.filter(pk=images[-3].pk).update(near_duplicate_of=images[0])
    answer = Assignment.objects.filter(project=project, status=AssignmentStatus.SUBMITTED).first()
    assert answer is not None
    Assignment.objects.filter(pk=answer.pk).update(status=AssignmentStatus.APPROVED)

    tasks = Task.objects.filter(project=project)
    images_of = Image.objects.filter(project=project)
    answered = [AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED]
    expected = {
        **tasks.aggregate(
            tasks=Count("pk"),
            done=Count("pk", filter=Q(state=TaskState.DONE)),
            in_progress=Count("pk", filter=Q(state=TaskState.OPEN, open_leases__gt=0)),
            open=Count("pk", filter=Q(state=TaskState.OPEN, open_leases=0)),
            gold=Count("pk", filter=Q(is_gold=True)),
            stalled=Count("pk", filter=Q(state=TaskState.OPEN, stalled_at__isnull=False)),
        ),
        "assignments_submitted": Assignment.objects.filter(
            project=project, status__in=answered
        ).count(),
        "images": images_of.aggregate(
            total=Count("pk"),
            pending=Count("pk", filter=Q(status=ImageStatus.PENDING)),
            ready=Count("pk", filter=Q(status=ImageStatus.READY)),
            failed=Count("pk", filter=Q(status=ImageStatus.FAILED)),
            near_duplicates=Count("pk", filter=Q(near_duplicate_of__isnull=False)),
        ),
    }
    assert project_progress(project) == expected
    # Every state is there to be counted.
    for key in ("done", "in_progress", "open", "gold", "stalled"):
        assert expected[key] > 0, key
    assert (expected["tasks"], expected["assignments_submitted"]) == (8, 4)
    assert expected["images"] == {
        "total": 8, "pending": 1, "ready": 6, "failed": 1, "near_duplicates": 1
    }  # fmt: skip
    empty = factories.project_create(manager)
    assert project_progress(empty) == {
        "tasks": 0, "done": 0, "in_progress": 0, "open": 0, "gold": 0, "stalled": 0,
        "assignments_submitted": 0,
        "images": {"total": 0, "pending": 0, "ready": 0, "failed": 0, "near_duplicates": 0},
    }  # fmt: skip


@pytest.mark.both_databases
def test_the_workers_project_list_costs_the_same_queries_for_any_number_of_projects(
    api_as, manager, worker
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks import events, routing
    from tasks.models import Assignment, AssignmentStatus
    from tasks.selectors import median_seconds_per_task
    from tests import factories

    def add_projects(count: int, seconds: list[int]) -> None:
        for _ in range(count):
            project = factories.project_with_tasks(manager, tasks=3, overlap=2)
            for spent in seconds:
                lease = routing.assignment_next(
                    project=project, worker=factories.WorkerFactory.create()
                )
                assert lease is not None
                Assignment.objects.filter(pk=lease.pk).update(
                    status=AssignmentStatus.SUBMITTED, time_spent_ms=spent * 1000
                )

    def listed() -> tuple[list[dict], int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/v1/projects/")
        assert response.status_code == 200
        return response.json()["results"], len(queries)

    client = api_as(worker)
    add_projects(1, [4, 10, 6])
    one, few_queries = listed()
    add_projects(7, [3, 5])
    many, many_queries = listed()
    assert len(one) == 1
    assert len(many) == 8
    assert many_queries == few_queries
    # The figures are those of each project, as the single-project reads compute them.
    for entry in many:
        project = Project.objects.get(pk=entry["id"])
        assert entry["available"] == events.available_slots(project.pk)
        median = median_seconds_per_task(project)
        assert median is not None
        assert entry["estimated_seconds"] == round(median, 1)
    figures = sorted((p["available"], p["estimated_seconds"]) for p in many)
    assert figures == [(3, 6.0)] + [(4, 4.0)] * 7
