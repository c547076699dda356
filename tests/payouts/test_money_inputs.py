"""Reviews, bonuses and payouts over HTTP: what a request may say, and what a refusal says.
Each endpoint validates with the serializer its schema names."""

from __future__ import annotations

from typing import Any

import pytest

from payouts.models import Bonus
from tests.factories import WorkerFactory
from tests.payouts.test_ledger import paid_project, submit

pytestmark = pytest.mark.django_db

WHAT_FOR = "Tell the worker what it is for."


@pytest.fixture
def answered(manager):
    project = paid_project(manager)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None
    return project, worker, answer


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"worker": ["Give the worker's id."], "reason": [WHAT_FOR], "amount": None}),
        ({"worker": "5", "amount": "1.00", "reason": "x"}, {"worker": ["Give the worker's id."]}),
        ({"worker": True, "amount": "1.00", "reason": "x"}, {"worker": ["Give the worker's id."]}),
        ({"worker": 10**30, "amount": "1.00", "reason": "x"}, {"worker": ["Give the worker's id."]}),
        ({"worker": 0, "amount": "1.001", "reason": "x"}, {"amount": ["'1.001' has more decimal places than USD allows (2)."]}),
        ({"worker": 0, "amount": True, "reason": "x"}, {"amount": None}),
        ({"worker": 0, "amount": "1.00", "reason": "   "}, {"reason": [WHAT_FOR]}),
        ({"worker": 0, "amount": "1.00", "reason": 7}, {"reason": [WHAT_FOR]}),
        ({"worker": 0, "amount": "1.00", "reason": "x" * 301}, {"reason": ["At most 300 characters."]}),
        ({"worker": 0, "amount": "1.00", "reason": "x"}, {"worker": ["No worker of this project has that id."]}),
        ({"worker": "WORKER", "amount": "0", "reason": "x"}, {"amount": ["Must be more than zero."]}),
        ({"worker": "WORKER", "amount": "-1", "reason": "x"}, {"amount": ["Must be more than zero."]}),
        ({"worker": "WORKER", "amount": "1e+20", "reason": "x"}, {"amount": ["'1e+20' is more than the largest amount taken, 10000000000.00 USD."]}),
    ],
)  # fmt: skip
def test_a_bonus_that_is_not_valid_is_refused(api_as, manager, answered, body, errors) -> None:
    project, worker, _ = answered
    body = {k: worker.pk if v == "WORKER" else v for k, v in body.items()}
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/bonuses/", body, format="json")
    assert response.status_code == 400, response.content
    got = response.json()
    assert set(got) == {"detail", "code", "errors"}
    assert set(got["errors"]) == set(errors)
    for field, messages in errors.items():
        if messages is not None:
            assert got["errors"][field] == messages
    assert not Bonus.objects.exists()


def test_a_bonus_amount_may_be_a_number_and_the_reason_is_stored_trimmed(
    api_as, manager, answered
) -> None:
    project, worker, _ = answered
    body = {"worker": worker.pk, "amount": 2, "reason": "  Careful work  "}
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/bonuses/", body, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["amount"], response.json()["reason"]) == ("2.00", "Careful work")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"assignments": [], "action": "approve"}, {"assignments": ["A list of 1 to 1000 assignment ids."]}),
        ({"assignments": [True], "action": "approve"}, {"assignments": ["A list of 1 to 1000 assignment ids."]}),
        ({"assignments": ["1"], "action": "approve"}, {"assignments": ["A list of 1 to 1000 assignment ids."]}),
        ({"assignments": list(range(1, 1002)), "action": "approve"}, {"assignments": ["A list of 1 to 1000 assignment ids."]}),
        ({"assignments": 5, "action": "maybe"}, {"assignments": ["A list of 1 to 1000 assignment ids."], "action": ['"approve" or "reject".']}),
        ({"assignments": [1]}, {"action": ['"approve" or "reject".']}),
        ({"assignments": [1], "action": "reject"}, {"reason": ["Tell the worker why."]}),
        ({"assignments": [1], "action": "reject", "reason": "  "}, {"reason": ["Tell the worker why."]}),
        ({"assignments": [1], "action": "approve", "reason": "x" * 501}, {"reason": ["Text of at most 500 characters."]}),
        ({"assignments": [1], "action": "approve", "reason": 5}, {"reason": ["Text of at most 500 characters."]}),
    ],
)  # fmt: skip
def test_a_bulk_review_that_is_not_valid_is_refused(
    api_as, manager, answered, body, errors
) -> None:
    project, _, answer = answered
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/reviews/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == errors
    answer.refresh_from_db()
    assert answer.status == "submitted"


def test_a_rejection_needs_a_reason_and_stores_it_trimmed(api_as, manager, answered) -> None:
    _, _, answer = answered
    url = f"/api/v1/assignments/{answer.pk}/reject/"
    for body in ({}, {"reason": " "}, {"reason": None}):
        refused = api_as(manager).post(url, body, format="json")
        assert refused.status_code == 400, body
        assert set(refused.json()["errors"]) == {"reason"}
    done = api_as(manager).post(url, {"reason": " Empty answer "}, format="json")
    assert done.json()["reason"] == "Empty answer"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"currency": "dollars"}, "currency"),
        ({"currency": 5}, "currency"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "0.001"}, "amount"),
        ({"amount": [1]}, "amount"),
    ],
)
def test_a_payout_request_that_is_not_valid_is_refused(api_as, worker, body, field) -> None:
    response = api_as(worker).post("/api/v1/me/payouts/", body, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {field}


def request_schema(api, path: str, method: str = "post") -> dict[str, Any]:
    schema = api.get("/api/schema/?format=json").json()
    return schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(
    ("path", "serializer"),
    [
        ("/api/v1/projects/{project_id}/bonuses/", "BonusIn"),
        ("/api/v1/projects/{project_id}/reviews/", "BulkReviewIn"),
        ("/api/v1/assignments/{assignment_id}/approve/", "ReasonIn"),
        ("/api/v1/assignments/{assignment_id}/reject/", "ReasonRequiredIn"),
        ("/api/v1/me/payouts/", "PayoutIn"),
        ("/api/v1/projects/{project_id}/gold/", "GoldIn"),
        ("/api/v1/projects/{project_id}/workers/{worker_id}/suspend/", "SuspendIn"),
        ("/api/v1/projects/{project_id}/exports/", "ExportIn"),
    ],
)
def test_the_schema_names_the_serializer_that_validates(api, path, serializer) -> None:
    assert request_schema(api, path)["$ref"] == f"#/components/schemas/{serializer}Request"
