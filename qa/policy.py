"""The routing policy ``qa`` gives ``tasks``: may this worker work, is this task done?"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from crowd.models import User
from tasks.hooks import Decision
from tasks.models import Assignment, Kind, Project, Task


class QaRoutingPolicy:
    def blocked(self, *, project: Project, worker: User) -> str | None:
        return None

    def decide(self, *, task: Task, answers: Sequence[Assignment]) -> Decision:
        project = task.project
        if project.kind == Kind.CLASSIFICATION:
            labels = [a.answer[0]["label"] for a in answers if a.answer]
            if not labels:
                return Decision(complete=False)
            _, votes = Counter(labels).most_common(1)[0]
            share = votes / len(labels)
            return Decision(complete=share >= project.agreement_threshold, confidence=share)
        # Shapes complete at their overlap until geometric agreement decides for them.
        return Decision(complete=True)

    def gold_answered(self, *, assignment: Assignment) -> None:
        return None
