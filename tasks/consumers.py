"""The worker's live queue channel, ``/ws/worker/``."""

from __future__ import annotations

from typing import Any

from crowd.live import user_group
from crowd.models import Role
from crowd.ws import AuthenticatedConsumer


class WorkerConsumer(AuthenticatedConsumer):
    roles = (Role.WORKER,)

    async def groups_for(self, user: Any) -> list[str]:
        return [user_group(user.pk)]

    async def snapshot(self, user: Any) -> list[dict[str, Any]]:
        return [{"type": "hello", "user": {"id": user.pk, "username": user.username}}]
