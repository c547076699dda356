"""Stripe Connect Express: onboarding, transfers, webhooks and reconciliation.

Every call that creates something carries an idempotency key derived from our own row
(``crowd-payout-<id>`` for a payout's transfer, ``crowd-account-<worker>`` for a worker's
account), so the job that sends a payout can be retried after any failure, including a
crash between Stripe's answer and our commit, and Stripe answers the retry with the transfer
it already made instead of making a second one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction

from crowd.errors import Conflict, InvalidInput
from crowd.models import User
from payouts import services
from payouts.models import Payout, PayoutAccount, PayoutStatus, WebhookEvent

log = logging.getLogger(__name__)

NAME = "stripe"
# Errors that will not go away by retrying the same call: the payout fails and its money
# returns to the worker's balance. Anything else (connection, timeout, 5xx, rate limit) is
# raised so the job retries with the same idempotency key.
PERMANENT = (stripe.InvalidRequestError, stripe.PermissionError, stripe.CardError)


def client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=settings.STRIPE_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
    )


class StripeProvider:
    name = NAME

    def submitted(self, payout: Payout) -> None:
        from crowd.jobs import send_on_commit
        from payouts.jobs import payout_send

        send_on_commit(payout_send, payout.pk)


def ready_account(worker: User) -> PayoutAccount:
    account = PayoutAccount.objects.filter(worker=worker, provider=NAME).first()
    if account is None or not account.payouts_enabled:
        raise Conflict(
            "Set up your Stripe account for payouts first (POST /api/v1/me/payout-account/).",
            code="payout_account_required",
        )
    return account


# --- Onboarding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Onboarding:
    account: PayoutAccount
    url: str | None  # None once onboarding is complete


def onboarding_start(*, worker: User, refresh_url: str, return_url: str) -> Onboarding:
    """The worker's Express account (made on first use) and a fresh onboarding link."""
    for name, url in (("refresh_url", refresh_url), ("return_url", return_url)):
        if not url.startswith(("https://", "http://")):
            raise InvalidInput(errors={name: ["An absolute http(s) URL."]})
    account = PayoutAccount.objects.filter(worker=worker, provider=NAME).first()
    if account is None:
        account_params: Any = {
            "type": "express",
            "email": worker.email or None,
            "capabilities": {"transfers": {"requested": True}},
            "metadata": {"worker": str(worker.pk)},
        }
        created = client().v1.accounts.create(
            params=account_params, options={"idempotency_key": f"crowd-account-{worker.pk}"}
        )
        try:
            with transaction.atomic():
                account = PayoutAccount.objects.create(
                    worker=worker, provider=NAME, external_id=created.id,
                    payouts_enabled=bool(created.payouts_enabled),
                    details_submitted=bool(created.details_submitted),
                )  # fmt: skip
        except IntegrityError:  # a concurrent twin stored the same account
            account = PayoutAccount.objects.get(worker=worker, provider=NAME)
    if account.payouts_enabled:
        return Onboarding(account, None)
    params: Any = {
        "account": account.external_id,
        "refresh_url": refresh_url,
        "return_url": return_url,
        "type": "account_onboarding",
    }
    link = client().v1.account_links.create(params=params)
    return Onboarding(account, link.url)


def account_refresh(account: PayoutAccount) -> PayoutAccount:
    """Read the account's state from Stripe (the return URL after onboarding calls this)."""
    remote = client().v1.accounts.retrieve(account.external_id)
    return _account_update(account.external_id, remote.to_dict())


def _account_update(external_id: str, remote: dict[str, Any]) -> PayoutAccount:
    account = PayoutAccount.objects.get(provider=NAME, external_id=external_id)
    account.payouts_enabled = bool(remote.get("payouts_enabled"))
    account.details_submitted = bool(remote.get("details_submitted"))
    account.save(update_fields=["payouts_enabled", "details_submitted", "updated_at"])
    return account


# --- Transfers ---------------------------------------------------------------------------------


def payout_send(*, payout_id: int) -> Payout:
    """Send a requested or processing payout as a transfer. Safe to repeat: the transfer's
    idempotency key is the payout's, and a settled payout is left alone."""
    payout = Payout.objects.select_related("worker").get(pk=payout_id)
    if payout.status in (PayoutStatus.PAID, PayoutStatus.FAILED):
        return payout
    account = PayoutAccount.objects.filter(worker=payout.worker, provider=NAME).first()
    # Once processing, an earlier attempt may have reached Stripe: only the same call with
    # the same key may settle it, whatever the account's state is now.
    ready = account is not None and account.payouts_enabled
    if account is None or (not ready and payout.status == PayoutStatus.REQUESTED):
        return services.payout_transition(
            payout_id=payout.pk, status=PayoutStatus.FAILED,
            reason="No Stripe account ready for payouts; set one up and request again.",
        )  # fmt: skip
    if payout.status == PayoutStatus.REQUESTED:
        payout = services.payout_transition(payout_id=payout.pk, status=PayoutStatus.PROCESSING)
    Payout.objects.filter(pk=payout.pk).update(attempts=payout.attempts + 1)
    try:
        transfer = client().v1.transfers.create(
            params={
                "amount": payout.amount,
                "currency": payout.currency.lower(),
                "destination": account.external_id,
                "transfer_group": f"payout-{payout.pk}",
                "description": f"Payout {payout.pk}",
                "metadata": {"payout": str(payout.pk), "worker": str(payout.worker_id)},
            },
            options={"idempotency_key": payout.idempotency_key},
        )
    except PERMANENT as exc:
        log.warning("payout %s refused by Stripe: %s", payout.pk, exc.user_message or exc)
        return services.payout_transition(
            payout_id=payout.pk, status=PayoutStatus.FAILED,
            reason=str(exc.user_message or "Stripe refused the transfer."),
        )  # fmt: skip
    return services.payout_transition(
        payout_id=payout.pk, status=PayoutStatus.PAID, provider_ref=transfer.id
    )


# --- Webhooks ----------------------------------------------------------------------------------


def webhook_handle(*, payload: bytes, signature: str) -> tuple[str, bool]:
    """Verify and apply a Stripe event; returns (type, applied). A replayed event is
    recognised by its id and changes nothing."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise Conflict("Stripe webhooks are not configured.", code="webhooks_off")
    try:
        event = stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET)
    except (ValueError, stripe.SignatureVerificationError):
        raise InvalidInput("The event's signature does not verify.", code="bad_signature") from None
    data = event.to_dict()
    kind = data["type"]
    obj = data["data"]["object"]
    try:
        with transaction.atomic():
            WebhookEvent.objects.create(provider=NAME, event_id=data["id"], type=kind)
            _apply(kind, obj)
    except IntegrityError:
        return kind, False
    return kind, True


def _payout_of(transfer: dict[str, Any]) -> Payout | None:
    metadata = transfer.get("metadata") or {}
    payout_id = metadata.get("payout")
    if not payout_id or not str(payout_id).isdigit():
        return None
    return Payout.objects.filter(pk=int(payout_id), provider=NAME).first()


def _apply(kind: str, obj: dict[str, Any]) -> None:
    if kind == "account.updated":
        if PayoutAccount.objects.filter(provider=NAME, external_id=obj["id"]).exists():
            _account_update(obj["id"], obj)
    elif kind == "transfer.created":
        # The transfer exists: a payout whose job died before recording it is paid.
        payout = _payout_of(obj)
        if payout is not None and payout.status in (
            PayoutStatus.REQUESTED, PayoutStatus.PROCESSING
        ):  # fmt: skip
            if payout.status == PayoutStatus.REQUESTED:
                services.payout_transition(payout_id=payout.pk, status=PayoutStatus.PROCESSING)
            services.payout_transition(
                payout_id=payout.pk, status=PayoutStatus.PAID, provider_ref=obj["id"]
            )
    elif kind == "transfer.reversed":
        # Stripe took the money back from the worker's account: it returns to their balance.
        payout = _payout_of(obj)
        if payout is not None and payout.status != PayoutStatus.FAILED:
            if payout.status == PayoutStatus.REQUESTED:
                services.payout_transition(payout_id=payout.pk, status=PayoutStatus.PROCESSING)
            services.payout_transition(
                payout_id=payout.pk, status=PayoutStatus.FAILED,
                reason="The transfer was reversed.",
            )  # fmt: skip


# --- Reconciliation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    payout: int | None
    transfer: str | None
    problem: str


def reconcile() -> list[Mismatch]:
    """Compare our Stripe payouts with Stripe's transfers, both ways."""
    transfers: dict[int, Any] = {}
    problems: list[Mismatch] = []
    for remote in client().v1.transfers.list(params={"limit": 100}).auto_paging_iter():
        transfer = remote.to_dict()
        payout_id = (transfer.get("metadata") or {}).get("payout")
        if not payout_id or not str(payout_id).isdigit():
            continue  # not one of ours
        if int(payout_id) in transfers:
            problems.append(Mismatch(int(payout_id), transfer["id"], "a second transfer"))
        transfers[int(payout_id)] = transfer
    ours = Payout.objects.filter(provider=NAME).order_by("pk")
    for payout in ours:
        transfer = transfers.pop(payout.pk, None)
        reversed_all = transfer is not None and bool(transfer.get("reversed"))
        if transfer is None:
            if payout.status == PayoutStatus.PAID:
                problems.append(Mismatch(payout.pk, None, "paid here, no transfer at Stripe"))
            elif payout.status == PayoutStatus.PROCESSING:
                problems.append(Mismatch(payout.pk, None, "processing, no transfer yet"))
            continue
        if transfer["amount"] != payout.amount or transfer["currency"] != payout.currency.lower():
            there = f"{transfer['amount']} {transfer['currency']}"
            problems.append(
                Mismatch(
                    payout.pk, transfer["id"],
                    f"amount {there} at Stripe, {payout.amount} {payout.currency} here",
                )
            )  # fmt: skip
        if payout.status == PayoutStatus.FAILED and not reversed_all:
            problems.append(
                Mismatch(payout.pk, transfer["id"], "failed here, transferred at Stripe")
            )
        elif payout.status in (PayoutStatus.REQUESTED, PayoutStatus.PROCESSING):
            problems.append(
                Mismatch(payout.pk, transfer["id"], f"{payout.status} here, transferred")
            )
        elif payout.status == PayoutStatus.PAID and reversed_all:
            problems.append(Mismatch(payout.pk, transfer["id"], "paid here, reversed at Stripe"))
        if payout.provider_ref and payout.provider_ref != transfer["id"]:
            problems.append(Mismatch(payout.pk, transfer["id"], f"recorded {payout.provider_ref}"))
    for payout_id, transfer in transfers.items():
        problems.append(Mismatch(payout_id, transfer["id"], "transfer for an unknown payout"))
    return problems
