"""Live events of routing, published after commit to the worker's and the project's groups."""

from __future__ import annotations

from crowd.live import publish, user_group
from tasks.models import Assignment, Task


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def lease_granted(assignment: Assignment) -> None:
    publish(
        user_group(assignment.worker_id),
        {
            "type": "lease",
            "assignment": assignment.pk,
            "project": assignment.project_id,
            "expires_at": assignment.expires_at.isoformat(),
        },
    )


def lease_released(*, project_id: int) -> None:
    publish(project_group(project_id), {"type": "queue", "project": project_id})


def answer_submitted(assignment: Assignment, task: Task) -> None:
    publish(project_group(assignment.project_id), {"type": "queue", "project": task.project_id})
