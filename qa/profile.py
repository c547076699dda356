"""What ``GET /me/`` shows of a worker's quality."""

from __future__ import annotations

from typing import Any

from django.db.models import Avg

from crowd.models import Role, User
from qa.models import WorkerScore, WorkerStatus


def my_quality(user: User) -> dict[str, Any]:
    """A worker's mean score over the projects they work in, and where they are suspended."""
    if user.role != Role.WORKER:
        return {}
    rows = WorkerScore.objects.filter(worker=user)
    mean = rows.exclude(status=WorkerStatus.EXAM).aggregate(score=Avg("score"))["score"]
    suspended = rows.filter(status=WorkerStatus.SUSPENDED).values("project_id", "status_reason")
    return {
        "score": None if mean is None else round(mean, 2),
        "suspensions": [
            {"project": s["project_id"], "reason": s["status_reason"]} for s in suspended
        ],
    }
