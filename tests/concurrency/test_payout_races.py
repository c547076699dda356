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
