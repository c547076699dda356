"""The contracts between ``qa`` and ``payouts``, neither of which imports the other.

``qa`` owns quality (scores, gold results), ``payouts`` owns money (the ledger); each shows or
acts on a little of the other's. Each contract is a :class:`crowd.hooks.Hook` declared here,
with the answer that holds until its owner registers (in its ``AppConfig.ready``):

- ``worker_score``: a worker's quality score in a project (``qa`` answers; ``payouts`` asks
  it for the automatic bonus). None while unknown.
- ``worker_earnings``: what each worker earned in a project, in minor units of its currency
  (``payouts`` answers; ``qa``'s workers table shows it). Nothing until then.
- ``gold_failed``: a gold answer failed its check (``qa`` tells; ``payouts`` flags the answer
  for the automatic review to reject when the project says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from crowd.hooks import Hook

if TYPE_CHECKING:
    from tasks.models import Assignment, Project


def _unknown_score(project: Project, worker_id: int) -> float | None:
    return None


def _nothing_earned(project: Project, worker_ids: Sequence[int]) -> dict[int, int]:
    return {}


def _nobody_listens(assignment: Assignment) -> None:
    return None


worker_score: Hook[[Project, int], float | None] = Hook(_unknown_score)
worker_earnings: Hook[[Project, Sequence[int]], dict[int, int]] = Hook(_nothing_earned)
gold_failed: Hook[[Assignment], None] = Hook(_nobody_listens)
