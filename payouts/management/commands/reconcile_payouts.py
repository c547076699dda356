"""Compare our Stripe payouts with Stripe's transfers and report every mismatch."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Compare payouts made through Stripe with Stripe's transfers (both ways) and list "
        "mismatches: transfers for unknown payouts, paid payouts without a transfer, different "
        "amounts, payouts still processing whose transfer exists. Exit status 1 on mismatches."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.STRIPE_SECRET_KEY:
            raise CommandError("STRIPE_SECRET_KEY is not set: payouts are manual here.")
        from payouts.stripe_provider import reconcile

        problems = reconcile()
        if not problems:
            self.stdout.write("Payouts and Stripe transfers agree.")
            return
        for p in problems:
            self.stdout.write(
                f"payout {p.payout or '-'}\ttransfer {p.transfer or '-'}\t{p.problem}"
            )
        raise CommandError(f"{len(problems)} mismatch(es).", returncode=1)
