"""Every money list pages the one way: ``{"count", "next", "previous", "results"}``, with
``?limit`` (at most 500) and ``?offset``, rows rendered as the schema's item says."""

from __future__ import annotations

from typing import Any

import pytest

from crowd.pagination import Page
from payouts import services
from payouts.models import EntryKind, LedgerEntry
from payouts.providers import payout_mark_failed
from tests.factories import ManagerFactory, WorkerFactory
from tests.payouts.test_ledger import earn, paid_project

pytestmark = pytest.mark.django_db

PAGE = {"count", "next", "previous", "results"}


@pytest.fixture
def paid(manager, settings) -> dict[str, Any]:
    """A worker with 3 approved answers, 2 bonuses and 2 payouts (one failed, one requested):
    8 ledger entries."""
    settings.MIN_PAYOUT = "0.10"
    project = paid_project(manager)
    worker = WorkerFactory.create()
    earn(project, worker, manager, 3)
    for reason in ("Careful", "Fast"):
        services.bonus_grant(
            project=project, worker_id=worker.pk, amount=50, reason=reason, by=manager
        )
    failed = services.payout_request(worker=worker, currency="USD", provider="manual")
    payout_mark_failed(payout=failed, reason="The bank returned it")
    services.payout_request(worker=worker, currency="USD", provider="manual", amount=20)
    operator = ManagerFactory.create(is_staff=True)
    return {"project": project, "worker": worker, "operator": operator}


def lists(paid: dict[str, Any], manager) -> list[tuple[Any, str, int]]:
    """(who, path, rows) of each money list."""
    project, worker, operator = paid["project"], paid["worker"], paid["operator"]
    return [
        (manager, f"/api/v1/projects/{project.pk}/reviews/?status=all", 3),
        (manager, f"/api/v1/projects/{project.pk}/bonuses/", 2),
        (worker, "/api/v1/me/ledger/", 8),
        (worker, "/api/v1/me/payouts/", 2),
        (operator, "/api/v1/payouts/", 2),
    ]


def test_every_money_list_is_one_page_shape(api_as, manager, paid) -> None:
    for who, path, rows in lists(paid, manager):
        sep = "&" if "?" in path else "?"
        first = api_as(who).get(f"{path}{sep}limit=1")
        assert first.status_code == 200, (path, first.content)
        body = first.json()
        assert set(body) >= PAGE, path
        assert (body["count"], len(body["results"]), body["previous"]) == (rows, 1, None), path
        assert "offset=1" in body["next"], path
        last = api_as(who).get(f"{path}{sep}limit=1&offset={rows - 1}").json()
        assert (len(last["results"]), last["next"]) == (1, None), path
        assert last["previous"] is not None, path
        whole = api_as(who).get(path).json()
        assert (len(whole["results"]), whole["next"]) == (rows, None), path


def test_the_ledger_page_carries_the_balances_beside_the_rows(api_as, paid) -> None:
    body = api_as(paid["worker"]).get("/api/v1/me/ledger/").json()
    assert set(body) == PAGE | {"balances"}
    # 3 rewards of 0.25 and 2 bonuses of 0.50, less the 0.20 requested.
    assert body["balances"] == [{"amount": "1.55", "currency": "USD"}]
    kinds = [entry["kind"] for entry in body["results"]]
    assert sorted(kinds) == sorted(
        ["reward"] * 3 + ["bonus"] * 2 + ["payout", "payout_reversal", "payout"]
    )
    assert set(body["results"][0]) == {
        "id", "kind", "amount", "currency", "created_at", "assignment", "project", "bonus",
        "payout", "memo",
    }  # fmt: skip


def test_a_page_holds_at_most_the_largest_limit(api_as, worker) -> None:
    LedgerEntry.objects.bulk_create(
        LedgerEntry(worker=worker, kind=EntryKind.ADJUSTMENT, amount=1, currency="USD")
        for _ in range(Page.max_limit + 1)
    )
    body = api_as(worker).get("/api/v1/me/ledger/?limit=100000").json()
    assert body["count"] == Page.max_limit + 1
    assert len(body["results"]) == Page.max_limit
    assert f"offset={Page.max_limit}" in body["next"]


def test_the_lists_rows_are_the_schemas_items(api_as, manager, paid) -> None:
    project = paid["project"]
    reviews = api_as(manager).get(f"/api/v1/projects/{project.pk}/reviews/?status=all").json()
    assert set(reviews["results"][0]) == {
        "id", "status", "worker", "worker_id", "task", "is_gold", "image", "image_name",
        "image_url", "width", "height", "region", "annotations", "submitted_at",
        "time_spent_ms", "prelabels", "reason", "reviewed_at",
    }  # fmt: skip
    bonuses = api_as(manager).get(f"/api/v1/projects/{project.pk}/bonuses/").json()
    assert [b["reason"] for b in bonuses["results"]] == ["Fast", "Careful"]  # newest first
    assert bonuses["results"][0]["amount"] == "0.50"
    mine = api_as(paid["worker"]).get("/api/v1/me/payouts/").json()["results"]
    assert [(p["status"], p["amount"]) for p in mine] == [("requested", "0.20"), ("failed", "1.75")]
    every = api_as(paid["operator"]).get("/api/v1/payouts/?status=failed").json()
    assert every["count"] == 1
    assert every["results"][0]["worker"] == paid["worker"].pk
    assert every["results"][0]["batch"] is None


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/api/v1/projects/{project_id}/reviews/", "PaginatedAnswerReviewList"),
        ("/api/v1/projects/{project_id}/bonuses/", "PaginatedBonusList"),
        ("/api/v1/me/ledger/", "LedgerPageOut"),
        ("/api/v1/me/payouts/", "PaginatedPayoutList"),
        ("/api/v1/payouts/", "PaginatedOperatorPayoutList"),
    ],
)
def test_the_schema_names_each_lists_page(api, path, component) -> None:
    schema = api.get("/api/schema/?format=json").json()
    ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"] == f"#/components/schemas/{component}"
    page = schema["components"]["schemas"][component]
    assert set(page["required"]) >= PAGE
    assert {"limit", "offset"} <= {p["name"] for p in schema["paths"][path]["get"]["parameters"]}


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("status=gone", {"status"}),
        ("provider=paypal", {"provider"}),
        ("currency=EURO", {"currency"}),
        ("status=a%00b&currency=%00", {"status", "currency"}),  # no NUL reaches PostgreSQL
    ],
)
def test_the_operators_filters_are_checked(api_as, query, errors) -> None:
    operator = ManagerFactory.create(is_staff=True)
    response = api_as(operator).get(f"/api/v1/payouts/?{query}")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == errors


def test_empty_filters_filter_nothing(api_as, paid) -> None:
    body = api_as(paid["operator"]).get("/api/v1/payouts/?status=&currency=&provider=").json()
    assert body["count"] == 2
    body = api_as(paid["operator"]).get("/api/v1/payouts/?provider=manual&currency=USD").json()
    assert body["count"] == 2
