"""Money: the append-only ledger, bonuses, payouts and the accounts they go to.

Amounts are integer minor units of ``currency`` (ISO 4217). A worker's balance in a currency
is the sum of their entries in it; nothing else stores a balance. Entries are only ever
inserted: the model and its queryset refuse updates and deletes, and corrections are new
entries (a rejection after approval is an ``adjustment``, a failed payout a
``payout_reversal``). Database constraints, not Python checks, make an approved assignment
earn once, a bonus credit once, and a payout debit and reverse at most once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from tasks.models import Assignment, Project


class AppendOnly(Exception):
    """A ledger entry was about to be changed or deleted."""


class LedgerQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnly("Ledger entries are never updated; add a correcting entry.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnly("Ledger entries are never deleted; add a correcting entry.")


class EntryKind(models.TextChoices):
    REWARD = "reward"  # an approved assignment's pay (+)
    BONUS = "bonus"  # a manager's or a rule's bonus (+)
    PAYOUT = "payout"  # money leaving the balance for the worker's account (-)
    PAYOUT_REVERSAL = "payout_reversal"  # a failed payout's money coming back (+)
    ADJUSTMENT = "adjustment"  # a correction, e.g. a rejection after approval (+ or -)


class LedgerEntry(models.Model):
    worker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    bonus = models.ForeignKey(
        "Bonus", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    payout = models.ForeignKey(
        "Payout", null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    memo = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["assignment"], condition=Q(kind="reward"), name="ledger_one_reward"
            ),
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(kind="adjustment"),
                name="ledger_one_adjustment_per_assignment",
            ),
            models.UniqueConstraint(
                fields=["bonus"], condition=Q(kind="bonus"), name="ledger_one_bonus_credit"
            ),
            models.UniqueConstraint(
                fields=["payout", "kind"],
                condition=Q(kind__in=["payout", "payout_reversal"]),
                name="ledger_payout_once",
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["reward", "bonus", "payout_reversal"], amount__gt=0)
                    | Q(kind="payout", amount__lt=0)
                    | Q(kind="adjustment")
                ),
                name="ledger_amount_sign",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["reward"], assignment__isnull=False) | ~Q(kind="reward"),
                name="ledger_reward_has_assignment",
            ),
        ]
        indexes = [models.Index(fields=["worker", "currency"], name="ledger_worker_currency")]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise AppendOnly("Ledger entries are never updated; add a correcting entry.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnly("Ledger entries are never deleted; add a correcting entry.")


class Bonus(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="bonuses")
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=300)
    # The manager who granted it; None for the project's automatic bonus rule.
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rule = models.CharField(max_length=32, blank=True, default="")
    idempotency_key = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="bonus_positive"),
            models.UniqueConstraint(
                fields=["project", "granted_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="bonus_idempotency_key",
            ),
            # An automatic rule pays a worker at most once per project.
            models.UniqueConstraint(
                fields=["project", "worker", "rule"], condition=~Q(rule=""), name="bonus_rule_once"
            ),
        ]


class PayoutStatus(models.TextChoices):
    REQUESTED = "requested"
    PROCESSING = "processing"
    PAID = "paid"
    FAILED = "failed"


class Payout(models.Model):
    """Money on its way to a worker's account. requested -> processing -> paid | failed; the
    debit is written with the request, a failure writes the reversal."""

    worker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payouts"
    )
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    provider = models.CharField(max_length=16)
    status = models.CharField(
        max_length=16, choices=PayoutStatus.choices, default=PayoutStatus.REQUESTED
    )
    # The provider's id of the transfer (Stripe ``tr_...``) or the manual batch's reference.
    provider_ref = models.CharField(max_length=100, blank=True, default="")
    batch = models.ForeignKey(
        "PayoutBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="payouts"
    )
    failure_reason = models.CharField(max_length=300, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_positive"),
            # One payout in flight per worker and currency: a double request is refused by
            # the database, whatever the interleaving.
            models.UniqueConstraint(
                fields=["worker", "currency"],
                condition=Q(status__in=["requested", "processing"]),
                name="payout_one_open_per_worker",
            ),
        ]

    @property
    def idempotency_key(self) -> str:
        """The provider call's key: derived from our row, so every retry is the same call."""
        return f"crowd-payout-{self.pk}"


class PayoutBatch(models.Model):
    """Manual payouts handed to a manager as one CSV, marked paid by them."""

    currency = models.CharField(max_length=3)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    paid_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )


class PayoutAccount(models.Model):
    """Where a worker is paid by a provider: their Stripe Connect Express account."""

    worker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="payout_accounts"
    )
    provider = models.CharField(max_length=16)
    external_id = models.CharField(max_length=100)
    payouts_enabled = models.BooleanField(default=False)
    details_submitted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["worker", "provider"], name="payout_account_once"),
            models.UniqueConstraint(
                fields=["provider", "external_id"], name="payout_account_external_unique"
            ),
        ]


class WebhookEvent(models.Model):
    """A provider event handled once: a replay finds its row and changes nothing."""

    provider = models.CharField(max_length=16)
    event_id = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_once")
        ]


class ReviewFlag(models.Model):
    """An answer the automatic review rejects instead of approving when its review delay is
    over (a failed gold check in a project that rejects those). Acting at review time, not at
    submission, keeps the worker from learning which task was gold."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
