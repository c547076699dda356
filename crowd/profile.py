"""What ``GET /me/`` shows beyond the account itself, contributed by the apps that own it.

``crowd`` knows nothing of ledgers or scores; ``payouts`` and ``qa`` register a contributor at
start-up (``AppConfig.ready``) that fills in ``balance`` and ``score``. Until one does, a
person has earned nothing and has no score, which is what the defaults say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from crowd.models import User

MeContributor = Callable[[User], dict[str, Any]]
_contributors: dict[str, MeContributor] = {}


def register_me_contributor(name: str, contributor: MeContributor) -> None:
    """Register (or replace, so ``ready()`` running twice is harmless) a ``/me/`` contributor."""
    _contributors[name] = contributor


def me_fields(user: User) -> dict[str, Any]:
    from crowd.money import money_json

    fields: dict[str, Any] = {
        "balance": money_json(0, settings.DEFAULT_CURRENCY),
        "score": None,
    }
    for contributor in _contributors.values():
        fields.update(contributor(user))
    return fields
