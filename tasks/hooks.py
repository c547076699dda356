"""Decisions and figures ``tasks`` needs from apps built on it, registered at start-up.

``tasks`` never imports ``qa`` or ``payouts``. Routing asks one :class:`RoutingPolicy` (which
``qa`` registers in its ``AppConfig.ready``) whether a worker may work and on what (an exam
is gold only), whether a task's answers agree well enough to complete it, and tells it when
a gold task was answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
class Admission:
    """Whether a worker may get tasks of a project now: a reason shown to them when they may
    not, and ``gold_only`` while they are taking the project's qualification exam."""

    reason: str | None = None
    gold_only: bool = False


ADMITTED = Admission()


@dataclass(frozen=True)
class Decision:
    """What to do with a task that has its required answers."""

    complete: bool
    confidence: float | None = None


class RoutingPolicy(Protocol):
    def admission(self, *, project: Project, worker: User) -> Admission:
        """May the worker get tasks of this project, and which (called by every ``next``)."""

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        """Complete the task, or ask for one more answer. Called inside the transaction that
        holds the task's row lock, once its answers reach the required overlap."""

    def gold_answered(self, *, assignment: Assignment) -> None:
        """A worker answered a gold task (inside the submitting transaction)."""

    def barred_projects(self, *, worker_id: int) -> set[int]:
        """Projects whose work this worker may not see now (live availability included)."""

    def barred_workers(self, *, project_id: int) -> set[int]:
        """Workers who may not see this project's work now."""


class CompleteAtOverlap:
    """Before ``qa`` registers its policy: everyone may work, a task completes at its overlap."""

    def admission(self, *, project: Project, worker: User) -> Admission:
        return ADMITTED

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        return Decision(complete=True)

    def gold_answered(self, *, assignment: Assignment) -> None:
        return None

    def barred_projects(self, *, worker_id: int) -> set[int]:
        return set()

    def barred_workers(self, *, project_id: int) -> set[int]:
        return set()


_policy: RoutingPolicy = CompleteAtOverlap()


def register_routing_policy(policy: RoutingPolicy) -> None:
    global _policy
    _policy = policy


def routing_policy() -> RoutingPolicy:
    return _policy


# What each worker has earned in a project, in minor units of the project's currency:
# ``payouts`` registers the ledger's answer; until then nobody has earned anything.
Earnings = Callable[["Project", Sequence[int]], dict[int, int]]
_earnings: Earnings = lambda project, worker_ids: {}  # noqa: E731


def register_earnings(earnings: Earnings) -> None:
    global _earnings
    _earnings = earnings


def worker_earnings(project: Project, worker_ids: Sequence[int]) -> dict[int, int]:
    return _earnings(project, worker_ids)


# Whether a project's budget leaves room for one more task at its reward: ``payouts`` registers
# the ledger's answer; until then no project has a budget to exhaust.
BudgetCheck = Callable[["Project"], bool]
_budget_exhausted: BudgetCheck = lambda project: False  # noqa: E731


def register_budget_check(check: BudgetCheck) -> None:
    global _budget_exhausted
    _budget_exhausted = check


def budget_exhausted(project: Project) -> bool:
    return project.budget is not None and _budget_exhausted(project)


# Work other apps want done on the periodic sweep (``payouts``: approve answers whose review
# delay has passed). Each runs in the sweep job, after the leases.
_periodic: dict[str, Callable[[], object]] = {}


def register_periodic(name: str, work: Callable[[], object]) -> None:
    _periodic[name] = work


def run_periodic() -> None:
    for work in _periodic.values():
        work()


# Who hears that a gold answer failed its check (``payouts``: the project may reject it).
_gold_failed: dict[str, Callable[[Assignment], object]] = {}


def register_gold_failed(name: str, listener: Callable[[Assignment], object]) -> None:
    _gold_failed[name] = listener


def gold_failed(assignment: Assignment) -> None:
    for listener in _gold_failed.values():
        listener(assignment)


# A worker's quality score in a project (``qa`` registers it); None while unknown.
WorkerScoreReader = Callable[["Project", int], "float | None"]
_worker_score: WorkerScoreReader = lambda project, worker_id: None  # noqa: E731


def register_worker_score(reader: WorkerScoreReader) -> None:
    global _worker_score
    _worker_score = reader


def worker_score(project: Project, worker_id: int) -> float | None:
    return _worker_score(project, worker_id)


# What other apps add to a worker's live snapshot (``payouts``: the balance; ``qa``: status).
_snapshot: dict[str, Callable[[object], list[dict[str, object]]]] = {}


def register_worker_snapshot(
    name: str, frames: Callable[[object], list[dict[str, object]]]
) -> None:
    _snapshot[name] = frames


def worker_snapshot(user: object) -> list[dict[str, object]]:
    return [frame for frames in _snapshot.values() for frame in frames(user)]
