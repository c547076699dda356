"""The routing policy ``qa`` gives ``tasks``: may this worker work, is this task done?"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from crowd.models import User
from qa import services
from tasks.hooks import Admission, Decision
from tasks.models import Assignment, Kind, Project, Task


def task_agreement(
    project: Project, task: Task, answers: Sequence[Assignment]
) -> tuple[float, dict[int, float]]:
    """How well the answers agree (the task's confidence), and each worker's agreement with
    the others: classification by the leading label's vote share; shapes by the mean
    pairwise F1 of matched objects (IoU / OKS at the project's threshold)."""
    if project.kind == Kind.CLASSIFICATION:
        labels = {a.worker_id: a.answer[0]["label"] for a in answers if a.answer}
        if not labels:
            return 0.0, {}
        leading, votes = Counter(labels.values()).most_common(1)[0]
        share = votes / len(labels)
        return share, {w: float(label == leading) for w, label in labels.items()}
    if len(answers) < 2:
        return 0.0, {}
    image = task.image
    totals = {a.worker_id: 0.0 for a in answers}
    pairs = []
    for a, b in combinations(answers, 2):
        f1 = services.answer_compare(
            project=project,
            reference=a.answer or [],
            answer=b.answer or [],
            width=image.width,
            height=image.height,
        ).f1
        pairs.append(f1)
        totals[a.worker_id] += f1
        totals[b.worker_id] += f1
    others = len(answers) - 1
    return sum(pairs) / len(pairs), {w: total / others for w, total in totals.items()}


class QaRoutingPolicy:
    def admission(self, *, project: Project, worker: User) -> Admission:
        return services.worker_admission(project=project, worker=worker)

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        """Suspended workers' answers do not count; the rest complete the task when they
        agree at the project's threshold. Agreement with a completed task's answers is
        evidence for each worker's score."""
        project = task.project
        suspended = services.suspended_workers(
            project=project, worker_ids=[a.worker_id for a in answers]
        )
        counted = [a for a in answers if a.worker_id not in suspended]
        if len(counted) < project.min_overlap:
            return Decision(complete=False)
        confidence, agreement = task_agreement(project, task, counted)
        complete = confidence >= project.agreement_threshold
        if complete:
            services.agreement_record(project=project, agreement=agreement)
        return Decision(complete=complete, confidence=confidence)

    def gold_answered(self, *, assignment: Assignment) -> None:
        services.gold_result_record(assignment=assignment)
