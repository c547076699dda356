"""Decisions and figures ``tasks`` itself needs from apps built on it, registered at start-up.

``tasks`` never imports ``qa`` or ``payouts``. Routing asks one :class:`RoutingPolicy` (which
``qa`` registers in its ``AppConfig.ready``) whether a worker may work and on what (an exam
is gold only), whether a task's answers agree well enough to complete it, and tells it when
a gold task was answered. The other hooks here are ``tasks``' own calls, in the one style of
``crowd.hooks``: the budget check inside the claim, the periodic sweep's work, the fields of
``/progress/`` and a worker's live snapshot. Contracts between ``qa`` and ``payouts`` live in
``crowd.contracts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from crowd.hooks import Contributions, Hook
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
    """What to do with a task that has its required answers. ``evidence``: what the policy
    learnt from it (each worker's agreement with the consensus), handed back to it by
    ``decisions_applied`` once the decision is stored."""

    complete: bool
    confidence: float | None = None
    evidence: object = None


class RoutingPolicy(Protocol):
    def admission(self, *, project: Project, worker: User) -> Admission:
        """May the worker get tasks of this project, and which (called by every ``next``)."""

    def admitted_sql(self) -> str | None:
        """An SQL condition on ``%(project)s`` and ``%(worker)s`` that holds exactly when
        ``admission`` would admit the worker to every task (no reason, not gold only) and
        has nothing to write first; None when there is none. The claim after an answer
        checks it in its own statement rather than asking ``admission`` in a read before;
        anything else (gold, a claim that finds nothing) asks ``admission`` as usual. A
        policy that changes ``admission`` changes this with it (or answers None)."""

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        """Complete the task, or ask for one more answer. Called inside the transaction that
        holds the task's row lock, once its answers reach the required overlap."""

    def decide_many(
        self, *, project: Project, tasks: Sequence[Task], answers: Sequence[Sequence[Assignment]]
    ) -> list[Decision]:
        """``decide`` for many tasks of one project at once (``answers[k]`` are those of
        ``tasks[k]``), holding no lock: the decision job's batch. Nothing is recorded here;
        the decisions stored are handed to ``decisions_applied``."""

    def decisions_applied(self, *, project: Project, decisions: Sequence[Decision]) -> None:
        """These decisions of ``decide_many`` were stored (inside that transaction)."""

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

    def admitted_sql(self) -> str | None:
        return None  # admission reads nothing

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        return Decision(complete=True)

    def decide_many(
        self, *, project: Project, tasks: Sequence[Task], answers: Sequence[Sequence[Assignment]]
    ) -> list[Decision]:
        return [Decision(complete=True) for _ in tasks]

    def decisions_applied(self, *, project: Project, decisions: Sequence[Decision]) -> None:
        return None

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


def _no_budget_to_exhaust(project: Project) -> bool:
    return False


def _no_snapshot(user: User) -> list[dict[str, object]]:
    return []


def _nothing_to_do() -> object:
    return None


# Whether a project's budget leaves no room for one more task at its reward: ``payouts``
# answers from the ledger; until then no project has a budget to exhaust.
budget_check: Hook[[Project], bool] = Hook(_no_budget_to_exhaust)


def budget_exhausted(project: Project) -> bool:
    return project.budget is not None and budget_check.ask(project)


# Work other apps want done on the periodic sweep (``payouts``: approve answers whose review
# delay has passed). The sweep job notifies them after the leases.
periodic: Hook[[], object] = Hook(_nothing_to_do)

# What other apps add to a worker's live snapshot (``payouts``: the balance; ``qa``: status).
worker_snapshot: Hook[[User], list[dict[str, object]]] = Hook(_no_snapshot)


def worker_snapshot_frames(user: User) -> list[dict[str, object]]:
    return [frame for frames in worker_snapshot.gather(user) for frame in frames]


def _nobody_listens(project_id: int) -> object:
    return None


# What auto-accept rests on changed in a project (its predictions, the setting, the scoring
# thresholds): ``qa`` queues its calibration and applying job.
auto_accept_inputs_changed: Hook[[int], object] = Hook(_nobody_listens)
