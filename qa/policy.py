"""The routing policy ``qa`` gives ``tasks``: may this worker work, is this task done?"""

from __future__ import annotations

from collections.abc import Sequence

from crowd.contracts import gold_failed
from crowd.models import User
from qa import services
from qa.merge import task_consensus, tasks_consensus
from tasks.hooks import Admission, Decision
from tasks.models import Assignment, Project, Task


class QaRoutingPolicy:
    def admission(self, *, project: Project, worker: User) -> Admission:
        return services.worker_admission(project=project, worker=worker)

    def admitted_sql(self) -> str:
        return services.ADMITTED_SQL

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        """Suspended workers' answers do not count; the rest complete the task when they
        agree with the consensus (reliability-weighted vote, or merged shapes) at the project's
        threshold. Each worker's agreement with a completed task's consensus is evidence for
        their score."""
        project = task.project
        suspended = services.suspended_workers(
            project_id=project.pk, worker_ids=[a.worker_id for a in answers]
        )
        counted = [a for a in answers if a.worker_id not in suspended]
        if len(counted) < project.min_overlap:
            return Decision(complete=False)
        consensus = task_consensus(project, task, counted)
        complete = consensus.confidence >= project.agreement_threshold
        if complete:
            services.agreement_record(project=project, agreement=consensus.agreement)
        return Decision(complete=complete, confidence=consensus.confidence)

    def decide_many(
        self, *, project: Project, tasks: Sequence[Task], answers: Sequence[Sequence[Assignment]]
    ) -> list[Decision]:
        """``decide`` for a batch: one read of the suspended workers and of the vote weights,
        one merge of all the tasks' shapes; the agreement evidence is recorded only for the
        decisions that are stored (``decisions_applied``), summed per worker."""
        every = {a.worker_id for group in answers for a in group}
        suspended = services.suspended_workers(project_id=project.pk, worker_ids=every)
        counted = [[a for a in group if a.worker_id not in suspended] for group in answers]
        enough = [k for k, group in enumerate(counted) if len(group) >= project.min_overlap]
        decisions = [Decision(complete=False) for _ in tasks]
        found = tasks_consensus(project, [tasks[k] for k in enough], [counted[k] for k in enough])
        for k, consensus in zip(enough, found, strict=True):
            complete = consensus.confidence >= project.agreement_threshold
            evidence = consensus.agreement if complete else None
            decisions[k] = Decision(complete, consensus.confidence, evidence)
        return decisions

    def decisions_applied(self, *, project: Project, decisions: Sequence[Decision]) -> None:
        agreements: dict[int, list[float]] = {}
        for decision in decisions:
            if isinstance(decision.evidence, dict):
                for worker_id, agreed in decision.evidence.items():
                    agreements.setdefault(worker_id, []).append(agreed)
        if agreements:
            services.agreements_record(project=project, agreements=agreements)

    def barred_projects(self, *, worker_id: int) -> set[int]:
        """Suspended workers see nothing of the project's work."""
        return services.suspensions(worker_id=worker_id)

    def barred_workers(self, *, project_id: int) -> set[int]:
        return services.suspended_workers(project_id=project_id)

    def gold_answered(self, *, assignment: Assignment) -> None:
        result = services.gold_result_record(assignment=assignment)
        if result is not None and not result.passed:
            gold_failed.notify(assignment)
