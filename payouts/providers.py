"""Payout providers behind one interface.

``manual`` (the embedded default): requested payouts wait for a manager, who gathers them into
a batch (a CSV to pay by hand: bank transfer, PayPal, ...), which moves them to processing,
and then marks the batch paid, or a payout failed (its money comes back).

``stripe`` (when ``STRIPE_SECRET_KEY`` is set): Stripe Connect Express. A worker onboards
through an account link; a payout is a ``Transfer`` to their connected account, sent by a job
with the idempotency key derived from our payout id, so a crash or timeout between Stripe's
answer and our commit is settled by retrying the same call, never by paying again.
"""

from __future__ import annotations

import csv
import io
from typing import Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from crowd.errors import Conflict, InvalidInput
from crowd.models import User
from crowd.money import format_amount
from payouts import services
from payouts.models import Payout, PayoutAccount, PayoutBatch, PayoutStatus


class Provider(Protocol):
    name: str

    def submitted(self, payout: Payout) -> None:
        """A payout was requested (called inside the request's transaction)."""


class ManualProvider:
    name = "manual"

    def submitted(self, payout: Payout) -> None:
        """Manual payouts wait for a manager's batch."""


def active_provider() -> Provider:
    if settings.STRIPE_SECRET_KEY:
        from payouts.stripe_provider import StripeProvider

        return StripeProvider()
    return ManualProvider()


# --- Manual batches ----------------------------------------------------------------------------


@transaction.atomic
def batch_create(*, currency: str, by: User) -> PayoutBatch:
    """Gather every requested manual payout in ``currency`` into a batch: they become
    processing, and the batch's CSV lists them."""
    payouts = list(
        Payout.objects.select_for_update()
        .filter(provider=ManualProvider.name, currency=currency, status=PayoutStatus.REQUESTED)
        .order_by("pk")
    )
    if not payouts:
        raise Conflict(f"No requested payouts in {currency}.", code="nothing_to_pay")
    batch = PayoutBatch.objects.create(currency=currency, created_by=by)
    for payout in payouts:
        services.payout_transition(
            payout_id=payout.pk, status=PayoutStatus.PROCESSING, provider_ref=f"batch-{batch.pk}"
        )
    Payout.objects.filter(pk__in=[p.pk for p in payouts]).update(batch=batch)
    return batch


def batch_csv(batch: PayoutBatch) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["payout", "worker", "username", "email", "amount", "currency", "status"])
    for p in batch.payouts.select_related("worker").order_by("pk"):
        writer.writerow(
            [p.pk, p.worker_id, p.worker.username, p.worker.email,
             format_amount(p.amount, p.currency), p.currency, p.status]
        )  # fmt: skip
    return out.getvalue()


@transaction.atomic
def batch_mark_paid(*, batch: PayoutBatch, by: User) -> PayoutBatch:
    """The manager paid the batch: every payout still processing in it is paid."""
    batch = PayoutBatch.objects.select_for_update().get(pk=batch.pk)
    for payout_id in batch.payouts.filter(status=PayoutStatus.PROCESSING).values_list(
        "pk", flat=True
    ):
        services.payout_transition(payout_id=payout_id, status=PayoutStatus.PAID)
    if batch.paid_at is None:
        batch.paid_at, batch.paid_by = timezone.now(), by
        batch.save(update_fields=["paid_at", "paid_by"])
    return batch


def payout_mark_failed(*, payout: Payout, reason: str) -> Payout:
    if not reason.strip():
        raise InvalidInput(errors={"reason": ["Say why the payment failed."]})
    return services.payout_transition(
        payout_id=payout.pk, status=PayoutStatus.FAILED, reason=reason.strip()
    )


def account_for(worker: User, provider: str) -> PayoutAccount | None:
    return PayoutAccount.objects.filter(worker=worker, provider=provider).first()
