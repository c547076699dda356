"""Guessed ids: a user who walks the id space finds nothing of anyone else's. Every request for
another worker's lease, another manager's project, image, export, worker or gold answer is a
404 (the same as an id that does not exist), and the database is unchanged afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from crowd.models import User
from payouts.models import Bonus, LedgerEntry, Payout, PayoutBatch
from qa.models import ConsensusRun, DatasetExport, GoldAnswer, WorkerScore
from tasks.models import Assignment, Image, ProjectMember, Task
from tests.factories import token_for
from tests.security.world import World

pytestmark = pytest.mark.django_db


def as_user(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def snapshot() -> dict[str, Any]:
    """Every row a guessed id could change, with the fields that would show it."""
    return {
        "assignments": list(Assignment.objects.order_by("pk").values_list(
            "pk", "status", "answer", "counted", "reviewed_at", "review_reason", "expires_at")),
        "tasks": list(Task.objects.order_by("pk").values_list("pk", "state", "answers", "open_leases", "is_gold")),
        "images": list(Image.objects.order_by("pk").values_list("pk", "project_id", "status", "file")),
        "gold": list(GoldAnswer.objects.order_by("pk").values_list("pk", "image_id", "annotations")),
        "scores": list(WorkerScore.objects.order_by("pk").values_list("pk", "status", "status_reason")),
        "ledger": LedgerEntry.objects.count(),
        "bonuses": Bonus.objects.count(),
        "payouts": list(Payout.objects.order_by("pk").values_list("pk", "status", "batch_id")),
        "batches": list(PayoutBatch.objects.order_by("pk").values_list("pk", "paid_at")),
        "exports": DatasetExport.objects.count(),
        "runs": ConsensusRun.objects.count(),
        "members": ProjectMember.objects.count(),
    }  # fmt: skip


def assert_404(response: Any, where: str) -> None:
    assert response.status_code == 404, (
        f"{where}: {response.status_code} {response.content[:200]!r}"
    )
    body = response.json()
    assert body["code"] == "not_found", where


def max_id(model: Any) -> int:
    return int(model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0)


def test_a_worker_walking_assignment_ids_touches_only_their_own(world: World) -> None:
    intruder = world.b.worker
    own = set(Assignment.objects.filter(worker=intruder).values_list("pk", flat=True))
    client = as_user(intruder)
    before = snapshot()
    for assignment_id in range(1, max_id(Assignment) + 3):
        if assignment_id in own:
            continue
        for action, body in (("submit", {"annotations": []}), ("skip", None)):
            response = client.post(
                f"/api/v1/assignments/{assignment_id}/{action}/", body, format="json"
            )
            assert_404(response, f"{action} of assignment {assignment_id}")
    assert snapshot() == before
    # The lease that was guessed still belongs to its worker, who can answer it.
    response = as_user(world.a.worker).post(
        f"/api/v1/assignments/{world.a.lease.pk}/submit/", {"annotations": []}, format="json"
    )
    assert response.status_code == 200


def test_another_managers_answers_cannot_be_reviewed(world: World) -> None:
    intruder = as_user(world.b.owner)
    target = world.a.submitted.pk
    before = snapshot()
    for assignment_id in range(1, max_id(Assignment) + 3):
        if Assignment.objects.filter(pk=assignment_id, project=world.b.project).exists():
            continue
        assert_404(intruder.post(f"/api/v1/assignments/{assignment_id}/approve/", {}, format="json"),
                   f"approve {assignment_id}")  # fmt: skip
        assert_404(intruder.post(f"/api/v1/assignments/{assignment_id}/reject/", {"reason": "No"}, format="json"),
                   f"reject {assignment_id}")  # fmt: skip
    # Through their own project's bulk review, another project's answers are refused.
    response = intruder.post(
        f"/api/v1/projects/{world.b.project.pk}/reviews/",
        {"assignments": [target], "action": "reject", "reason": "No"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["done"] == []
    assert str(target) in response.json()["refused"]
    assert_404(intruder.post(f"/api/v1/projects/{world.a.project.pk}/reviews/",
                             {"assignments": [target], "action": "approve"}, format="json"), "bulk review")  # fmt: skip
    assert_404(intruder.get(f"/api/v1/projects/{world.a.project.pk}/tasks/{world.a.submitted.task_id}/reference/"),
               "task reference")  # fmt: skip
    assert_404(intruder.get(f"/api/v1/projects/{world.b.project.pk}/tasks/{world.a.submitted.task_id}/reference/"),
               "task reference through one's own project")  # fmt: skip
    assert snapshot() == before


@pytest.mark.parametrize("kind", ["file", "thumbnail"])
def test_image_bytes_by_guessed_id(world: World, kind: str) -> None:
    """Every image id, as each outsider: only what they are entitled to comes back."""
    entitled: dict[str, set[int]] = {
        "other manager": set(Image.objects.filter(project=world.b.project).values_list("pk", flat=True)),
        "other client": set(Image.objects.filter(project=world.b.project).values_list("pk", flat=True)),
        # Workers see only the image of the task they lease right now.
        "worker of a": {world.a.image.pk},
        "worker of b": {world.b.image.pk},
    }  # fmt: skip
    users = {
        "other manager": world.b.owner, "other client": world.b.client,
        "worker of a": world.a.worker, "worker of b": world.b.worker,
    }  # fmt: skip
    before = snapshot()
    for who, user in users.items():
        client = as_user(user)
        for image_id in range(1, max_id(Image) + 3):
            response = client.get(f"/api/v1/images/{image_id}/{kind}/")
            if image_id in entitled[who] and image_id in (world.a.image.pk, world.b.image.pk):
                assert response.status_code == 200, f"{who}: own image {image_id}"
            elif image_id in entitled[who]:
                assert response.status_code == 404  # own image with no stored bytes yet
                assert response.json()["code"] == "not_found"
            else:
                assert_404(response, f"{who}: {kind} of image {image_id}")
    # A worker who answered a task of an image no longer reads it.
    answered = world.a.submitted.task.image_id
    assert_404(as_user(world.a.worker).get(f"/api/v1/images/{answered}/{kind}/"), "answered image")
    assert snapshot() == before


def test_exports_by_guessed_id(world: World) -> None:
    before = snapshot()
    for user in (world.b.owner, world.b.client):
        client = as_user(user)
        for export_id in range(1, max_id(DatasetExport) + 3):
            if export_id == world.b.export.pk:
                assert client.get(f"/api/v1/exports/{export_id}/").status_code == 200
                continue
            assert_404(client.get(f"/api/v1/exports/{export_id}/"), f"export {export_id}")
            assert_404(
                client.get(f"/api/v1/exports/{export_id}/download/"), f"download {export_id}"
            )
        # Naming another project's consensus run does not export it either.
        response = client.post(
            f"/api/v1/projects/{world.a.project.pk}/exports/",
            {"format": "coco", "consensus_run": world.a.run.pk}, format="json",
        )  # fmt: skip
        assert_404(response, "export of another project")
        response = client.post(
            f"/api/v1/projects/{world.b.project.pk}/exports/",
            {"format": "coco", "consensus_run": world.a.run.pk}, format="json",
        )  # fmt: skip
        assert response.status_code == 409
        assert response.json()["code"] == "stale_consensus_run"
    assert snapshot() == before


def test_payouts_and_batches_are_for_operators_only(world: World) -> None:
    """Payout routes are not per project: anyone but an operator is refused by role, and an
    operator's guessed id that does not exist is a 404; nothing moves either way."""
    before = snapshot()
    for user in (world.a.owner, world.b.owner, world.a.worker, world.a.client):
        client = as_user(user)
        for payout_id in (world.payout.pk, world.requested.pk, max_id(Payout) + 1):
            response = client.post(
                f"/api/v1/payouts/{payout_id}/failed/", {"reason": "x"}, format="json"
            )
            assert response.status_code == 403, user.role
        assert client.post(f"/api/v1/payouts/batches/{world.batch.pk}/paid/").status_code == 403
        assert client.get(f"/api/v1/payouts/batches/{world.batch.pk}/csv/").status_code == 403
        assert (
            client.post("/api/v1/payouts/batches/", {"currency": "USD"}, format="json").status_code
            == 403
        )
    operator = as_user(world.operator)
    assert_404(
        operator.post(
            f"/api/v1/payouts/{max_id(Payout) + 1}/failed/", {"reason": "x"}, format="json"
        ),
        "payout",
    )
    assert_404(operator.post(f"/api/v1/payouts/batches/{max_id(PayoutBatch) + 1}/paid/"), "batch")
    assert_404(operator.get(f"/api/v1/payouts/batches/{max_id(PayoutBatch) + 1}/csv/"), "batch csv")
    assert snapshot() == before
    # A worker's own payout list holds only their payouts.
    listed = as_user(world.a.worker).get("/api/v1/me/payouts/").json()
    assert listed["count"] == 0
    ledger = as_user(world.a.worker).get("/api/v1/me/ledger/").json()
    assert ledger["count"] == 0


def test_workers_of_another_project(world: World) -> None:
    a, b = world.a, world.b
    intruder = as_user(b.owner)
    owner = as_user(a.owner)
    before = snapshot()
    base_a, base_b = (
        f"/api/v1/projects/{a.project.pk}/workers",
        f"/api/v1/projects/{b.project.pk}/workers",
    )
    assert_404(intruder.get(f"{base_a}/{a.worker.pk}/"), "another project's worker")
    assert_404(
        intruder.post(f"{base_a}/{a.worker.pk}/suspend/", {"reason": "x"}, format="json"), "suspend"
    )
    assert_404(intruder.post(f"{base_a}/{a.worker.pk}/reinstate/"), "reinstate")
    # Through one's own project: a worker who never worked on it is not found either.
    assert_404(intruder.get(f"{base_b}/{a.worker.pk}/"), "a stranger through one's own project")
    assert_404(
        intruder.post(f"{base_b}/{a.worker.pk}/suspend/", {"reason": "x"}, format="json"),
        "suspend a stranger",
    )
    assert_404(owner.get(f"{base_a}/{b.worker.pk}/"), "the other project's worker")
    # A bonus for someone who never worked on the project says the same as for no one at all.
    stranger = owner.post(f"/api/v1/projects/{a.project.pk}/bonuses/",
                          {"worker": b.worker.pk, "amount": "1.00", "reason": "x"}, format="json")  # fmt: skip
    nobody = owner.post(f"/api/v1/projects/{a.project.pk}/bonuses/",
                        {"worker": max_id(User) + 1, "amount": "1.00", "reason": "x"}, format="json")  # fmt: skip
    assert stranger.status_code == nobody.status_code == 400
    assert stranger.json() == nobody.json()
    assert snapshot() == before


def test_gold_of_another_project(world: World) -> None:
    a, b = world.a, world.b
    intruder = as_user(b.owner)
    before = snapshot()
    assert_404(intruder.get(f"/api/v1/projects/{a.project.pk}/gold/"), "list")
    assert_404(intruder.post(f"/api/v1/projects/{a.project.pk}/gold/",
                             {"image": a.spare_image.pk, "annotations": []}, format="json"), "set")  # fmt: skip
    assert_404(
        intruder.delete(f"/api/v1/projects/{a.project.pk}/gold/{a.gold_image.pk}/"), "remove"
    )
    # Another project's image id through one's own project is not found either.
    assert_404(intruder.post(f"/api/v1/projects/{b.project.pk}/gold/",
                             {"image": a.spare_image.pk, "annotations": []}, format="json"), "set via own")  # fmt: skip
    assert_404(
        intruder.delete(f"/api/v1/projects/{b.project.pk}/gold/{a.gold_image.pk}/"),
        "remove via own",
    )
    own = intruder.get(f"/api/v1/projects/{b.project.pk}/gold/").json()
    assert [g["image"] for g in own["results"]] == [b.gold_image.pk]
    assert snapshot() == before


def test_project_ids_walked_by_outsiders(world: World) -> None:
    """Every project route with another's project id is a 404, as for an id that does not exist."""
    a = world.a
    missing = max(a.project.pk, world.b.project.pk) + 1
    reads = [
        "",
        "images/",
        "progress/",
        "consensus/",
        "consensus/results/",
        "exports/",
        "throughput/",
    ]
    manager_reads = ["gold/", "workers/", "agreement/", "bonuses/", "reviews/"]
    before = snapshot()
    for user, paths in ((world.b.owner, reads + manager_reads), (world.b.client, reads)):
        client = as_user(user)
        for path in paths:
            for project_id in (a.project.pk, missing):
                assert_404(
                    client.get(f"/api/v1/projects/{project_id}/{path}"),
                    f"{user.role} {path} {project_id}",
                )
    manager = as_user(world.b.owner)
    for path, body in (("", {"name": "Mine now"}), ("start/", None), ("pause/", None), ("consensus/", None),
                       ("clients/", {"username": world.b.client.username}), ("exports/", {"format": "coco"})):  # fmt: skip
        method = manager.patch if path == "" else manager.post
        assert_404(
            method(f"/api/v1/projects/{a.project.pk}/{path}", body, format="json"), f"write {path}"
        )
    assert snapshot() == before
