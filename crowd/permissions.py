"""Permission classes per role. Object-level rules (is this *your* project?) live in selectors."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from crowd.models import Role, User


def request_user(request: Request | HttpRequest) -> User:
    """The signed-in user of a request that passed an authenticated permission class (or a
    page's role check)."""
    user = request.user
    assert isinstance(user, User)
    return user


class _RolePermission(BasePermission):
    roles: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and getattr(user, "role", None) in self.roles)


class IsWorker(_RolePermission):
    roles = (Role.WORKER,)
    message = "Only workers can do this."


class IsManager(_RolePermission):
    roles = (Role.MANAGER,)
    message = "Only managers can do this."


class IsManagerOrClient(_RolePermission):
    roles = (Role.MANAGER, Role.CLIENT)
    message = "Only managers and clients can do this."
