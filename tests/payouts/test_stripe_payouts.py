"""Payouts through Stripe Connect, with the real stripe SDK against the local fake: onboarding,
transfers under faults, webhooks replayed, reconciliation; and the money endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from django.core.management import CommandError, call_command

from payouts import services, stripe_provider
from payouts.models import LedgerEntry, Payout, PayoutAccount
from tests.factories import ManagerFactory, WorkerFactory
from tests.payouts.fake_stripe import FakeStripe
from tests.payouts.test_ledger import REWARD, earn, paid_project, submit

SECRET = "whsec_test_crowd"


@pytest.fixture
def fake(settings, monkeypatch) -> Iterator[FakeStripe]:
    monkeypatch.setattr(stripe, "enable_telemetry", False)
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
    with FakeStripe() as server:
        settings.STRIPE_SECRET_KEY = "sk_test_crowd"
        settings.STRIPE_API_BASE = server.url
        settings.STRIPE_WEBHOOK_SECRET = SECRET
        settings.STRIPE_NETWORK_RETRIES = 0
        settings.STRIPE_TIMEOUT_SECONDS = 5
        settings.MIN_PAYOUT = "0.50"
        yield server


def deliver(api, fake: FakeStripe, event: dict[str, Any], secret: str = SECRET):
    payload = FakeStripe.event_payload(event)
    return api.post(
        "/api/v1/payouts/webhooks/stripe/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=FakeStripe.sign(payload, secret),
    )  # fmt: skip


def onboarded_worker(api_as, api, fake: FakeStripe, manager, answers: int = 4):
    """A worker with ``answers`` approved answers and a Stripe account ready for payouts."""
    project = paid_project(manager)
    worker = WorkerFactory.create()
    earn(project, worker, manager, answers)
    urls = {"refresh_url": "https://crowd.test/refresh", "return_url": "https://crowd.test/done"}
    started = api_as(worker).post("/api/v1/me/payout-account/", urls, format="json")
    assert started.status_code == 200, started.content
    assert started.json()["onboarding_url"].startswith(fake.url + "/onboarding/")
    account = started.json()["account"]
    fake.complete_onboarding(account)
    (event,) = fake.take_events()
    assert deliver(api, fake, event).json()["applied"] is True
    assert PayoutAccount.objects.get(external_id=account).payouts_enabled
    return worker


def transfers_for(fake: FakeStripe, payout: Payout) -> list[dict[str, Any]]:
    return [t for t in fake.transfers if t["metadata"].get("payout") == str(payout.pk)]


@pytest.mark.django_db
def test_a_worker_onboards_and_is_paid_once(api, api_as, fake, manager) -> None:
    worker = onboarded_worker(api_as, api, fake, manager)
    refused = api_as(worker).post("/api/v1/me/payouts/", {"amount": "5.00"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "above_balance"
    response = api_as(worker).post("/api/v1/me/payouts/", {}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["amount"] == "1.00"
    assert body["status"] == "requested"
    payout = stripe_provider.payout_send(payout_id=body["id"])
    assert payout.status == "paid"
    (transfer,) = transfers_for(fake, payout)
    assert transfer["id"] == payout.provider_ref
    assert transfer["amount"] == 4 * REWARD
    assert transfer["destination"] == PayoutAccount.objects.get(worker=worker).external_id
    assert services.balance(worker.pk, "USD") == 0
    # Sending again, as a redelivered job would, changes nothing.
    stripe_provider.payout_send(payout_id=payout.pk)
    assert len(transfers_for(fake, payout)) == 1
    ledger = api_as(worker).get("/api/v1/me/ledger/").json()
    assert [e["kind"] for e in ledger["results"]] == ["payout"] + ["reward"] * 4
    assert ledger["balances"] == [{"amount": "0.00", "currency": "USD"}]


@pytest.mark.django_db
def test_a_payout_needs_a_ready_account(api_as, fake, manager) -> None:
    project = paid_project(manager)
    worker = WorkerFactory.create()
    earn(project, worker, manager, 4)
    response = api_as(worker).post("/api/v1/me/payouts/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "payout_account_required"
    assert not Payout.objects.exists()


@pytest.mark.django_db
def test_a_500_after_the_transfer_was_made_is_retried_into_one_transfer(
    api, api_as, fake, manager
) -> None:
    worker = onboarded_worker(api_as, api, fake, manager)
    payout = services.payout_request(worker=worker, currency="USD", provider="stripe")
    fake.fail_next(status=500, after_effect=True)
    with pytest.raises(stripe.APIError):
        stripe_provider.payout_send(payout_id=payout.pk)
    payout.refresh_from_db()
    assert payout.status == "processing"
    assert len(transfers_for(fake, payout)) == 1  # Stripe made it; we did not hear
    stripe_provider.payout_send(payout_id=payout.pk)  # the job's retry
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert len(transfers_for(fake, payout)) == 1
    keys = {r.idempotency_key for r in fake.requests if r.path == "/v1/transfers"}
    assert keys == {f"crowd-payout-{payout.pk}"}
    assert services.balance(worker.pk, "USD") == 0


@pytest.mark.django_db
def test_a_timeout_after_the_transfer_was_made_is_retried_into_one_transfer(
    api, api_as, fake, manager, settings
) -> None:
    worker = onboarded_worker(api_as, api, fake, manager)
    payout = services.payout_request(worker=worker, currency="USD", provider="stripe")
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    fake.delay_next(1.0, after_effect=True)
    with pytest.raises(stripe.APIConnectionError):
        stripe_provider.payout_send(payout_id=payout.pk)
    deadline = time.monotonic() + 10
    while True:  # the job retries; while Stripe still runs the first call, it answers 409
        try:
            stripe_provider.payout_send(payout_id=payout.pk)
            break
        except stripe.APIError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert len(transfers_for(fake, payout)) == 1


@pytest.mark.django_db
def test_a_refused_transfer_fails_the_payout_and_returns_the_money(
    api, api_as, fake, manager
) -> None:
    worker = onboarded_worker(api_as, api, fake, manager)
    fake.set_balance("usd", 0)
    payout = services.payout_request(worker=worker, currency="USD", provider="stripe")
    payout = stripe_provider.payout_send(payout_id=payout.pk)
    assert payout.status == "failed"
    assert payout.failure_reason
    assert services.balance(worker.pk, "USD") == 4 * REWARD
    kinds = list(LedgerEntry.objects.filter(payout=payout).values_list("kind", flat=True))
    assert sorted(kinds) == ["payout", "payout_reversal"]


@pytest.mark.django_db
def test_webhooks_are_verified_and_a_replay_changes_nothing(api, api_as, fake, manager) -> None:
    worker = onboarded_worker(api_as, api, fake, manager)
    payout = services.payout_request(worker=worker, currency="USD", provider="stripe")
    services.payout_transition(payout_id=payout.pk, status="processing")
    # The job called Stripe and died before recording the answer.
    stripe_provider.client().v1.transfers.create(
        params={
            "amount": payout.amount,
            "currency": "usd",
            "destination": PayoutAccount.objects.get(worker=worker).external_id,
            "metadata": {"payout": str(payout.pk)},
        },
        options={"idempotency_key": payout.idempotency_key},
    )
    (created,) = fake.take_events()
    assert created["type"] == "transfer.created"
    assert deliver(api, fake, created, secret="whsec_wrong").status_code == 400
    tampered = FakeStripe.event_payload(created).replace(b"transfer.created", b"transfer.reversed")
    bad = api.post(
        "/api/v1/payouts/webhooks/stripe/", data=tampered, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=FakeStripe.sign(FakeStripe.event_payload(created), SECRET),
    )  # fmt: skip
    assert bad.status_code == 400
    assert deliver(api, fake, created).json() == {
        "received": True, "type": "transfer.created", "applied": True,
    }  # fmt: skip
    payout.refresh_from_db()
    assert payout.status == "paid"
    entries = LedgerEntry.objects.count()
    again = deliver(api, fake, created)
    assert again.status_code == 200
    assert again.json()["applied"] is False
    assert LedgerEntry.objects.count() == entries
    # The job's late retry finds the payout settled and sends nothing.
    stripe_provider.payout_send(payout_id=payout.pk)
    assert len(transfers_for(fake, payout)) == 1
    # A reversal at Stripe returns the money, once, however often it is told.
    stripe_provider.client().v1.transfers.reversals.create(payout.provider_ref)
    reversed_events = [e for e in fake.take_events() if e["type"] == "transfer.reversed"]
    for _ in range(2):
        deliver(api, fake, reversed_events[0])
    assert services.balance(worker.pk, "USD") == 4 * REWARD


@pytest.mark.django_db
def test_reconcile_reports_what_disagrees(api, api_as, fake, manager, capsys) -> None:
    worker = onboarded_worker(api_as, api, fake, manager)
    payout = services.payout_request(worker=worker, currency="USD", provider="stripe")
    stripe_provider.payout_send(payout_id=payout.pk)
    call_command("reconcile_payouts")
    assert "agree" in capsys.readouterr().out
    destination = PayoutAccount.objects.get(worker=worker).external_id
    stripe_provider.client().v1.transfers.create(
        params={"amount": 7, "currency": "usd", "destination": destination,
                "metadata": {"payout": "999999"}}
    )  # fmt: skip
    with pytest.raises(CommandError):
        call_command("reconcile_payouts")
    assert "transfer for an unknown payout" in capsys.readouterr().out


# --- Money endpoints -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_reviews_and_bonuses_over_http(api_as, manager, worker) -> None:
    project = paid_project(manager)
    answers = [submit(project, worker) for _ in range(3)]
    ids = [a.pk for a in answers if a is not None]
    other_manager = ManagerFactory.create()
    url = f"/api/v1/assignments/{ids[0]}/approve/"
    assert api_as(worker).post(url).status_code == 403
    assert api_as(other_manager).post(url).status_code == 404
    assert api_as(manager).post(url).json()["status"] == "approved"
    reject = api_as(manager).post(f"/api/v1/assignments/{ids[1]}/reject/", {}, format="json")
    assert reject.status_code == 400
    reject = api_as(manager).post(
        f"/api/v1/assignments/{ids[1]}/reject/", {"reason": "Empty answer"}, format="json"
    )
    assert reject.json() == {**reject.json(), "status": "rejected", "reason": "Empty answer"}
    history = api_as(worker).get("/api/v1/me/assignments/").json()["results"]
    assert {h["id"]: h["review_reason"] for h in history}[ids[1]] == "Empty answer"
    bulk = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/reviews/",
        {"assignments": [*ids, 10**9], "action": "approve"}, format="json",
    )  # fmt: skip
    # A rejection not yet paid may be reconsidered; an unknown id is refused on its own.
    assert bulk.json()["done"] == ids
    assert set(bulk.json()["refused"]) == {str(10**9)}
    bonus_url = f"/api/v1/projects/{project.pk}/bonuses/"
    body = {"worker": worker.pk, "amount": "2.00", "reason": "Fast and careful"}
    first = api_as(manager).post(bonus_url, body, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    again = api_as(manager).post(bonus_url, body, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert api_as(other_manager).post(bonus_url, body, format="json").status_code == 404
    me = api_as(worker).get("/api/v1/me/").json()
    assert me["balance"] == {"amount": "2.75", "currency": "USD"}  # 3 rewards + the bonus
    progress = api_as(manager).get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["spent"] == {"amount": "2.75", "currency": "USD"}


@pytest.mark.django_db
def test_manual_payouts_go_through_an_operators_batch(api_as, manager, settings) -> None:
    settings.MIN_PAYOUT = "0.50"
    project = paid_project(manager)
    worker = WorkerFactory.create()
    earn(project, worker, manager, 4)
    payout = api_as(worker).post("/api/v1/me/payouts/", {}, format="json").json()
    assert payout["provider"] == "manual"
    operator = ManagerFactory.create(is_staff=True)
    assert api_as(manager).post("/api/v1/payouts/batches/", {}).status_code == 403
    batch = api_as(operator).post("/api/v1/payouts/batches/", {"currency": "USD"}).json()
    assert batch["payouts"] == [payout["id"]]
    csv_text = api_as(operator).get(batch["csv_url"]).content.decode()
    assert f"{payout['id']},{worker.pk},{worker.username}" in csv_text
    assert api_as(operator).post("/api/v1/payouts/batches/", {"currency": "USD"}).status_code == 409
    api_as(operator).post(f"/api/v1/payouts/batches/{batch['id']}/paid/")
    mine = api_as(worker).get("/api/v1/me/payouts/").json()["results"]
    assert [p["status"] for p in mine] == ["paid"]
