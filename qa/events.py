"""Live events of quality: a worker's status, published after commit.

Workers hear of their own status changes only, never of each gold result: a score that
moved right after a submission would tell them which task was gold.
"""

from __future__ import annotations

from crowd.live import publish, user_group
from qa.models import DatasetExport, WorkerScore
from tasks.events import project_group


def worker_changed(row: WorkerScore, *, status_changed: bool) -> None:
    publish(
        project_group(row.project_id),
        {
            "type": "worker",
            "project": row.project_id,
            "worker": row.worker_id,
            "score": round(row.score, 4),
            "status": row.status,
            "reason": row.status_reason or None,
        },
    )
    if status_changed:
        # The worker sees the score shown to them (see ``qa.services.shown_scores``), never
        # the live one: it would tell them which task was gold.
        shown = row.shown_score
        publish(
            user_group(row.worker_id),
            {
                "type": "score",
                "project": row.project_id,
                "score": None if shown is None else round(shown, 2),
                "status": row.status,
                "reason": row.status_reason or None,
            },
        )


def export_changed(export: DatasetExport) -> None:
    """An export's status and progress, for the project's managers."""
    publish(
        project_group(export.project_id),
        {
            "type": "export",
            "project": export.project_id,
            "id": export.pk,
            "version": export.version,
            "format": export.format,
            "status": export.status,
            "images_done": export.images_done,
            "images_total": export.images_total,
        },
    )


def status_frames(user: object) -> list[dict[str, object]]:
    """The worker's standing in each project, as the live ``score`` events carry it."""
    from qa.services import shown_scores

    worker_id = getattr(user, "pk", None)
    if worker_id is None:
        return []
    rows = list(WorkerScore.objects.filter(worker_id=worker_id).order_by("project_id"))
    shown = shown_scores(worker_id=worker_id, rows=rows)
    return [
        {
            "type": "score",
            "project": row.project_id,
            "score": None if (score := shown[row.project_id]) is None else round(score, 2),
            "status": row.status,
            "reason": row.status_reason or None,
        }
        for row in rows
    ]
