"""What ``GET /me/`` shows of a worker's quality."""

from __future__ import annotations

from typing import Any

from crowd.models import Role, User
from qa.models import WorkerScore, WorkerStatus
from qa.services import shown_scores


def my_quality(user: User) -> dict[str, Any]:
    """A worker's mean score over the projects they work in (the scores shown to them, which
    move only in steps; see ``shown_scores``), and where they are suspended."""
    if user.role != Role.WORKER:
        return {}
    rows = list(WorkerScore.objects.filter(worker=user).order_by("project_id"))
    shown = shown_scores(worker_id=user.pk, rows=rows)
    scores = [
        score
        for row in rows
        if row.status != WorkerStatus.EXAM and (score := shown[row.project_id]) is not None
    ]
    return {
        "score": round(sum(scores) / len(scores), 2) if scores else None,
        "suspensions": [
            {"project": row.project_id, "reason": row.status_reason}
            for row in rows
            if row.status == WorkerStatus.SUSPENDED
        ],
    }
