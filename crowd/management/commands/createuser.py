from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crowd.errors import InvalidInput
from crowd.models import Role
from crowd.services import user_create


class Command(BaseCommand):
    help = "Create a worker, manager or client account."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--staff",
            action="store_true",
            help="a platform operator: a manager who also handles manual payout batches",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = user_create(
                username=options["username"],
                password=options["password"],
                email=options["email"],
                role=options["role"],
            )
        except InvalidInput as exc:
            problems = "; ".join(
                f"{field}: {' '.join(str(m) for m in messages)}"
                for field, messages in exc.errors.items()
            )
            raise CommandError(problems or exc.detail) from None
        if options["staff"]:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        self.stdout.write(f"Created {user.role} {user.username!r} (id {user.pk}).")
