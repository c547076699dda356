"""What ``GET /me/`` shows beyond the account itself.

Until ``payouts`` and ``qa`` contribute, a person has earned nothing and has no score, which is
what the defaults say.
"""

from __future__ import annotations

from django.conf import settings

from crowd.hooks import Contributions
from crowd.models import User
from crowd.money import money_json

me_contributions: Contributions[User] = Contributions(
    lambda user: {"balance": money_json(0, settings.DEFAULT_CURRENCY), "score": None}
)
