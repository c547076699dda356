"""What ``GET /me/`` and ``/progress/`` show of money."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from crowd.models import Role, User
from crowd.money import money_json
from payouts import selectors, services
from tasks.models import Project


def my_money(user: User) -> dict[str, Any]:
    """A worker's balance in the default currency (the contract's one figure) and in every
    currency they hold."""
    if user.role != Role.WORKER:
        return {}
    held = services.balances(user.pk)
    default = settings.DEFAULT_CURRENCY
    return {
        "balance": money_json(held.get(default, 0), default),
        "balances": [money_json(amount, currency) for currency, amount in held.items()],
        "hourly_rates": selectors.worker_hourly_rates(user.pk),
    }


def project_spend(project: Project) -> dict[str, Any]:
    spent = services.ledger_spend(project)
    committed = spent + services.pending_spend(project)
    return {
        "spent": money_json(spent, project.currency),
        "committed": money_json(committed, project.currency),
        "budget": None if project.budget is None else money_json(project.budget, project.currency),
        **selectors.fair_pay(project),
    }


def balance_frames(user: object) -> list[dict[str, object]]:
    """The worker's balances as the live ``balance`` events carry them."""
    assert isinstance(user, User)
    return [
        {"type": "balance", **money_json(amount, currency)}
        for currency, amount in services.balances(user.pk).items()
    ]
