"""Money under real concurrency on PostgreSQL: one payout however many requests race."""

from __future__ import annotations

import pytest

from crowd.errors import Conflict
from payouts import services
from payouts.models import LedgerEntry, Payout
from tests.concurrency.test_routing_races import run_threads
from tests.factories import WorkerFactory
from tests.payouts.test_ledger import REWARD, earn, paid_project, submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_payout_requests_of_one_worker_make_one_payout(manager, settings) -> None:
    settings.MIN_PAYOUT = "0.10"
    project = paid_project(manager)
    worker = WorkerFactory.create()
    earn(project, worker, manager, 4)
    refused: list[str] = []

    def body(index: int) -> None:
        try:
            services.payout_request(worker=worker, currency="USD", provider="manual")
        except Conflict as exc:
            refused.append(exc.code)

    assert run_threads(12, body) == []
    assert Payout.objects.count() == 1
    assert len(refused) == 11
    assert services.balance(worker.pk, "USD") == 0
    assert LedgerEntry.objects.filter(kind="payout").get().amount == -4 * REWARD


def test_concurrent_approvals_of_one_answer_pay_once(manager) -> None:
    project = paid_project(manager)
    worker = WorkerFactory.create()
    answer = submit(project, worker)
    assert answer is not None

    def body(index: int) -> None:
        services.assignment_approve(assignment_id=answer.pk, by=manager)

    assert run_threads(12, body) == []
    assert LedgerEntry.objects.filter(kind="reward").count() == 1


def test_concurrent_claims_never_pass_the_budget(manager) -> None:
    """Three rewards' worth of budget, sixteen workers asking at once (and a manager's bonus
    racing them): the checks and the claims are one step, so the budget holds."""
    from payouts.services import bonus_grant, committed_spend
    from tasks import routing
    from tasks.models import Project

    project = paid_project(manager, budget=4 * REWARD)
    earner = WorkerFactory.create()
    first = routing.assignment_next(project=project, worker=earner)  # one reward committed
    assert first is not None
    workers = [WorkerFactory.create() for _ in range(16)]
    leases: list[int] = []
    bonuses: list[int] = []

    def body(index: int) -> None:
        mine = Project.objects.get(pk=project.pk)
        if index == len(workers):
            try:
                bonus, _ = bonus_grant(
                    project=mine, worker_id=earner.pk, amount=REWARD, reason="Tidy work",
                    by=manager,
                )  # fmt: skip
                bonuses.append(bonus.pk)
            except Conflict:
                pass
            return
        lease = routing.assignment_next(project=mine, worker=workers[index])
        if lease is not None:
            leases.append(lease.pk)

    budget = 4 * REWARD
    for _ in range(3):  # a race is a matter of luck: three rounds on fresh budgets
        assert run_threads(len(workers) + 1, body) == []
        assert committed_spend(project) <= budget, (len(leases), len(bonuses))
        assert len(leases) + len(bonuses) == 3
        budget += 3 * REWARD
        Project.objects.filter(pk=project.pk).update(budget=budget)
        project.refresh_from_db()
        leases.clear()
        bonuses.clear()
        workers = [WorkerFactory.create() for _ in range(16)]
