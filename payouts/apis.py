"""Money over HTTP: reviews and bonuses (managers), a worker's ledger and payouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd.apis import MoneyOut
from crowd.errors import Conflict, NotFound
from crowd.fields import (
    IdListField,
    QueryIdField,
    StrictCharField,
    StrictIntegerField,
    messages,
)
from crowd.models import User
from crowd.money import MoneyError, format_amount, normalize_currency, parse_amount
from crowd.pagination import PAGE_PARAMETERS, page_of, paginate
from crowd.permissions import IsManager, IsWorker, request_user
from crowd.schema import AnnotationsField
from payouts import services
from payouts.models import Bonus, LedgerEntry, Payout, PayoutAccount, PayoutBatch, PayoutStatus
from payouts.providers import (
    ManualProvider,
    account_for,
    active_provider,
    batch_create,
    batch_csv,
    batch_mark_paid,
    payout_mark_failed,
)
from tasks.apis import image_file_url
from tasks.models import Assignment, AssignmentStatus
from tasks.selectors import project_for_manager

# --- Output shapes (what the views render, for the schema) ------------------------------------
# Statuses and kinds are documented as strings naming their values rather than as enums: the
# same field names (status, kind) carry other value sets elsewhere in the API.


def _text(help_text: str = "", **kwargs: Any) -> serializers.CharField:
    return serializers.CharField(help_text=help_text, **kwargs)


def _id_or_null(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(allow_null=True, help_text=help_text)


def _amount(help_text: str) -> serializers.CharField:
    return _text(f'{help_text} A decimal string in the currency\'s major unit ("5.00").')


def _currency_out() -> serializers.CharField:
    return _text("ISO 4217 code, e.g. USD.")


class ReviewOut(serializers.Serializer):
    id = serializers.IntegerField(help_text="The assignment.")
    status = _text("The assignment's status: approved or rejected after a review.")
    reason = _text("The reviewer's reason, or null.", allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)


class AnswerReviewOut(serializers.Serializer):
    id = serializers.IntegerField(help_text="The assignment.")
    status = _text("submitted, approved or rejected.")
    worker = _text("The worker's username.")
    worker_id = serializers.IntegerField()
    task = serializers.IntegerField()
    is_gold = serializers.BooleanField(help_text="Whether the task is a gold task.")
    image = serializers.IntegerField()
    image_name = _text()
    image_url = _text("The image file's path on this server (manager's credentials).")
    width = serializers.IntegerField(help_text="The image's width in pixels.")
    height = serializers.IntegerField(help_text="The image's height in pixels.")
    region = serializers.ListField(
        child=serializers.IntegerField(), min_length=4, max_length=4,
        help_text="[x, y, width, height] of the part of the image the task asked for.",
    )  # fmt: skip
    annotations = AnnotationsField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    time_spent_ms = serializers.IntegerField(allow_null=True)
    prelabels = serializers.JSONField(
        allow_null=True,
        help_text="What the answer did with the model's pre-labels: model_version, held_out, "
        "offered, objects [{annotation, prelabel, outcome}] (kept, moved, relabelled, "
        "deleted, added) and counts; null when the project offered none.",
    )
    reason = _text("The reviewer's reason, or null.", allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)


class BulkReviewOut(serializers.Serializer):
    done = serializers.ListField(
        child=serializers.IntegerField(), help_text="The assignments approved or rejected."
    )
    refused = serializers.DictField(
        child=serializers.CharField(),
        help_text="Assignment id -> why that one could not be reviewed (e.g. not submitted).",
    )


class BonusOut(serializers.Serializer):
    id = serializers.IntegerField()
    worker = serializers.IntegerField(help_text="The worker's id.")
    amount = _amount("The bonus.")
    currency = _currency_out()
    reason = _text("What it is for, as the worker sees it.")
    rule = _text("The automatic rule that granted it, or null for a manager's.", allow_null=True)
    created_at = serializers.DateTimeField()


class LedgerEntryOut(serializers.Serializer):
    id = serializers.IntegerField()
    kind = _text("reward, bonus, payout, payout_reversal or adjustment.")
    amount = _amount("Signed: negative for money leaving the balance.")
    currency = _currency_out()
    created_at = serializers.DateTimeField()
    assignment = _id_or_null("The assignment a reward or adjustment is for.")
    project = _id_or_null("The project the money came from.")
    bonus = _id_or_null("The bonus this entry credits.")
    payout = _id_or_null("The payout this entry debits or reverses.")
    memo = _text("A note, possibly empty.")


class LedgerPageOut(serializers.Serializer):
    count = serializers.IntegerField(help_text="Rows in the whole list.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last.")
    previous = serializers.URLField(
        allow_null=True, help_text="The previous page, or null on the first."
    )
    results = LedgerEntryOut(many=True)
    balances = MoneyOut(many=True, help_text="The worker's balance in each currency held.")


class PayoutOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = _text("requested, processing, paid or failed.")
    amount = _amount("The payout.")
    currency = _currency_out()
    provider = _text("How it is paid: manual (an operator's batch) or stripe.")
    failure_reason = _text("Why it failed, or null.", allow_null=True)
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)


class OperatorPayoutOut(PayoutOut):
    worker = serializers.IntegerField(help_text="The worker's id.")
    batch = _id_or_null("The manual batch it is paid in, or null.")


class PayoutAccountOut(serializers.Serializer):
    provider = _text("The active payout provider: manual or stripe.")
    account = _text("The worker's account id at the provider, or null.", allow_null=True)
    payouts_enabled = serializers.BooleanField()
    details_submitted = serializers.BooleanField()
    onboarding_url = serializers.URLField(
        allow_null=True, help_text="Where to send the worker to onboard (POST only), or null."
    )


class BatchOut(serializers.Serializer):
    id = serializers.IntegerField()
    currency = _currency_out()
    payouts = serializers.ListField(child=serializers.IntegerField(), help_text="Payout ids.")
    total = _amount("The sum of the batch's payouts.")
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    csv_url = _text("The path of the batch's CSV.")


@extend_schema_field({"type": "object", "additionalProperties": True})
class StripeObjectField(serializers.DictField):
    """The object an event is about, as Stripe sends it (an account, a transfer...)."""


class StripeEventDataIn(serializers.Serializer):
    object = StripeObjectField()


# The parts of a Stripe event this server reads; the rest of Stripe's payload is accepted as
# sent. Inline: a serializer class cannot declare a field named ``data``.
StripeEventIn = inline_serializer(
    "StripeEventIn",
    {
        "id": serializers.CharField(help_text="Stripe's event id (evt_...)."),
        "type": serializers.CharField(help_text="e.g. account.updated, transfer.created."),
        "data": StripeEventDataIn(),
    },
)


class WebhookOut(serializers.Serializer):
    received = serializers.BooleanField()
    type = serializers.CharField(help_text="The event's type.")
    applied = serializers.BooleanField(help_text="False for an event already received.")


REASON_TEXT = "Text of at most 500 characters."
REASON_WHY = "Tell the worker why."
_REASON_ERRORS = messages(REASON_TEXT, "invalid", "null", "max_length")


def _reason_field(*, required: bool) -> StrictCharField:
    # Not trimmed by the field: the length is that of the text as sent, the reason stored is
    # the text stripped.
    if required:
        why = {**_REASON_ERRORS, **messages(REASON_WHY, "required", "blank")}
        return StrictCharField(max_length=500, trim_whitespace=False, error_messages=why)
    return StrictCharField(
        required=False, default="", allow_blank=True, max_length=500, trim_whitespace=False,
        error_messages=_REASON_ERRORS,
    )  # fmt: skip


class ReasonIn(serializers.Serializer):
    """An optional reason (approving an answer)."""

    reason = _reason_field(required=False)

    def validate_reason(self, value: str) -> str:
        return value.strip()


class ReasonRequiredIn(serializers.Serializer):
    """A reason the worker is shown (rejecting an answer, a failed payout)."""

    reason = _reason_field(required=True)

    def validate_reason(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError(REASON_WHY)
        return value.strip()


def review_json(assignment: Assignment) -> dict[str, Any]:
    return {
        "id": assignment.pk,
        "status": assignment.status,
        "reason": assignment.review_reason or None,
        "reviewed_at": assignment.reviewed_at.isoformat() if assignment.reviewed_at else None,
    }


def _managed_assignment(user: User, assignment_id: int) -> Assignment:
    assignment = Assignment.objects.filter(pk=assignment_id).only("project_id").first()
    if assignment is None:
        raise NotFound("No such assignment.")
    project_for_manager(user, assignment.project_id)  # 404 for anyone else's
    return assignment


class _AssignmentReviewApi(APIView):
    """One answer reviewed: the reason is read with ``reason_in``, the review done by
    ``review`` (a service taking ``assignment_id``, ``by`` and ``reason``)."""

    permission_classes = [IsManager]
    reason_in: type[serializers.Serializer]
    review: Callable[..., Assignment]

    def post(self, request: Request, assignment_id: int) -> Response:
        user = request_user(request)
        _managed_assignment(user, assignment_id)
        data = self.reason_in(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = self.review(
            assignment_id=assignment_id, by=user, reason=data.validated_data["reason"]
        )
        return Response(review_json(assignment))


@extend_schema_view(
    post=extend_schema(
        request=ReasonIn,
        responses={200: ReviewOut},
        description="Approve one submitted answer of a project you manage: the worker is "
        "credited the task's reward (and any automatic bonus). Approving an approved answer "
        "changes nothing; an expired, skipped or leased one is a 409.",
    )
)
class AssignmentApproveApi(_AssignmentReviewApi):
    """One answer approved (a reason is optional)."""

    reason_in = ReasonIn
    review = staticmethod(services.assignment_approve)


@extend_schema_view(
    post=extend_schema(
        request=ReasonRequiredIn,
        responses={200: ReviewOut},
        description="Reject one answer of a project you manage, with the reason the worker is "
        "shown. The answer stops counting; rejecting an approved answer takes its reward back "
        "through a ledger adjustment.",
    )
)
class AssignmentRejectApi(_AssignmentReviewApi):
    """One answer rejected, with the reason the worker is shown."""

    reason_in = ReasonRequiredIn
    review = staticmethod(services.assignment_reject)


REVIEWABLE = {
    "submitted": [AssignmentStatus.SUBMITTED],
    "approved": [AssignmentStatus.APPROVED],
    "rejected": [AssignmentStatus.REJECTED],
    "all": list(AssignmentStatus.answered()),
}


def answer_review_json(assignment: Assignment) -> dict[str, Any]:
    task, image = assignment.task, assignment.task.image
    return {
        "id": assignment.pk,
        "status": assignment.status,
        "worker": assignment.worker.username,
        "worker_id": assignment.worker_id,
        "task": task.pk,
        "is_gold": task.is_gold,
        "image": image.pk,
        "image_name": image.name,
        "image_url": image_file_url(image.pk),
        "width": image.width,
        "height": image.height,
        "region": task.region,
        "annotations": assignment.answer or [],
        "submitted_at": assignment.submitted_at.isoformat() if assignment.submitted_at else None,
        "time_spent_ms": assignment.time_spent_ms,
        "prelabels": assignment.prelabels,
        "reason": assignment.review_reason or None,
        "reviewed_at": assignment.reviewed_at.isoformat() if assignment.reviewed_at else None,
    }


class ReviewQueueIn(serializers.Serializer):
    status = serializers.ChoiceField(
        list(REVIEWABLE), default="submitted",
        error_messages=messages(f"One of {', '.join(REVIEWABLE)}.", "invalid_choice"),
    )  # fmt: skip
    worker = QueryIdField(required=False, error_messages=messages("A worker id.", "invalid"))


class BulkReviewIn(serializers.Serializer):
    MAX_IDS = 1000
    ACTION = '"approve" or "reject".'

    assignments = IdListField(
        max_length=MAX_IDS, message=f"A list of 1 to {MAX_IDS} assignment ids."
    )
    action = serializers.ChoiceField(
        ["approve", "reject"],
        error_messages=messages(ACTION, "required", "null", "invalid_choice"),
    )
    reason = _reason_field(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        reason = attrs["reason"].strip()
        if attrs["action"] == "reject" and not reason:
            raise serializers.ValidationError({"reason": [REASON_WHY]})
        return {**attrs, "reason": reason}


class ProjectReviewsApi(APIView):
    """The review queue (answers oldest first, ``?status=`` submitted by default, ``?worker=``)
    and approving or rejecting many answers at once."""

    permission_classes = [IsManager]

    @extend_schema(
        parameters=[ReviewQueueIn, *PAGE_PARAMETERS],
        responses={200: page_of(AnswerReviewOut, "PaginatedAnswerReviewList")},
        operation_id="projects_reviews_list",
        description="The review queue of a project you manage (managers): answers oldest "
        "first, with their annotations and image, `?status=` submitted (default), approved, "
        "rejected or all, `?worker=` one worker's.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_manager(request_user(request), project_id)
        query = ReviewQueueIn(data=request.query_params)
        query.is_valid(raise_exception=True)
        worker = query.validated_data.get("worker")
        rows = (
            Assignment.objects.filter(
                project=project, status__in=REVIEWABLE[query.validated_data["status"]]
            )
            .select_related("worker", "task__image")
            .order_by("submitted_at", "pk")
        )
        if worker is not None:
            rows = rows.filter(worker_id=worker)
        return paginate(request, self, rows, lambda page: [answer_review_json(a) for a in page])

    @extend_schema(
        request=BulkReviewIn,
        responses={200: BulkReviewOut},
        description="Approve or reject many answers of a project you manage at once "
        "(managers; a reason is required to reject). Each answer is reviewed on its own: those "
        "that cannot be are listed under `refused` with why, the others under `done`.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = BulkReviewIn(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.reviews_bulk(
            project=project,
            assignment_ids=data.validated_data["assignments"],
            approve=data.validated_data["action"] == "approve",
            by=user,
            reason=data.validated_data["reason"],
        )
        return Response(result)


def bonus_json(bonus: Bonus) -> dict[str, Any]:
    return {
        "id": bonus.pk,
        "worker": bonus.worker_id,
        "amount": format_amount(bonus.amount, bonus.currency),
        "currency": bonus.currency,
        "reason": bonus.reason,
        "rule": bonus.rule or None,
        "created_at": bonus.created_at.isoformat(),
    }


class AmountTextField(StrictCharField):
    """An amount as sent: a decimal string, or a JSON number read as its decimal text. The
    serializer turns it into minor units once it knows the currency."""

    default_error_messages = messages(
        'Give the amount as a decimal string, e.g. "0.05".', "invalid"
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, int | float) and not isinstance(data, bool):
            data = str(data)
        return super().to_internal_value(data)


def _minor_units(text: str, currency: str) -> int:
    try:
        return parse_amount(text, currency)
    except MoneyError as exc:
        raise serializers.ValidationError(str(exc)) from None


def _currency_field(message: str) -> StrictCharField:
    """A currency code; absent, null or empty: the site's default currency."""
    return StrictCharField(
        required=False, default=None, allow_null=True, allow_blank=True, trim_whitespace=False,
        error_messages=messages(message, "invalid"),
    )  # fmt: skip


def _currency(value: str | None, message: str | None = None) -> str:
    try:
        return normalize_currency(value or settings.DEFAULT_CURRENCY)
    except MoneyError as exc:
        raise serializers.ValidationError(message or str(exc)) from None


class BonusIn(serializers.Serializer):
    """A bonus for a worker of the project, in the project's currency."""

    # The serializer reads the project's currency from ``context["currency"]``.

    WHAT_FOR = "Tell the worker what it is for."

    worker = StrictIntegerField(
        error_messages=messages(
            "Give the worker's id.", "required", "null", "invalid", "min_value", "max_value"
        )
    )
    amount = AmountTextField()
    reason = StrictCharField(
        max_length=300, trim_whitespace=False,
        error_messages={
            **messages(WHAT_FOR, "required", "null", "invalid", "blank"),
            **messages("At most 300 characters.", "max_length"),
        },
    )  # fmt: skip

    def validate_amount(self, value: str) -> int:
        return _minor_units(value, self.context["currency"])

    def validate_reason(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError(self.WHAT_FOR)
        return value.strip()


class ProjectBonusesApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=BonusIn,
        responses={
            201: BonusOut,
            200: OpenApiResponse(
                BonusOut, description="A repeat with the same Idempotency-Key: the bonus made."
            ),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Optional; a repeat with the same key grants nothing more.",
            )
        ],
        description="Grant a bonus to a worker who worked on a project you manage (managers), "
        "in the project's currency; it is credited to the worker's ledger at once. With an "
        "`Idempotency-Key` header, a repeat answers 200 with the bonus already granted.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = BonusIn(data=request.data, context={"currency": project.currency})
        data.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "")[:100]
        bonus, created = services.bonus_grant(
            project=project, worker_id=data.validated_data["worker"],
            amount=data.validated_data["amount"], reason=data.validated_data["reason"], by=user,
            idempotency_key=key,
        )  # fmt: skip
        return Response(
            bonus_json(bonus), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(BonusOut, "PaginatedBonusList")},
        operation_id="projects_bonuses_list",
        description="The bonuses granted on a project you manage (managers), by managers and "
        "by the automatic rule, newest first.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_manager(request_user(request), project_id)
        bonuses = Bonus.objects.filter(project=project).order_by("-pk")
        return paginate(request, self, bonuses, lambda page: [bonus_json(b) for b in page])


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.pk,
        "kind": entry.kind,
        "amount": format_amount(entry.amount, entry.currency),
        "currency": entry.currency,
        "created_at": entry.created_at.isoformat(),
        "assignment": entry.assignment_id,
        "project": entry.project_id,
        "bonus": entry.bonus_id,
        "payout": entry.payout_id,
        "memo": entry.memo,
    }


class MyLedgerApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: LedgerPageOut},
        operation_id="me_ledger_list",
        description="The calling worker's ledger, newest first: every reward, bonus, payout, "
        "reversal and adjustment as a signed amount, and (beside the page) the balance in each "
        "currency, which is the ledger's sum.",
    )
    def get(self, request: Request) -> Response:
        entries = LedgerEntry.objects.filter(worker=request_user(request)).order_by("-pk")
        response = paginate(request, self, entries, lambda page: [entry_json(e) for e in page])
        response.data["balances"] = [
            {"amount": format_amount(v, c), "currency": c}
            for c, v in services.balances(request_user(request).pk).items()
        ]
        return response


def payout_json(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.pk,
        "status": payout.status,
        "amount": format_amount(payout.amount, payout.currency),
        "currency": payout.currency,
        "provider": payout.provider,
        "failure_reason": payout.failure_reason or None,
        "created_at": payout.created_at.isoformat(),
        "paid_at": payout.paid_at.isoformat() if payout.paid_at else None,
    }


class PayoutIn(serializers.Serializer):
    """A payout: ``amount`` (default: the whole balance) in ``currency`` (default: the site's)."""

    CURRENCY = "A three-letter currency code."

    amount = AmountTextField(required=False, default=None, allow_null=True, allow_blank=True)
    currency = _currency_field(CURRENCY)

    def validate_currency(self, value: str | None) -> str:
        return _currency(value, self.CURRENCY)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        amount = attrs["amount"]
        if amount:
            try:
                attrs["amount"] = _minor_units(amount, attrs["currency"])
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"amount": exc.detail}) from None
        else:
            attrs["amount"] = None
        return attrs


class MyPayoutsApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=PayoutIn,
        responses={201: PayoutOut},
        description="Request a payout of the calling worker's balance (workers): `amount` "
        "(default: the whole balance) in `currency` (default: the site's). It must reach the "
        "minimum payout and not exceed the balance, which it debits at once; with Stripe the "
        "worker's account must be onboarded first (409 otherwise).",
    )
    def post(self, request: Request) -> Response:
        user = request_user(request)
        data = PayoutIn(data=request.data)
        data.is_valid(raise_exception=True)
        provider = active_provider()
        if provider.name == "stripe":
            from payouts.stripe_provider import ready_account

            ready_account(user)
        payout = services.payout_request(
            worker=user, currency=data.validated_data["currency"], provider=provider.name,
            amount=data.validated_data["amount"],
        )  # fmt: skip
        provider.submitted(payout)
        return Response(payout_json(payout), status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(PayoutOut, "PaginatedPayoutList")},
        operation_id="me_payouts_list",
        description="The calling worker's payouts, newest first, with their status and, for a "
        "failed one, why (its money is back in the balance).",
    )
    def get(self, request: Request) -> Response:
        payouts = Payout.objects.filter(worker=request_user(request)).order_by("-pk")
        return paginate(request, self, payouts, lambda page: [payout_json(p) for p in page])


# --- Payout accounts, operators' batches, webhooks -------------------------------------------


class HttpUrlField(StrictCharField):
    """An absolute http(s) URL (Stripe sends the worker back to it)."""

    default_error_messages = messages(
        "An absolute http(s) URL.", "required", "null", "blank", "invalid"
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        url = super().to_internal_value(data)
        if not url.startswith(("https://", "http://")):
            self.fail("invalid")
        return url


class PayoutAccountIn(serializers.Serializer):
    refresh_url = HttpUrlField(help_text="Where Stripe sends the worker when the link expired.")
    return_url = HttpUrlField(help_text="Where Stripe sends the worker after onboarding.")


class MyPayoutAccountApi(APIView):
    """A worker's Stripe account: start or resume onboarding, or see whether it is ready."""

    permission_classes = [IsWorker]

    @extend_schema(
        responses={200: PayoutAccountOut},
        description="The calling worker's payout account (workers): the active provider, and "
        "with Stripe whether the account exists and can receive payouts (refreshed from Stripe "
        "while it cannot). `onboarding_url` is always null here.",
    )
    def get(self, request: Request) -> Response:
        provider = active_provider()
        account = account_for(request_user(request), provider.name)
        if account is not None and provider.name == "stripe" and not account.payouts_enabled:
            from payouts.stripe_provider import account_refresh

            account = account_refresh(account)
        return Response(account_json(provider.name, account, None))

    @extend_schema(
        request=PayoutAccountIn,
        responses={200: PayoutAccountOut},
        description="Start or resume the calling worker's Stripe onboarding (workers): creates "
        "the account if needed and answers a fresh, short-lived `onboarding_url` to send the "
        "worker to. A 409 when payouts are made by hand (no Stripe).",
    )
    def post(self, request: Request) -> Response:
        provider = active_provider()
        if provider.name != "stripe":
            raise Conflict(
                "Payouts are made by hand here; no account to set up.", code="manual_payouts"
            )
        from payouts.stripe_provider import onboarding_start

        data = PayoutAccountIn(data=request.data)
        data.is_valid(raise_exception=True)
        onboarding = onboarding_start(
            worker=request_user(request),
            refresh_url=data.validated_data["refresh_url"],
            return_url=data.validated_data["return_url"],
        )
        return Response(account_json(provider.name, onboarding.account, onboarding.url))


def account_json(provider: str, account: PayoutAccount | None, url: str | None) -> dict[str, Any]:
    return {
        "provider": provider,
        "account": account.external_id if account else None,
        "payouts_enabled": bool(account and account.payouts_enabled),
        "details_submitted": bool(account and account.details_submitted),
        "onboarding_url": url,
    }


class IsOperator(IsManager):
    """Platform operators: staff managers, who pay manual payout batches."""

    message = "Only operators (staff managers) handle payouts."

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and bool(request.user.is_staff)


# Payout providers by name; Stripe's is imported only when configured.
PROVIDERS = [ManualProvider.name, "stripe"]


class PayoutsQueryIn(serializers.Serializer):
    """The operators' payout list's filters; absent or empty: any."""

    status = serializers.ChoiceField(
        PayoutStatus.values, required=False, allow_blank=True,
        error_messages=messages(f"One of {', '.join(PayoutStatus.values)}.", "invalid_choice"),
    )  # fmt: skip
    currency = serializers.CharField(
        required=False, allow_blank=True, max_length=3,
        error_messages=messages("A three-letter currency code.", "invalid", "max_length"),
    )  # fmt: skip
    provider = serializers.ChoiceField(
        PROVIDERS, required=False, allow_blank=True,
        error_messages=messages(f"One of {', '.join(PROVIDERS)}.", "invalid_choice"),
    )  # fmt: skip


class PayoutsApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        parameters=[PayoutsQueryIn, *PAGE_PARAMETERS],
        responses={200: page_of(OperatorPayoutOut, "PaginatedOperatorPayoutList")},
        operation_id="payouts_list",
        description="Every worker's payouts, newest first, for operators (staff managers), "
        "with the worker and the manual batch each is paid in.",
    )
    def get(self, request: Request) -> Response:
        query = PayoutsQueryIn(data=request.query_params)
        query.is_valid(raise_exception=True)
        payouts = Payout.objects.order_by("-pk")
        for field, value in query.validated_data.items():
            if value:
                payouts = payouts.filter(**{field: value})
        return paginate(
            request, self, payouts, lambda page: [operator_payout_json(p) for p in page]
        )


def operator_payout_json(payout: Payout) -> dict[str, Any]:
    return {**payout_json(payout), "worker": payout.worker_id, "batch": payout.batch_id}


def batch_json(batch: PayoutBatch) -> dict[str, Any]:
    payouts = list(batch.payouts.order_by("pk"))
    return {
        "id": batch.pk,
        "currency": batch.currency,
        "payouts": [p.pk for p in payouts],
        "total": format_amount(sum(p.amount for p in payouts), batch.currency),
        "created_at": batch.created_at.isoformat(),
        "paid_at": batch.paid_at.isoformat() if batch.paid_at else None,
        "csv_url": reverse("payout-batch-csv", args=[batch.pk]),
    }


class BatchIn(serializers.Serializer):
    currency = _currency_field("A three-letter ISO 4217 currency code.")

    def validate_currency(self, value: str | None) -> str:
        return _currency(value)


class PayoutBatchesApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        request=BatchIn,
        responses={201: BatchOut},
        description="Gather every requested manual payout in a currency into a batch for "
        "operators (staff managers) to pay by hand; they move to processing. A 409 when no "
        "payout is waiting.",
    )
    def post(self, request: Request) -> Response:
        data = BatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        batch = batch_create(currency=data.validated_data["currency"], by=request_user(request))
        return Response(batch_json(batch), status=status.HTTP_201_CREATED)


def _batch(batch_id: int) -> PayoutBatch:
    batch = PayoutBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        raise NotFound("No such batch.")
    return batch


class PayoutBatchCsvApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.BINARY, description="One row per payout of the batch."
            )
        },
        description="The batch as a CSV file to pay from (operators, staff managers): one row "
        "per payout, with the worker and the amount.",
    )
    def get(self, request: Request, batch_id: int) -> HttpResponse:
        batch = _batch(batch_id)
        response = HttpResponse(batch_csv(batch), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="payout-batch-{batch.pk}.csv"'
        return response


class PayoutBatchPaidApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        request=None,
        responses={200: BatchOut},
        description="Record that a batch has been paid (operators, staff managers): its "
        "payouts become paid. Marking a paid batch again changes nothing.",
    )
    def post(self, request: Request, batch_id: int) -> Response:
        batch = batch_mark_paid(batch=_batch(batch_id), by=request_user(request))
        return Response(batch_json(batch))


class PayoutFailedApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        request=ReasonRequiredIn,
        responses={200: PayoutOut},
        description="Record that a payout failed, with the reason the worker is shown "
        "(operators, staff managers), e.g. a bank's return of a paid one: its money goes back "
        "to the worker's balance. A payout that already failed is a 409.",
    )
    def post(self, request: Request, payout_id: int) -> Response:
        payout = Payout.objects.filter(pk=payout_id).first()
        if payout is None:
            raise NotFound("No such payout.")
        data = ReasonRequiredIn(data=request.data)
        data.is_valid(raise_exception=True)
        payout = payout_mark_failed(payout=payout, reason=data.validated_data["reason"])
        return Response(payout_json(payout))


class StripeWebhookApi(APIView):
    """Stripe's events: no session or token, the signature is the authentication."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        request={"application/json": StripeEventIn},
        responses={200: WebhookOut},
        parameters=[
            OpenApiParameter(
                "Stripe-Signature",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="Stripe's signature of the body, checked with the webhook secret.",
            )
        ],
        description="Stripe's event payload, posted by Stripe (no session or token: the "
        "`Stripe-Signature` header is checked, 400 if it does not verify; 409 when webhooks "
        "are not configured). Account updates and transfers change the accounts and payouts "
        "they concern; a replayed event is received but not applied again.",
    )
    def post(self, request: Request) -> Response:
        from payouts.stripe_provider import webhook_handle

        kind, applied = webhook_handle(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
        return Response({"received": True, "type": kind, "applied": applied})
