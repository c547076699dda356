"""Live channels of routing: the worker's ``/ws/worker/`` and a project's ``/ws/projects/{id}/``.

Consumers authenticate, join groups and forward; every event is built by the services that
publish it. The snapshot on connect reads the same frames the services send later.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from crowd.live import user_group
from crowd.models import Role
from crowd.ws import AuthenticatedConsumer
from tasks import events
from tasks.models import Assignment, AssignmentStatus, MemberRole, Project, ProjectState


@database_sync_to_async
def _worker_snapshot(user: Any) -> tuple[list[str], list[dict[str, Any]]]:
    from tasks.hooks import routing_policy, worker_snapshot_frames

    barred = routing_policy().barred_projects(worker_id=user.pk)
    projects = list(
        Project.objects.filter(state=ProjectState.ACTIVE)
        .exclude(pk__in=barred)
        .values_list("pk", flat=True)
    )
    frames: list[dict[str, Any]] = [
        {"type": "hello", "user": {"id": user.pk, "username": user.username}}
    ]
    frames += events.queue_frames(projects)
    now = timezone.now()
    for lease in Assignment.objects.filter(
        worker=user, status=AssignmentStatus.LEASED, expires_at__gt=now
    ):
        frames.append(
            {
                "type": "lease", "assignment": lease.pk, "project": lease.project_id,
                "expires_at": lease.expires_at.isoformat(),
                "seconds_left": round((lease.expires_at - now).total_seconds(), 1),
            }
        )  # fmt: skip
    frames += worker_snapshot_frames(user)
    groups = [events.ALL_WORKERS, user_group(user.pk)]
    groups += [events.project_workers_group(p) for p in projects]
    return groups, frames


class WorkerConsumer(AuthenticatedConsumer):
    """A worker's queue: work available per active project, their leases and the warning
    before one expires, their balance and status."""

    roles = (Role.WORKER,)

    async def groups_for(self, user: Any) -> list[str]:
        self._groups, self._frames = await _worker_snapshot(user)
        return self._groups

    async def snapshot(self, user: Any) -> list[dict[str, Any]]:
        return self._frames

    async def live_join(self, message: dict[str, Any]) -> None:
        """A project opened (or this worker was reinstated): join its workers' group, and
        pass on its first frame, unless this worker is barred from it."""
        if self.scope["user"].pk in message.get("barred", ()):
            return
        group = message["group"]
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        if message.get("event"):
            await self.send_json(message["event"])

    async def live_leave(self, message: dict[str, Any]) -> None:
        """This worker was suspended from a project: its frames stop coming."""
        group = message["group"]
        if group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.joined.remove(group)


@database_sync_to_async
def _project_access(user: Any, project_id: int) -> dict[str, Any] | None:
    """The project's first progress frame, if this user manages it."""
    managed = Project.objects.filter(
        pk=project_id, members__user=user, members__role=MemberRole.MANAGER
    ).exists()
    return events.progress_frame(project_id) if managed else None


class ProjectConsumer(AuthenticatedConsumer):
    """A project's dashboard feed for its managers: progress (the fields of ``/progress/``,
    spend included), worker score and status changes, export progress."""

    roles = (Role.MANAGER,)

    async def groups_for(self, user: Any) -> list[str] | None:
        project_id = int(self.scope["url_route"]["kwargs"]["project_id"])
        self._progress = await _project_access(user, project_id)
        if self._progress is None:
            return None
        return [events.project_group(project_id)]

    async def snapshot(self, user: Any) -> list[dict[str, Any]]:
        return [self._progress] if self._progress else []
