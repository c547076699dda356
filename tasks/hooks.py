"""Decisions and figures ``tasks`` needs from apps built on it, registered at start-up.

``tasks`` never imports ``qa`` or ``payouts``; they register here in ``AppConfig.ready``.
"""

from __future__ import annotations

from crowd.hooks import Contributions
from crowd.money import money_json
from tasks.models import Project

# `/progress/` fields owned elsewhere: `payouts` contributes what the project has spent.
progress_contributions: Contributions[Project] = Contributions(
    lambda project: {"spent": money_json(0, project.currency)}
)
