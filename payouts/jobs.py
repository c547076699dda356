"""Background jobs of payouts: thin, take ids, safe to run twice."""

from __future__ import annotations

import dramatiq


@dramatiq.actor(queue_name="payouts", max_retries=8, min_backoff=5_000, max_backoff=600_000)
def payout_send(payout_id: int) -> None:
    """Send a payout through Stripe; a transient failure raises and the job is retried with
    the same idempotency key."""
    from payouts.stripe_provider import payout_send as send

    send(payout_id=payout_id)
