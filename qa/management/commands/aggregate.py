"""``manage.py aggregate``: the ``crowd-aggregate`` tool (:mod:`qa.aggregate`) under Django.

Same options, same output, same messages; a refused input raises ``CommandError``. No
database is touched.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from qa.aggregate import AggregateError, Console, Settings, add_arguments, run


class Command(BaseCommand):
    help = "Run consensus on answers from another tool (CSV or JSON Lines); no database needed."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        console = Console(
            self.stderr.write, quiet=options["quiet"], progress=options["progress"] or None
        )
        try:
            run(Settings.from_options(options), console)
        except AggregateError as exc:
            raise CommandError(str(exc), returncode=2) from None
