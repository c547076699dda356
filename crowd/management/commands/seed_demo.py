from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from crowd.models import Role, User

# Demo accounts only: `make demo` prints these so a newcomer can log in at once.
DEMO_ACCOUNTS = [
    ("manager", Role.MANAGER, "demo-manager-pass"),
    ("client", Role.CLIENT, "demo-client-pass"),
    ("worker1", Role.WORKER, "demo-worker-pass"),
    ("worker2", Role.WORKER, "demo-worker-pass"),
    ("worker3", Role.WORKER, "demo-worker-pass"),
]


class Command(BaseCommand):
    help = "Seed the demo accounts (idempotent: running it again resets their passwords)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        for username, role, password in DEMO_ACCOUNTS:
            user, _ = User.objects.get_or_create(
                username=username, defaults={"role": role, "email": f"{username}@demo.invalid"}
            )
            user.role = role
            user.is_active = True
            user.set_password(password)
            user.save()
        self.stdout.write("Demo accounts (username / password):")
        for username, role, password in DEMO_ACCOUNTS:
            self.stdout.write(f"  {role:<8} {username:<8} / {password}")
