"""The ledger's rules: balances are sums, rewards are paid once, payouts never overdraw,
nothing is edited; checked on hand-made cases and on random sequences of events."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowd.errors import Conflict, InvalidInput
from payouts import services
from payouts.models import AppendOnly, Bonus, EntryKind, LedgerEntry, Payout, PayoutStatus
from tasks import routing
from tasks.models import Assignment, AssignmentStatus, Project
from tests.factories import WorkerFactory, project_with_tasks

REWARD = 25  # minor units


def paid_project(manager, tasks: int = 30, **fields: Any) -> Project:
    project = project_with_tasks(manager, tasks=tasks, overlap=1)
    Project.objects.filter(pk=project.pk).update(reward=REWARD, **fields)
    project.refresh_from_db()
    return project


def submit(project: Project, worker) -> Assignment | None:
    lease = routing.assignment_next(project=project, worker=worker)
    if lease is None:
        return None
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=[])
    lease.refresh_from_db()
    return lease


def earn(project: Project, worker, manager, answers: int) -> None:
    """The worker answers ``answers`` tasks and the manager approves them all."""
    for _ in range(answers):
        answer = submit(project, worker)
        assert answer is not None
        services.assignment_approve(assignment_id=answer.pk, by=manager)


@pytest.mark.django_db
@pytest.mark.both_databases
def test_an_approved_answer_earns_once(manager) -> None:
    project = paid_project(manager)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None
    services.assignment_approve(assignment_id=answer.pk, by=manager)
    services.assignment_approve(assignment_id=answer.pk, by=manager)  # a double click
    assert services.balance(worker.pk, "USD") == REWARD
    # Even a write that skips the service is refused by the database.
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            worker=worker, project=project, kind=EntryKind.REWARD, amount=REWARD,
            currency="USD", assignment=answer,
        )  # fmt: skip


@pytest.mark.django_db
def test_rejecting_a_paid_answer_adds_an_adjustment(manager) -> None:
    project = paid_project(manager)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None
    services.assignment_approve(assignment_id=answer.pk, by=manager)
    services.assignment_reject(assignment_id=answer.pk, by=manager, reason="Boxes off by far")
    kinds = list(LedgerEntry.objects.filter(worker=worker).values_list("kind", "amount"))
    assert kinds == [("reward", REWARD), ("adjustment", -REWARD)]
    assert services.balance(worker.pk, "USD") == 0
    answer.refresh_from_db()
    assert answer.status == "rejected"
    assert answer.review_reason == "Boxes off by far"
    with pytest.raises(Conflict):  # approving again would pay twice
        services.assignment_approve(assignment_id=answer.pk, by=manager)
    with pytest.raises(InvalidInput):
        services.assignment_reject(assignment_id=answer.pk, by=manager, reason="  ")


@pytest.mark.django_db
def test_entries_are_never_updated_or_deleted(manager) -> None:
    project = paid_project(manager)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None
    services.assignment_approve(assignment_id=answer.pk, by=manager)
    entry = LedgerEntry.objects.get()
    entry.amount = 10_000
    with pytest.raises(AppendOnly):
        entry.save()
    with pytest.raises(AppendOnly):
        entry.delete()
    with pytest.raises(AppendOnly):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=1)
    with pytest.raises(AppendOnly):
        LedgerEntry.objects.all().delete()
    assert LedgerEntry.objects.get().amount == REWARD


@pytest.mark.django_db
def test_a_payout_takes_the_balance_and_a_failure_returns_it(manager, settings) -> None:
    settings.MIN_PAYOUT = "0.75"
    project = paid_project(manager)
    worker = WorkerFactory.create()
    earn(project, worker, manager, 2)
    with pytest.raises(Conflict) as below:
        services.payout_request(worker=worker, currency="USD", provider="manual")
    assert below.value.code == "below_minimum"
    earn(project, worker, manager, 2)
    payout = services.payout_request(worker=worker, currency="USD", provider="manual")
    assert payout.amount == 4 * REWARD
    assert services.balance(worker.pk, "USD") == 0
    with pytest.raises(Conflict):
        services.payout_request(worker=worker, currency="USD", provider="manual")
    services.payout_transition(payout_id=payout.pk, status="processing")
    services.payout_transition(payout_id=payout.pk, status="failed", reason="Account closed")
    services.payout_transition(payout_id=payout.pk, status="failed")  # a replayed failure
    assert services.balance(worker.pk, "USD") == 4 * REWARD
    with pytest.raises(Conflict):
        services.payout_transition(payout_id=payout.pk, status="paid")


@pytest.mark.django_db
def test_auto_approval_waits_for_the_review_delay(manager) -> None:
    from datetime import timedelta

    from django.utils import timezone

    project = paid_project(manager, review_delay_hours=24)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None
    assert services.approvals_due() == 0
    later = timezone.now() + timedelta(hours=25)
    assert services.approvals_due(now=later) == 1
    answer.refresh_from_db()
    assert answer.status == "approved"
    assert answer.reviewed_by is None
    assert services.balance(worker.pk, "USD") == REWARD


@pytest.mark.django_db
@pytest.mark.both_databases
def test_the_review_sweep_picks_what_is_due_in_one_statement(manager) -> None:
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    soon = paid_project(manager, review_delay_hours=1, auto_reject_failed_gold=True)
    late = paid_project(manager, review_delay_hours=5)
    answers = {}
    for project, count in ((soon, 6), (late, 3)):
        worker = WorkerFactory.create()
        answers[project.pk] = [submit(project, worker) for _ in range(count)]
    flagged = answers[soon.pk][:2]
    for answer in flagged:
        assert answer is not None
        services.gold_failed(assignment=answer)
    with CaptureQueriesContext(connection) as queries:
        assert services.approvals_due(now=timezone.now() + timedelta(hours=2)) == 6
    # Past its own project's delay only: the late project's answers wait.
    statuses = {
        pk: sorted(Assignment.objects.filter(project_id=pk).values_list("status", flat=True))
        for pk in answers
    }
    assert statuses[soon.pk] == ["approved"] * 4 + ["rejected"] * 2
    assert statuses[late.pk] == ["submitted"] * 3
    # The flags came with the due answers, not one query per answer.
    flag_reads = [
        q["sql"] for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and "reviewflag" in q["sql"].split(" WHERE ")[0].lower()
        and "tasks_assignment" not in q["sql"].split(" WHERE ")[0]
    ]  # fmt: skip
    assert flag_reads == []


@pytest.mark.django_db
def test_bonuses_need_a_reason_a_project_worker_and_budget(manager) -> None:
    project = paid_project(manager, budget=1000)
    worker = WorkerFactory.create()
    stranger = WorkerFactory.create()
    assert submit(project, worker) is not None
    bonus, created = services.bonus_grant(
        project=project, worker_id=worker.pk, amount=150, reason="Careful work", by=manager,
        idempotency_key="k1",
    )  # fmt: skip
    again, created_again = services.bonus_grant(
        project=project, worker_id=worker.pk, amount=150, reason="Careful work", by=manager,
        idempotency_key="k1",
    )  # fmt: skip
    assert created
    assert not created_again
    assert again.pk == bonus.pk
    assert services.balance(worker.pk, "USD") == 150
    with pytest.raises(InvalidInput):
        services.bonus_grant(project=project, worker_id=stranger.pk, amount=100, reason="x",
                             by=manager)  # fmt: skip
    with pytest.raises(InvalidInput):
        services.bonus_grant(project=project, worker_id=worker.pk, amount=-100, reason="x",
                             by=manager)  # fmt: skip
    # 1000 budget: 150 bonus + 25 submitted = 175 committed, 825 left.
    with pytest.raises(Conflict) as over:
        services.bonus_grant(project=project, worker_id=worker.pk, amount=826, reason="x",
                             by=manager)  # fmt: skip
    assert over.value.code == "budget_exceeded"


# --- Random sequences ----------------------------------------------------------------------------

WORKERS = 3
operation = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, WORKERS - 1)),
    st.tuples(st.just("approve"), st.integers(0, 50)),
    st.tuples(st.just("reject"), st.integers(0, 50)),
    st.tuples(st.just("bonus"), st.integers(0, WORKERS - 1), st.integers(1, 500)),
    st.tuples(st.just("payout"), st.integers(0, WORKERS - 1)),
    st.tuples(st.just("paid"), st.integers(0, 50)),
    st.tuples(st.just("fail"), st.integers(0, 50)),
)


@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(operation, min_size=1, max_size=40))
def test_random_sequences_keep_the_books_straight(manager, settings, operations) -> None:
    """After every step: each worker's balance equals what the events say it should be (an
    independent tally), a payout never takes more than the balance, and no assignment has
    more than one reward or more than its reward in net pay."""
    settings.MIN_PAYOUT = "0.01"
    project = paid_project(manager, tasks=45)
    workers = [WorkerFactory.create() for _ in range(WORKERS)]
    expected: dict[int, int] = defaultdict(int)
    answers: list[Assignment] = []
    payouts: list[Payout] = []
    for op in operations:
        kind = op[0]
        if kind == "submit":
            answer = submit(project, workers[op[1]])
            if answer is not None:
                answers.append(answer)
        elif kind in ("approve", "reject") and answers:
            answer = answers[op[1] % len(answers)]
            answer.refresh_from_db()
            paid_before = LedgerEntry.objects.filter(assignment=answer, kind="reward").exists()
            try:
                if kind == "approve":
                    services.assignment_approve(assignment_id=answer.pk, by=manager)
                    if not paid_before:
                        expected[answer.worker_id] += REWARD
                else:
                    services.assignment_reject(assignment_id=answer.pk, by=manager, reason="no")
                    if answer.status == AssignmentStatus.APPROVED:
                        expected[answer.worker_id] -= REWARD
            except Conflict:
                assert kind == "approve"
                assert answer.status == "rejected"
                assert paid_before
        elif kind == "bonus":
            worker = workers[op[1]]
            try:
                services.bonus_grant(
                    project=project, worker_id=worker.pk, amount=op[2],
                    reason="bonus", by=manager,
                )  # fmt: skip
                expected[worker.pk] += op[2]
            except InvalidInput:
                assert not Assignment.objects.filter(project=project, worker=worker).exists()
        elif kind == "payout":
            worker = workers[op[1]]
            before = services.balance(worker.pk, "USD")
            try:
                payout = services.payout_request(worker=worker, currency="USD", provider="manual")
            except Conflict:
                continue
            assert 0 < payout.amount == before
            expected[worker.pk] -= payout.amount
            payouts.append(payout)
        elif kind in ("paid", "fail") and payouts:
            payout = payouts[op[1] % len(payouts)]
            payout.refresh_from_db()
            try:
                if kind == "paid":
                    if payout.status == PayoutStatus.REQUESTED:
                        services.payout_transition(payout_id=payout.pk, status="processing")
                    services.payout_transition(payout_id=payout.pk, status="paid")
                else:
                    services.payout_transition(payout_id=payout.pk, status="failed")
                    if payout.status != PayoutStatus.FAILED:
                        expected[payout.worker_id] += payout.amount
            except Conflict:
                assert payout.status == PayoutStatus.FAILED
        for worker in workers:
            entries = LedgerEntry.objects.filter(worker=worker)
            assert services.balance(worker.pk, "USD") == sum(e.amount for e in entries)
            assert services.balance(worker.pk, "USD") == expected[worker.pk]
    for answer in answers:
        rewards = LedgerEntry.objects.filter(assignment=answer, kind="reward").count()
        net = sum(LedgerEntry.objects.filter(assignment=answer).values_list("amount", flat=True))
        assert rewards <= 1
        assert net in (0, REWARD)


@pytest.mark.django_db
def test_routing_stops_at_the_budget(manager) -> None:
    # 3 tasks' worth: the fourth worker finds nothing while the others' work is committed.
    project = paid_project(manager, budget=3 * REWARD)
    workers = [WorkerFactory.create() for _ in range(4)]
    leases = [routing.assignment_next(project=project, worker=w) for w in workers]
    assert [lease is not None for lease in leases] == [True, True, True, False]
    # A lease given back frees its share of the budget.
    first = leases[0]
    assert first is not None
    routing.assignment_skip(assignment_id=first.pk, worker=workers[0])
    assert routing.assignment_next(project=project, worker=workers[3]) is not None


@pytest.mark.django_db
def test_a_failed_gold_answer_is_rejected_at_review_time_not_at_once(manager) -> None:
    from datetime import timedelta

    from django.utils import timezone

    project = paid_project(manager, review_delay_hours=1, auto_reject_failed_gold=True)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None
    services.gold_failed(assignment=answer)
    answer.refresh_from_db()
    assert answer.status == "submitted"  # nothing tells the worker yet
    services.approvals_due(now=timezone.now() + timedelta(hours=2))
    answer.refresh_from_db()
    assert answer.status == "rejected"
    assert "check task" in answer.review_reason
    assert services.balance(worker.pk, "USD") == 0


@pytest.mark.django_db
def test_fair_pay_warns_below_the_floor(manager, api_as) -> None:
    from payouts.selectors import fair_pay

    project = paid_project(manager)  # 0.25 a task
    worker = WorkerFactory.create()
    for _ in range(3):
        lease = routing.assignment_next(project=project, worker=worker)
        assert lease is not None
        routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=[])
    # Three minutes a task (the service caps a claimed time at the lease's real age).
    Assignment.objects.filter(project=project).update(time_spent_ms=180_000)
    pay = fair_pay(project)  # 0.25 per 3 minutes = 5.00 an hour
    assert pay["effective_hourly_rate"] == {"amount": "5.00", "currency": "USD"}
    assert "raise the reward to at least 0.50" in pay["fair_pay_warning"]
    progress = api_as(manager).get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["fair_pay_warning"] == pay["fair_pay_warning"]


@pytest.mark.django_db
def test_the_automatic_bonus_pays_good_workers_once(manager) -> None:
    from qa.models import WorkerScore

    project = paid_project(
        manager, auto_bonus_amount=100, auto_bonus_min_score=0.8, auto_bonus_min_answers=2
    )
    good, poor = WorkerFactory.create(), WorkerFactory.create()
    # Scores follow evidence: 49 of 50 gold right, and 35 of 50.
    WorkerScore.objects.create(project=project, worker=good, gold_seen=50, gold_score_sum=49)
    WorkerScore.objects.create(project=project, worker=poor, gold_seen=50, gold_score_sum=35)
    for _ in range(3):
        for worker in (good, poor):
            answer = submit(project, worker)
            assert answer is not None
            services.assignment_approve(assignment_id=answer.pk, by=manager)
    assert services.balance(good.pk, "USD") == 3 * REWARD + 100
    assert services.balance(poor.pk, "USD") == 3 * REWARD
    (bonus,) = Bonus.objects.filter(worker=good)
    assert bonus.rule == "score"
    assert bonus.granted_by is None
