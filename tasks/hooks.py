"""Decisions and figures ``tasks`` needs from apps built on it, registered at start-up.

``tasks`` never imports ``qa`` or ``payouts``. Routing asks one :class:`RoutingPolicy` (which
``qa`` registers in its ``AppConfig.ready``) whether a worker may work, whether a task's
answers agree well enough to complete it, and tells it when a gold task was answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from crowd.hooks import Contributions
from crowd.money import money_json

if TYPE_CHECKING:
    from crowd.models import User
    from tasks.models import Assignment, Project, Task

# `/progress/` fields owned elsewhere: `payouts` contributes what the project has spent.
progress_contributions: Contributions[Project] = Contributions(
    lambda project: {"spent": money_json(0, project.currency)}
)


@dataclass(frozen=True)
class Decision:
    """What to do with a task that has its required answers."""

    complete: bool
    confidence: float | None = None


class RoutingPolicy(Protocol):
    def blocked(self, *, project: Project, worker: User) -> str | None:
        """A reason the worker may not get tasks of this project (shown to them), or None."""

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        """Complete the task, or ask for one more answer. Called inside the transaction that
        holds the task's row lock, once its answers reach the required overlap."""

    def gold_answered(self, *, assignment: Assignment) -> None:
        """A worker answered a gold task (inside the submitting transaction)."""


class CompleteAtOverlap:
    """Before ``qa`` registers its policy: everyone may work, a task completes at its overlap."""

    def blocked(self, *, project: Project, worker: User) -> str | None:
        return None

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        return Decision(complete=True)

    def gold_answered(self, *, assignment: Assignment) -> None:
        return None


_policy: RoutingPolicy = CompleteAtOverlap()


def register_routing_policy(policy: RoutingPolicy) -> None:
    global _policy
    _policy = policy


def routing_policy() -> RoutingPolicy:
    return _policy
