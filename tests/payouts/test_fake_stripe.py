"""The fake Stripe server, driven by the real ``stripe`` SDK as payouts will drive Stripe."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.payouts.fake_stripe import FakeStripe

API_KEY = "sk_test_fake_platform"
WEBHOOK_SECRET = "whsec_fake"
START_BALANCE = 10_000_000


@pytest.fixture(autouse=True)
def _quiet_fast_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Telemetry would write ~/.config/stripe/telemetry_id; and the SDK's retry back-off never
    # waits less than HTTPClient.INITIAL_DELAY (0.5 s), which only slows these tests down.
    monkeypatch.setattr(stripe, "enable_telemetry", False)
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


def client_for(
    fake: FakeStripe, *, retries: int = 0, timeout: float = 5.0, api_key: str = API_KEY
) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": fake.url},
        max_network_retries=retries,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def onboarded_account(client: stripe.StripeClient, fake: FakeStripe) -> str:
    account = client.v1.accounts.create(
        params={"type": "express", "capabilities": {"transfers": {"requested": True}}}
    )
    fake.complete_onboarding(account.id)
    return account.id


def transfer_posts(fake: FakeStripe) -> list[str | None]:
    """The idempotency keys of the transfer creations the fake received, in order."""
    return [
        r.idempotency_key for r in fake.requests if (r.method, r.path) == ("POST", "/v1/transfers")
    ]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_account_onboarding_through_the_account_link(fake: FakeStripe) -> None:
    client = client_for(fake)
    account = client.v1.accounts.create(
        params={
            "type": "express",
            "email": "worker@example.com",
            "capabilities": {"transfers": {"requested": True}},
            "metadata": {"worker": "7"},
        }
    )
    assert account.id.startswith("acct_")
    assert (account.country, account.email) == ("US", "worker@example.com")
    assert account.metadata is not None
    assert account.metadata.to_dict() == {"worker": "7"}
    flags = (account.charges_enabled, account.payouts_enabled, account.details_submitted)
    assert flags == (False, False, False)
    assert fake.requests[0].params["capabilities"] == {"transfers": {"requested": "true"}}

    link = client.v1.account_links.create(
        params={
            "account": account.id,
            "refresh_url": "https://crowd.example/payouts/refresh",
            "return_url": "https://crowd.example/payouts/done",
            "type": "account_onboarding",
        }
    )
    assert link.object == "account_link"
    assert link.url == f"{fake.url}/onboarding/{account.id}"
    assert link.expires_at > link.created
    assert not client.v1.accounts.retrieve(account.id).payouts_enabled

    # The worker's browser follows the link; Stripe sends it back to return_url.
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(link.url, timeout=5)
    assert redirect.value.code == 302
    assert redirect.value.headers["Location"] == "https://crowd.example/payouts/done"

    done = client.v1.accounts.retrieve(account.id)
    assert (done.charges_enabled, done.payouts_enabled, done.details_submitted) == (True,) * 3
    assert done.capabilities is not None
    assert done.capabilities.transfers == "active"
    [event] = fake.take_events()
    assert (event["type"], event["account"]) == ("account.updated", account.id)
    assert event["data"]["object"]["payouts_enabled"] is True
    assert event["data"]["previous_attributes"]["payouts_enabled"] is False


def test_unknown_ids_and_bad_keys_get_stripe_errors(fake: FakeStripe) -> None:
    client = client_for(fake)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.accounts.retrieve("acct_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    misspelt: Any = {"type": "express", "colour": "blue"}
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.accounts.create(params=misspelt)
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
    with pytest.raises(stripe.AuthenticationError):
        client_for(fake, api_key="sk_live_not_allowed_here").v1.balance.retrieve()

    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{fake.url}/v1/balance", timeout=5)
    assert anonymous.value.code == 401
    assert json.loads(anonymous.value.read())["error"]["type"] == "invalid_request_error"


def test_same_idempotency_key_replays_the_first_transfer(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    params: Any = {
        "amount": 1234,
        "currency": "usd",
        "destination": destination,
        "metadata": {"payout": "7"},
        "transfer_group": "payout-7",
    }

    first = client.v1.transfers.create(params=params, options={"idempotency_key": "payout-7"})
    again = client.v1.transfers.create(params=params, options={"idempotency_key": "payout-7"})

    assert first.id.startswith("tr_")
    assert again.id == first.id
    assert [t["id"] for t in fake.transfers] == [first.id]
    assert fake.balance("usd") == START_BALANCE - 1234
    assert first.last_response is not None
    assert again.last_response is not None
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert fake.requests[-1].params["metadata"] == {"payout": "7"}


def test_same_key_with_other_parameters_is_an_idempotency_error(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    options: Any = {"idempotency_key": "payout-8"}
    client.v1.transfers.create(
        params={"amount": 500, "currency": "usd", "destination": destination}, options=options
    )

    with pytest.raises(stripe.IdempotencyError) as conflict:
        client.v1.transfers.create(
            params={"amount": 501, "currency": "usd", "destination": destination},
            options=options,
        )

    assert conflict.value.http_status == 400
    assert "same parameters" in str(conflict.value.user_message)
    assert len(fake.transfers) == 1
    assert fake.balance("usd") == START_BALANCE - 500


def test_error_after_the_transfer_was_made_then_retry_with_the_same_key(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    params: Any = {"amount": 700, "currency": "usd", "destination": destination}
    options: Any = {"idempotency_key": "payout-9"}
    fake.fail_next(after_effect=True)

    with pytest.raises(stripe.APIError) as failure:
        client.v1.transfers.create(params=params, options=options)
    assert failure.value.http_status == 500
    [made] = fake.transfers  # the provider did the transfer before failing

    retried = client.v1.transfers.create(params=params, options=options)

    assert retried.id == made["id"]
    assert len(fake.transfers) == 1
    assert fake.balance("usd") == START_BALANCE - 700


def test_error_before_the_transfer_leaves_nothing_and_the_retry_makes_it(
    fake: FakeStripe,
) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    params: Any = {"amount": 700, "currency": "usd", "destination": destination}
    fake.fail_next(status=503)

    with pytest.raises(stripe.APIError):
        client.v1.transfers.create(params=params, options={"idempotency_key": "payout-10"})
    assert fake.transfers == []
    assert fake.balance("usd") == START_BALANCE

    made = client.v1.transfers.create(params=params, options={"idempotency_key": "payout-10"})
    assert [t["id"] for t in fake.transfers] == [made.id]


def test_sdk_retries_a_500_with_its_own_idempotency_key(fake: FakeStripe) -> None:
    client = client_for(fake, retries=2)
    destination = onboarded_account(client, fake)
    fake.fail_next(after_effect=True)

    made = client.v1.transfers.create(
        params={"amount": 900, "currency": "usd", "destination": destination}
    )

    keys = transfer_posts(fake)
    assert len(keys) == 2
    assert keys[0] is not None
    assert keys[0] == keys[1]
    assert [t["id"] for t in fake.transfers] == [made.id]
    assert made.last_response is not None
    assert made.last_response.headers["Idempotent-Replayed"] == "true"


def test_sdk_obeys_stripe_should_retry_false(fake: FakeStripe) -> None:
    client = client_for(fake, retries=2)
    destination = onboarded_account(client, fake)
    fake.fail_next(should_retry=False)

    with pytest.raises(stripe.APIError):
        client.v1.transfers.create(
            params={"amount": 900, "currency": "usd", "destination": destination}
        )
    assert len(transfer_posts(fake)) == 1


def test_client_timeout_after_the_transfer_was_made_then_retry(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    impatient = client_for(fake, timeout=0.2)
    params: Any = {"amount": 1500, "currency": "eur", "destination": destination}
    options: Any = {"idempotency_key": "payout-11"}
    fake.delay_next(1.0)

    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.transfers.create(params=params, options=options)
    [made] = fake.transfers

    retried = client.v1.transfers.create(params=params, options=options)

    assert retried.id == made["id"]
    assert len(fake.transfers) == 1
    assert fake.balance("eur") == START_BALANCE - 1500


def test_sdk_retries_a_timeout_with_the_same_key(fake: FakeStripe) -> None:
    destination = onboarded_account(client_for(fake), fake)
    client = client_for(fake, retries=1, timeout=0.2)
    fake.delay_next(1.0)

    made = client.v1.transfers.create(
        params={"amount": 1500, "currency": "usd", "destination": destination}
    )

    keys = transfer_posts(fake)
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert [t["id"] for t in fake.transfers] == [made.id]


def test_a_retry_while_the_first_request_runs_gets_409(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    params: Any = {"amount": 300, "currency": "usd", "destination": destination}
    options: Any = {"idempotency_key": "payout-12"}
    fake.delay_next(0.5, after_effect=False)
    results: list[str] = []
    first = threading.Thread(
        target=lambda: results.append(client.v1.transfers.create(params=params, options=options).id)
    )
    first.start()
    deadline = time.monotonic() + 5
    while not transfer_posts(fake) and time.monotonic() < deadline:
        time.sleep(0.005)

    with pytest.raises(stripe.APIError) as busy:
        client.v1.transfers.create(params=params, options=options)
    first.join(timeout=5)

    # APIError leaves .code unset; the error object the SDK builds from the body has it.
    assert busy.value.http_status == 409
    assert busy.value.error is not None
    assert busy.value.error.code == "idempotency_key_in_use"
    assert [t["id"] for t in fake.transfers] == results


def test_concurrent_requests_with_one_key_make_one_transfer(fake: FakeStripe) -> None:
    client = client_for(fake, retries=5)
    destination = onboarded_account(client, fake)
    ids: list[str] = []

    def pay() -> None:
        made = client.v1.transfers.create(
            params={"amount": 10, "currency": "usd", "destination": destination},
            options={"idempotency_key": "payout-13"},
        )
        ids.append(made.id)

    threads = [threading.Thread(target=pay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert len(fake.transfers) == 1
    assert fake.balance("usd") == START_BALANCE - 10


def test_transfer_to_an_account_that_has_not_finished_onboarding_fails(fake: FakeStripe) -> None:
    client = client_for(fake)
    pending = client.v1.accounts.create(
        params={"type": "express", "capabilities": {"transfers": {"requested": True}}}
    )

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.transfers.create(
            params={"amount": 100, "currency": "usd", "destination": pending.id}
        )
    assert refused.value.code == "insufficient_capabilities_for_transfer"
    assert refused.value.param == "destination"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.transfers.create(
            params={"amount": 100, "currency": "usd", "destination": "acct_nope"}
        )
    assert missing.value.code == "resource_missing"
    assert fake.transfers == []
    assert fake.balance("usd") == START_BALANCE


def test_insufficient_balance_is_balance_insufficient() -> None:
    with FakeStripe(balances={"usd": 1_000}) as fake:
        client = client_for(fake)
        destination = onboarded_account(client, fake)

        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.transfers.create(
                params={"amount": 1_001, "currency": "usd", "destination": destination}
            )
        assert (refused.value.http_status, refused.value.code) == (400, "balance_insufficient")
        assert fake.transfers == []

        client.v1.transfers.create(
            params={"amount": 1_000, "currency": "usd", "destination": destination}
        )
        available = client.v1.balance.retrieve().available
        assert [(b.currency, b.amount) for b in available] == [("usd", 0)]


def test_listing_transfers_pages_through_everything(fake: FakeStripe) -> None:
    client = client_for(fake)
    worker, other = onboarded_account(client, fake), onboarded_account(client, fake)
    made = [
        client.v1.transfers.create(
            params={
                "amount": 100 + n,
                "currency": "usd",
                "destination": worker,
                "transfer_group": f"batch-{n % 2}",
            }
        ).id
        for n in range(23)
    ]
    for _ in range(3):
        client.v1.transfers.create(params={"amount": 5, "currency": "usd", "destination": other})

    first_page = client.v1.transfers.list(params={"limit": 10, "destination": worker})
    assert first_page.has_more
    assert len(first_page.data) == 10
    listed = [t.id for t in first_page.auto_paging_iter()]
    assert listed == made[::-1]  # newest first, every one once
    pages = [r for r in fake.requests if (r.method, r.path) == ("GET", "/v1/transfers")]
    assert len(pages) == 3
    assert all(r.params["destination"] == worker for r in pages)

    group = client.v1.transfers.list(params={"limit": 5, "transfer_group": "batch-1"})
    assert [t.id for t in group.auto_paging_iter()] == made[1::2][::-1]


def test_module_level_api_works_too(fake: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe, "api_key", API_KEY)
    monkeypatch.setattr(stripe, "api_base", fake.url)
    account = stripe.Account.create(type="express", capabilities={"transfers": {"requested": True}})
    fake.complete_onboarding(account.id)

    made = [
        stripe.Transfer.create(
            amount=50, currency="usd", destination=account.id, idempotency_key=f"k-{n}"
        ).id
        for n in range(5)
    ]
    again = stripe.Transfer.create(
        amount=50, currency="usd", destination=account.id, idempotency_key="k-0"
    )

    assert again.id == made[0]
    assert [t.id for t in stripe.Transfer.list(limit=2).auto_paging_iter()] == made[::-1]
    assert stripe.Balance.retrieve().available[1].amount == START_BALANCE - 250  # eur, usd


def test_reversal_returns_the_money(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    transfer = client.v1.transfers.create(
        params={"amount": 5_000, "currency": "usd", "destination": destination}
    )

    partial = client.v1.transfers.reversals.create(transfer.id, params={"amount": 2_000})
    assert partial.id.startswith("trr_")
    assert partial.transfer == transfer.id
    assert fake.balance("usd") == START_BALANCE - 3_000
    halfway = client.v1.transfers.retrieve(transfer.id)
    assert (halfway.amount_reversed, halfway.reversed) == (2_000, False)

    rest = client.v1.transfers.reversals.create(transfer.id)
    assert rest.amount == 3_000
    assert fake.balance("usd") == START_BALANCE
    done = client.v1.transfers.retrieve(transfer.id)
    assert (done.amount_reversed, done.reversed) == (5_000, True)

    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.reversals.create(transfer.id, params={"amount": 1})
    assert [e["type"] for e in fake.take_events()] == [
        "account.updated",
        "transfer.created",
        "transfer.reversed",
        "transfer.reversed",
    ]


def test_webhook_events_verify_with_the_sdk(fake: FakeStripe) -> None:
    client = client_for(fake)
    destination = onboarded_account(client, fake)
    transfer = client.v1.transfers.create(
        params={"amount": 42, "currency": "usd", "destination": destination},
        options={"idempotency_key": "payout-14"},
    )
    assert [e["type"] for e in fake.pending_events()] == ["account.updated", "transfer.created"]
    _, created = fake.take_events()
    assert fake.pending_events() == []

    payload = fake.event_payload(created)
    header = fake.sign(payload, WEBHOOK_SECRET)
    event = stripe.Webhook.construct_event(payload, header, WEBHOOK_SECRET)
    assert (event.id, event.type) == (created["id"], "transfer.created")
    assert event.data.object["id"] == transfer.id
    assert event.request.idempotency_key == "payout-14"
    # Delivered twice: it still verifies, so the receiver must dedupe by event id.
    assert stripe.Webhook.construct_event(payload, header, WEBHOOK_SECRET).id == event.id
    assert client.v1.events.retrieve(created["id"]).type == "transfer.created"

    tampered = payload.replace(b'"amount": 42', b'"amount": 4200')
    assert tampered != payload
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")
    stale = fake.sign(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, WEBHOOK_SECRET)
