from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class Role(models.TextChoices):
    WORKER = "worker", "Worker"
    MANAGER = "manager", "Manager"
    CLIENT = "client", "Client"


class User(AbstractUser):
    """A person: a worker doing microtasks, a manager running projects, or a client downloading."""

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.WORKER)

    class Meta:
        constraints = [
            # "Alice" and "alice" are one person to everyone reading a workers table.
            models.UniqueConstraint(Lower("username"), name="crowd_user_username_ci_unique"),
        ]
        indexes = [models.Index(fields=["role"], name="crowd_user_role_idx")]

    @property
    def is_worker(self) -> bool:
        return self.role == Role.WORKER

    @property
    def is_manager(self) -> bool:
        return self.role == Role.MANAGER

    @property
    def is_client(self) -> bool:
        return self.role == Role.CLIENT
