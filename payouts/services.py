"""Money writes: reviews and their rewards, bonuses, payout requests and their outcomes.

Every function that moves money runs in one transaction that takes the rows it depends on
with ``select_for_update`` (a no-op on SQLite, whose IMMEDIATE transactions already run one
writer at a time), so concurrent requests queue instead of interleaving. The ledger's
constraints are the last line: a second reward for one assignment, a second credit for one
bonus, a second open payout for one worker are refused by the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Q, Subquery, Sum
from django.utils import timezone

from crowd.contracts import worker_score
from crowd.errors import Conflict, InvalidInput, NotFound
from crowd.models import Role, User
from crowd.money import format_amount, money_json, parse_amount
from payouts.models import (
    Bonus,
    EntryKind,
    LedgerEntry,
    Payout,
    PayoutStatus,
    ReviewFlag,
)
from tasks.models import Assignment, AssignmentStatus, Project
from tasks.routing import answer_restore, answer_withdraw

# --- Balances ----------------------------------------------------------------------------------


def balance(worker_id: int, currency: str) -> int:
    """The worker's balance in ``currency``: the sum of their entries, in minor units."""
    total = LedgerEntry.objects.filter(worker_id=worker_id, currency=currency).aggregate(
        s=Sum("amount")
    )["s"]
    return int(total or 0)


def balances(worker_id: int) -> dict[str, int]:
    rows = (
        LedgerEntry.objects.filter(worker_id=worker_id)
        .values("currency")
        .annotate(s=Sum("amount"))
        .order_by("currency")
    )
    return {r["currency"]: int(r["s"]) for r in rows}


def project_earnings(project: Project, worker_ids: Sequence[int]) -> dict[int, int]:
    """What each worker has earned in the project (rewards, bonuses and adjustments)."""
    rows = (
        LedgerEntry.objects.filter(project=project, worker_id__in=list(worker_ids))
        .values("worker_id")
        .annotate(s=Sum("amount"))
    )
    return {r["worker_id"]: int(r["s"]) for r in rows}


# --- Reviews -----------------------------------------------------------------------------------


def _locked_assignment(assignment_id: int, project: Project | None) -> Assignment:
    query = Assignment.objects.select_for_update().select_related("project")
    if project is not None:
        query = query.filter(project=project)
    assignment = query.filter(pk=assignment_id).first()
    if assignment is None:
        raise NotFound("No such assignment.")
    if assignment.status not in AssignmentStatus.answered():
        raise Conflict(
            f"Only submitted answers are reviewed; this one is {assignment.status}.",
            code="not_reviewable",
        )
    return assignment


def _reward_paid(assignment: Assignment) -> bool:
    return LedgerEntry.objects.filter(assignment=assignment, kind=EntryKind.REWARD).exists()


def _reviewed(assignment: Assignment, status: str, by: User | None, reason: str) -> None:
    assignment.status = status
    assignment.reviewed_at = timezone.now()
    assignment.reviewed_by = by
    assignment.review_reason = reason[:500]
    assignment.save(update_fields=["status", "reviewed_at", "reviewed_by", "review_reason"])


@transaction.atomic
def assignment_approve(
    *, assignment_id: int, by: User | None, reason: str = "", project: Project | None = None
) -> Assignment:
    """Approve a submitted answer and credit its reward, once. Approving again changes
    nothing; an answer rejected after it was paid stays rejected (its money was taken back,
    and a second reward would pay it twice)."""
    assignment = _locked_assignment(assignment_id, project)
    if assignment.status == AssignmentStatus.APPROVED:
        return assignment
    if assignment.status == AssignmentStatus.REJECTED and _reward_paid(assignment):
        raise Conflict(
            "This answer was paid, then rejected; grant a bonus to pay the worker again.",
            code="rejected_after_payment",
        )
    if assignment.status == AssignmentStatus.REJECTED:
        answer_restore(assignment=assignment)
    _reviewed(assignment, AssignmentStatus.APPROVED, by, reason)
    reward = assignment.project.reward
    if reward > 0:
        LedgerEntry.objects.create(
            worker_id=assignment.worker_id, project=assignment.project, kind=EntryKind.REWARD,
            amount=reward, currency=assignment.project.currency, assignment=assignment,
            memo=f"Task {assignment.task_id} approved",
        )  # fmt: skip
        _balance_event(assignment.worker_id, assignment.project.currency)
    auto_bonus_check(assignment.project, assignment.worker_id)
    return assignment


AUTO_BONUS_RULE = "score"


def auto_bonus_check(project: Project, worker_id: int) -> Bonus | None:
    """The project's automatic bonus, once per worker: paid when their approved answers reach
    ``auto_bonus_min_answers`` and their score ``auto_bonus_min_score``."""
    if project.auto_bonus_amount <= 0:
        return None
    if Bonus.objects.filter(project=project, worker_id=worker_id, rule=AUTO_BONUS_RULE).exists():
        return None
    approved = Assignment.objects.filter(
        project=project, worker_id=worker_id, status=AssignmentStatus.APPROVED
    ).count()
    score = worker_score.ask(project, worker_id)
    if approved < project.auto_bonus_min_answers or score is None:
        return None
    if score < project.auto_bonus_min_score:
        return None
    try:
        bonus, _ = bonus_grant(
            project=project, worker_id=worker_id, amount=project.auto_bonus_amount,
            reason=f"Quality bonus: score {score:.2f} over {approved} approved answers",
            by=None, rule=AUTO_BONUS_RULE,
        )  # fmt: skip
    except Conflict:  # the budget has no room for it
        return None
    return bonus


@transaction.atomic
def assignment_reject(
    *, assignment_id: int, by: User | None, reason: str, project: Project | None = None
) -> Assignment:
    """Reject an answer with a reason the worker sees. The answer stops counting: a task it
    had completed asks for another answer. Rejecting a paid answer takes its reward back
    with an adjustment; the reward entry itself is never touched."""
    if not reason.strip():
        raise InvalidInput(errors={"reason": ["Tell the worker why."]})
    assignment = _locked_assignment(assignment_id, project)
    if assignment.status == AssignmentStatus.REJECTED:
        return assignment
    paid = LedgerEntry.objects.filter(assignment=assignment, kind=EntryKind.REWARD).first()
    _reviewed(assignment, AssignmentStatus.REJECTED, by, reason.strip())
    answer_withdraw(assignment=assignment)
    if paid is not None:
        LedgerEntry.objects.create(
            worker_id=assignment.worker_id, project=assignment.project,
            kind=EntryKind.ADJUSTMENT, amount=-paid.amount, currency=paid.currency,
            assignment=assignment, memo=f"Task {assignment.task_id} rejected after approval",
        )  # fmt: skip
        _balance_event(assignment.worker_id, paid.currency)
    return assignment


def reviews_bulk(
    *, project: Project, assignment_ids: list[int], approve: bool, by: User, reason: str
) -> dict[str, Any]:
    """Approve or reject many answers; each one in its own transaction, so one that cannot
    change does not hold back the others. Returns what happened to each."""
    done: list[int] = []
    refused: dict[str, str] = {}
    for assignment_id in dict.fromkeys(assignment_ids):
        try:
            if approve:
                assignment_approve(
                    assignment_id=assignment_id, by=by, reason=reason, project=project
                )
            else:
                assignment_reject(
                    assignment_id=assignment_id, by=by, reason=reason, project=project
                )
            done.append(assignment_id)
        except (NotFound, Conflict, InvalidInput) as exc:
            refused[str(assignment_id)] = exc.detail
    return {"done": done, "refused": refused}


def approvals_due(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Review the submitted answers whose project's review delay has passed: approve them,
    or reject those flagged for rejection. Returns how many were reviewed."""
    now = now or timezone.now()
    submitted = Assignment.objects.filter(
        status=AssignmentStatus.SUBMITTED, submitted_at__isnull=False
    )
    # Past each project's own delay: one condition per distinct delay, in one statement.
    delays = set(submitted.values_list("project__review_delay_hours", flat=True).distinct())
    if not delays:
        return 0
    past = Q()
    for hours in delays:
        past |= Q(project__review_delay_hours=hours, submitted_at__lte=now - timedelta(hours=hours))
    flag = ReviewFlag.objects.filter(assignment=OuterRef("pk")).values("reason")[:1]
    due = (
        submitted.filter(past)
        .annotate(flag=Subquery(flag))
        .order_by("submitted_at")
        .values_list("pk", "flag", "project__auto_reject_failed_gold")[:limit]
    )
    count = 0
    for assignment_id, flag_reason, reject_flagged in due:
        try:
            if flag_reason is not None and reject_flagged:
                assignment_reject(assignment_id=assignment_id, by=None, reason=flag_reason)
            else:
                assignment_approve(
                    assignment_id=assignment_id, by=None, reason="Approved after the review period."
                )
            count += 1
        except (NotFound, Conflict):
            continue
    return count


def approvals_sweep() -> None:
    while approvals_due(limit=1000) == 1000:
        pass


def gold_failed(*, assignment: Assignment) -> None:
    """A gold answer failed its check: flagged, so that the automatic review rejects it when
    the project says so (at review time, like every other answer)."""
    ReviewFlag.objects.get_or_create(
        assignment=assignment,
        defaults={"reason": "The answer did not match the expected answer on a check task."},
    )


# --- Budget ------------------------------------------------------------------------------------


def pending_spend(project: Project) -> int:
    """Submitted answers and open leases at the current reward: promised, not yet paid."""
    pending = Assignment.objects.filter(
        project=project, status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.LEASED]
    ).count()
    return pending * project.reward


def ledger_spend(project: Project) -> int:
    """Rewards, bonuses and adjustments the project has paid."""
    return int(LedgerEntry.objects.filter(project=project).aggregate(s=Sum("amount"))["s"] or 0)


def committed_spend(project: Project) -> int:
    """Money the project has spent or promised: the ledger, plus every submitted answer and
    open lease at the current reward."""
    return ledger_spend(project) + pending_spend(project)


def budget_left(project: Project) -> int | None:
    if project.budget is None:
        return None
    return project.budget - committed_spend(project)


def budget_blocks(project: Project) -> bool:
    """Whether handing out one more task could take the project past its budget."""
    left = budget_left(project)
    return left is not None and left < max(project.reward, 1)


# --- Bonuses -----------------------------------------------------------------------------------


def bonus_grant(
    *,
    project: Project,
    worker_id: int,
    amount: int,
    reason: str,
    by: User | None,
    idempotency_key: str = "",
    rule: str = "",
) -> tuple[Bonus, bool]:
    """Grant ``amount`` (minor units of the project's currency) to a worker who has worked on
    the project, for ``reason`` (shown to them); returns (bonus, created). A repeated request
    with the same idempotency key returns the first bonus."""
    if amount <= 0:
        raise InvalidInput(
            "The bonus is not valid.", errors={"amount": ["Must be more than zero."]}
        )
    if idempotency_key:
        earlier = Bonus.objects.filter(
            project=project, granted_by=by, idempotency_key=idempotency_key
        ).first()
        if earlier is not None:
            return earlier, False
    worker = User.objects.filter(pk=worker_id, role=Role.WORKER).first()
    if worker is None or not Assignment.objects.filter(project=project, worker=worker).exists():
        raise InvalidInput(errors={"worker": ["No worker of this project has that id."]})
    try:
        with transaction.atomic():
            project.lock()
            left = budget_left(project)
            if left is not None and amount > left:
                raise Conflict(
                    f"The bonus would pass the project's budget "
                    f"({format_amount(max(left, 0), project.currency)} left).",
                    code="budget_exceeded",
                )
            bonus = Bonus.objects.create(
                project=project, worker=worker, amount=amount, currency=project.currency,
                reason=reason, granted_by=by, idempotency_key=idempotency_key, rule=rule,
            )  # fmt: skip
            LedgerEntry.objects.create(
                worker=worker, project=project, kind=EntryKind.BONUS, amount=amount,
                currency=project.currency, bonus=bonus, memo=reason[:300],
            )  # fmt: skip
    except IntegrityError:
        # A concurrent twin with the same key (or the same rule) won.
        query = Bonus.objects.filter(project=project, worker=worker)
        query = (
            query.filter(granted_by=by, idempotency_key=idempotency_key)
            if idempotency_key
            else query.filter(rule=rule)
        )
        earlier = query.first()
        if earlier is None:
            raise
        return earlier, False
    _balance_event(worker.pk, project.currency)
    return bonus, True


# --- Payouts -----------------------------------------------------------------------------------


def minimum_payout(currency: str) -> int:
    return parse_amount(settings.MIN_PAYOUT, currency)


def payout_request(
    *, worker: User, currency: str, provider: str, amount: int | None = None
) -> Payout:
    """Move ``amount`` (default: the whole balance) in ``currency`` into a new payout: the
    payout row and its debit are written together. One open payout per worker and currency;
    an amount below the minimum or above the balance is refused."""
    try:
        with transaction.atomic():
            User.objects.select_for_update().filter(pk=worker.pk).first()
            if Payout.objects.filter(
                worker=worker, currency=currency,
                status__in=[PayoutStatus.REQUESTED, PayoutStatus.PROCESSING],
            ).exists():  # fmt: skip
                raise Conflict("A payout is already on its way.", code="payout_in_progress")
            available = balance(worker.pk, currency)
            amount = available if amount is None else amount
            minimum = minimum_payout(currency)
            if amount > available:
                raise Conflict(
                    f"The balance is {format_amount(available, currency)} {currency}; "
                    f"{format_amount(amount, currency)} cannot be paid out.",
                    code="above_balance",
                )
            if amount < max(minimum, 1):
                raise Conflict(
                    f"{format_amount(amount, currency)} {currency} is below the minimum payout "
                    f"of {format_amount(minimum, currency)} {currency}.",
                    code="below_minimum",
                )
            payout = Payout.objects.create(
                worker=worker, amount=amount, currency=currency, provider=provider
            )
            LedgerEntry.objects.create(
                worker=worker, kind=EntryKind.PAYOUT, amount=-amount, currency=currency,
                payout=payout, memo=f"Payout {payout.pk}",
            )  # fmt: skip
    except IntegrityError:
        raise Conflict("A payout is already on its way.", code="payout_in_progress") from None
    _balance_event(worker.pk, currency)
    return payout


_NEXT = {
    PayoutStatus.REQUESTED: {PayoutStatus.PROCESSING, PayoutStatus.FAILED},
    PayoutStatus.PROCESSING: {PayoutStatus.PAID, PayoutStatus.FAILED},
    PayoutStatus.PAID: {PayoutStatus.FAILED},  # the provider reversed a paid transfer
    PayoutStatus.FAILED: set(),
}


@transaction.atomic
def payout_transition(
    *, payout_id: int, status: str, provider_ref: str = "", reason: str = ""
) -> Payout:
    """Move a payout along its state machine; a failure returns its money with a reversal
    entry (once: the ledger's constraint). Repeating a transition already made is a no-op."""
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.status == status:
        return payout
    if status not in _NEXT[PayoutStatus(payout.status)]:
        raise Conflict(f"A {payout.status} payout cannot become {status}.", code="payout_state")
    payout.status = status
    if provider_ref:
        payout.provider_ref = provider_ref
    if status == PayoutStatus.PAID:
        payout.paid_at = timezone.now()
    if status == PayoutStatus.FAILED:
        payout.failure_reason = reason[:300]
        LedgerEntry.objects.create(
            worker_id=payout.worker_id, kind=EntryKind.PAYOUT_REVERSAL, amount=payout.amount,
            currency=payout.currency, payout=payout, memo=f"Payout {payout.pk} failed",
        )  # fmt: skip
        _balance_event(payout.worker_id, payout.currency)
    payout.save()
    return payout


def _balance_event(worker_id: int, currency: str) -> None:
    from crowd.live import publish, user_group

    amount = balance(worker_id, currency)
    publish(user_group(worker_id), {"type": "balance", **money_json(amount, currency)})
