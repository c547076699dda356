"""PostgreSQL's planner statistics of the tables the claim reads, kept fresh where the claim's
plan depends on them.

The claim (``tasks.routing``) takes the first row of the routing index of a project. The
planner takes that plan only when its statistics know the project has many open tasks: a
project whose tasks came after the last ``ANALYZE`` of ``tasks_task`` is estimated at about
one task, and its claim is then planned as a sort of all of its tasks with a scan of the
assignments per task (0.9 s a claim at 10,000 tasks, where the index gives 0.1 ms).
Autovacuum analyses a table only once a tenth of it has changed, which a new project in a
large table may never reach. So the tables are analysed when a project starts (before any
worker can claim in it) and, a few seconds after tasks are added, by one job at most every
``ROUTING_ANALYZE_SECONDS`` across processes. SQLite plans the claim on the index without
statistics: nothing is done there.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

ROUTING_TABLES = "tasks_task, tasks_assignment"
PENDING = "tasks:routing-analyze-pending"


def routing_tables_analyze() -> None:
    """``ANALYZE`` the tables the claim reads (PostgreSQL; nothing elsewhere)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {ROUTING_TABLES}")


def routing_tables_analyze_on_commit() -> None:
    """Analyse once the surrounding transaction has committed (its rows are then sampled).
    A failure is logged, not raised: the work it follows has been done."""
    if connection.vendor != "postgresql":
        return

    def run() -> None:
        try:
            routing_tables_analyze()
        except DatabaseError:
            logger.exception("ANALYZE of the routing tables failed")

    transaction.on_commit(run)


def routing_tables_analyze_soon() -> None:
    """Tasks were added: queue one analysis in ``ROUTING_ANALYZE_SECONDS`` unless one is
    queued already (``cache.add`` is atomic, and shared between processes on Redis), so that
    an import of many images is analysed a few times, not once an image."""
    interval = settings.ROUTING_ANALYZE_SECONDS
    if connection.vendor != "postgresql" or not interval:
        return
    if cache.add(PENDING, 1, timeout=interval * 4):
        from tasks.jobs import routing_tables_analyze as job

        transaction.on_commit(lambda: job.send_with_options(delay=interval * 1000))
