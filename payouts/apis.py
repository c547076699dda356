"""Money over HTTP: reviews and bonuses (managers), a worker's ledger and payouts."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd.errors import Conflict, InvalidInput, NotFound
from crowd.models import User
from crowd.money import MoneyError, format_amount, normalize_currency, parse_amount
from crowd.permissions import IsManager, IsWorker, request_user
from payouts import services
from payouts.models import Bonus, LedgerEntry, Payout, PayoutAccount, PayoutBatch
from payouts.providers import (
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


def _reason(request: Request, *, required: bool) -> str:
    data = request.data if isinstance(request.data, dict) else {}
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise InvalidInput(errors={"reason": ["Text of at most 500 characters."]})
    if required and not reason.strip():
        raise InvalidInput(errors={"reason": ["Tell the worker why."]})
    return reason.strip()


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


Reason = inline_serializer("ReviewIn", {"reason": serializers.CharField(required=False)})


class AssignmentReviewApi(APIView):
    """One answer approved (``approve``) or rejected; rejecting needs a reason."""

    permission_classes = [IsManager]
    approve = True

    @extend_schema(request=Reason)
    def post(self, request: Request, assignment_id: int) -> Response:
        user = request_user(request)
        _managed_assignment(user, assignment_id)
        review = services.assignment_approve if self.approve else services.assignment_reject
        assignment = review(
            assignment_id=assignment_id, by=user, reason=_reason(request, required=not self.approve)
        )
        return Response(review_json(assignment))


class AssignmentApproveApi(AssignmentReviewApi):
    approve = True


class AssignmentRejectApi(AssignmentReviewApi):
    approve = False


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
        "reason": assignment.review_reason or None,
        "reviewed_at": assignment.reviewed_at.isoformat() if assignment.reviewed_at else None,
    }


class ProjectReviewsApi(APIView):
    """The review queue (answers oldest first, ``?status=`` submitted by default, ``?worker=``)
    and approving or rejecting many answers at once."""

    permission_classes = [IsManager]
    MAX_IDS = 1000

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=list(REVIEWABLE)),
            OpenApiParameter("worker", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("offset", int),
        ]
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_manager(request_user(request), project_id)
        state = request.query_params.get("status", "submitted")
        worker = request.query_params.get("worker")
        errors: dict[str, list[str]] = {}
        if state not in REVIEWABLE:
            errors["status"] = [f"One of {', '.join(REVIEWABLE)}."]
        if worker is not None and not worker.isdigit():
            errors["worker"] = ["A worker id."]
        if errors:
            raise InvalidInput(errors=errors)
        rows = (
            Assignment.objects.filter(project=project, status__in=REVIEWABLE[state])
            .select_related("worker", "task__image")
            .order_by("submitted_at", "pk")
        )
        if worker is not None:
            rows = rows.filter(worker_id=int(worker))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response([answer_review_json(a) for a in page])

    @extend_schema(
        request=inline_serializer(
            "BulkReviewIn",
            {
                "assignments": serializers.ListField(child=serializers.IntegerField()),
                "action": serializers.ChoiceField(["approve", "reject"]),
                "reason": serializers.CharField(required=False),
            },
        )
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = request.data if isinstance(request.data, dict) else {}
        ids = data.get("assignments")
        action = data.get("action")
        errors: dict[str, list[str]] = {}
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > self.MAX_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            errors["assignments"] = [f"A list of 1 to {self.MAX_IDS} assignment ids."]
        if action not in ("approve", "reject"):
            errors["action"] = ['"approve" or "reject".']
        if errors:
            raise InvalidInput(errors=errors)
        reason = _reason(request, required=action == "reject")
        result = services.reviews_bulk(
            project=project,
            assignment_ids=list(ids or []),
            approve=action == "approve",
            by=user,
            reason=reason,
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


class ProjectBonusesApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=inline_serializer(
            "BonusIn",
            {
                "worker": serializers.IntegerField(),
                "amount": serializers.CharField(),
                "reason": serializers.CharField(),
            },
        ),
        responses={201: dict},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = request.data if isinstance(request.data, dict) else {}
        key = request.headers.get("Idempotency-Key", "")[:100]
        bonus, created = services.bonus_grant(
            project=project, worker_id=data.get("worker"), amount=data.get("amount"),
            reason=data.get("reason"), by=user, idempotency_key=key,
        )  # fmt: skip
        return Response(
            bonus_json(bonus), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def get(self, request: Request, project_id: int) -> Response:
        project = project_for_manager(request_user(request), project_id)
        bonuses = Bonus.objects.filter(project=project).order_by("-pk")
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(bonuses, request, view=self) or []
        return paginator.get_paginated_response([bonus_json(b) for b in page])


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

    def get(self, request: Request) -> Response:
        entries = LedgerEntry.objects.filter(worker=request_user(request)).order_by("-pk")
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(entries, request, view=self) or []
        response = paginator.get_paginated_response([entry_json(e) for e in page])
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


class MyPayoutsApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=inline_serializer(
            "PayoutIn",
            {
                "amount": serializers.CharField(required=False),
                "currency": serializers.CharField(required=False),
            },
        ),
        responses={201: dict},
    )
    def post(self, request: Request) -> Response:
        user = request_user(request)
        data = request.data if isinstance(request.data, dict) else {}
        try:
            currency = normalize_currency(data.get("currency") or settings.DEFAULT_CURRENCY)
        except (MoneyError, TypeError, AttributeError):
            raise InvalidInput(errors={"currency": ["A three-letter currency code."]}) from None
        amount = None
        if data.get("amount") not in (None, ""):
            try:
                amount = parse_amount(str(data["amount"]), currency)
            except MoneyError as exc:
                raise InvalidInput(errors={"amount": [str(exc)]}) from None
        provider = active_provider()
        if provider.name == "stripe":
            from payouts.stripe_provider import ready_account

            ready_account(user)
        payout = services.payout_request(
            worker=user, currency=currency, provider=provider.name, amount=amount
        )
        provider.submitted(payout)
        return Response(payout_json(payout), status=status.HTTP_201_CREATED)

    def get(self, request: Request) -> Response:
        payouts = Payout.objects.filter(worker=request_user(request)).order_by("-pk")
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(payouts, request, view=self) or []
        return paginator.get_paginated_response([payout_json(p) for p in page])


# --- Payout accounts, operators' batches, webhooks -------------------------------------------


class MyPayoutAccountApi(APIView):
    """A worker's Stripe account: start or resume onboarding, or see whether it is ready."""

    permission_classes = [IsWorker]

    def get(self, request: Request) -> Response:
        provider = active_provider()
        account = account_for(request_user(request), provider.name)
        if account is not None and provider.name == "stripe" and not account.payouts_enabled:
            from payouts.stripe_provider import account_refresh

            account = account_refresh(account)
        return Response(account_json(provider.name, account, None))

    @extend_schema(
        request=inline_serializer(
            "PayoutAccountIn",
            {"refresh_url": serializers.URLField(), "return_url": serializers.URLField()},
        )
    )
    def post(self, request: Request) -> Response:
        provider = active_provider()
        if provider.name != "stripe":
            raise Conflict(
                "Payouts are made by hand here; no account to set up.", code="manual_payouts"
            )
        from payouts.stripe_provider import onboarding_start

        data = request.data if isinstance(request.data, dict) else {}
        onboarding = onboarding_start(
            worker=request_user(request),
            refresh_url=str(data.get("refresh_url", "")),
            return_url=str(data.get("return_url", "")),
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


class PayoutsApi(APIView):
    permission_classes = [IsOperator]

    def get(self, request: Request) -> Response:
        payouts = Payout.objects.order_by("-pk")
        for field in ("status", "currency", "provider"):
            if value := request.query_params.get(field):
                payouts = payouts.filter(**{field: value})
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(payouts, request, view=self) or []
        return paginator.get_paginated_response(
            [{**payout_json(p), "worker": p.worker_id, "batch": p.batch_id} for p in page]
        )


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


class PayoutBatchesApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        request=inline_serializer("BatchIn", {"currency": serializers.CharField()}),
        responses={201: dict},
    )
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        try:
            currency = normalize_currency(str(data.get("currency") or settings.DEFAULT_CURRENCY))
        except MoneyError as exc:
            raise InvalidInput(errors={"currency": [str(exc)]}) from None
        batch = batch_create(currency=currency, by=request_user(request))
        return Response(batch_json(batch), status=status.HTTP_201_CREATED)


def _batch(batch_id: int) -> PayoutBatch:
    batch = PayoutBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        raise NotFound("No such batch.")
    return batch


class PayoutBatchCsvApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, batch_id: int) -> HttpResponse:
        batch = _batch(batch_id)
        response = HttpResponse(batch_csv(batch), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="payout-batch-{batch.pk}.csv"'
        return response


class PayoutBatchPaidApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(request=None)
    def post(self, request: Request, batch_id: int) -> Response:
        batch = batch_mark_paid(batch=_batch(batch_id), by=request_user(request))
        return Response(batch_json(batch))


class PayoutFailedApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(request=Reason)
    def post(self, request: Request, payout_id: int) -> Response:
        payout = Payout.objects.filter(pk=payout_id).first()
        if payout is None:
            raise NotFound("No such payout.")
        payout = payout_mark_failed(payout=payout, reason=_reason(request, required=True))
        return Response(payout_json(payout))


class StripeWebhookApi(APIView):
    """Stripe's events: no session or token, the signature is the authentication."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={200: dict})
    def post(self, request: Request) -> Response:
        from payouts.stripe_provider import webhook_handle

        kind, applied = webhook_handle(
            payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
        return Response({"received": True, "type": kind, "applied": applied})
