"""Background jobs of the tasks app: thin, take ids, safe to run twice."""

from __future__ import annotations

import dramatiq
from django.conf import settings
from django.core.cache import cache

from tasks import imports, ingest, predictions


@dramatiq.actor(queue_name="ingest", max_retries=3, time_limit=10 * 60 * 1000)
def image_process(image_id: int) -> None:
    ingest.image_process(image_id=image_id)


@dramatiq.actor(queue_name="ingest", max_retries=3, time_limit=10 * 60 * 1000)
def near_duplicates_scan(project_id: int) -> None:
    ingest.near_duplicates_scan(project_id=project_id)


@dramatiq.actor(queue_name="ingest", max_retries=3, time_limit=6 * 60 * 60 * 1000)
def images_import(import_id: int) -> None:
    imports.images_import_run(import_id=import_id)


@dramatiq.actor(queue_name="predictions", max_retries=3, time_limit=12 * 60 * 60 * 1000)
def predictions_run(run_id: int) -> None:
    """Ask the project's ML backend for predictions (see tasks.predictions)."""
    predictions.prediction_run_execute(run_id=run_id)


# Retried for hours (back-off doubling from JOB_RETRY_MIN_BACKOFF_MS): a store that is down
# when a project is deleted gets its files deleted once it is back.
@dramatiq.actor(queue_name="ingest", max_retries=10, time_limit=60 * 60 * 1000)
def stored_files_delete(names: list[str], prefixes: list[str]) -> None:
    from crowd import storage

    storage.files_delete(names=names, prefixes=prefixes)


@dramatiq.actor(queue_name="routing", max_retries=0, time_limit=5 * 60 * 1000)
def leases_sweep() -> None:
    """Return the slots of expired leases across all projects, then schedule the next sweep.

    Routing also releases expired leases of a project whenever a worker asks it for work, so
    correctness never waits for this job; it keeps counts and live queues fresh when nobody
    asks.
    """
    from tasks import routing, stalled
    from tasks.hooks import periodic

    while routing.leases_release_expired(limit=1000):
        pass
    while routing.leases_warn_expiring(limit=1000) == 1000:
        pass
    routing.tasks_decide_due()
    stalled.stalled_sweep()
    periodic.notify()
    cache.delete(SWEEP_SCHEDULED)
    leases_sweep_schedule()


SWEEP_SCHEDULED = "tasks:leases-sweep-scheduled"


def leases_sweep_schedule() -> None:
    """Schedule the next sweep unless one is already scheduled (cache.add is atomic, and
    shared between processes when the cache is Redis)."""
    interval = settings.LEASE_SWEEP_SECONDS
    if interval and cache.add(SWEEP_SCHEDULED, 1, timeout=interval * 2):
        leases_sweep.send_with_options(delay=interval * 1000)


@dramatiq.actor(queue_name="routing", max_retries=3, time_limit=10 * 60 * 1000)
def routing_tables_analyze() -> None:
    """Refresh PostgreSQL's statistics of the tables the claim reads (``tasks.planner_stats``),
    queued after tasks were added."""
    from tasks import planner_stats

    cache.delete(planner_stats.PENDING)  # tasks added from now on queue the next one
    planner_stats.routing_tables_analyze()


@dramatiq.actor(queue_name="decisions", max_retries=3, time_limit=10 * 60 * 1000)
def tasks_decide(project_id: int) -> None:
    """Decide the project's tasks whose answers reached their overlap (consensus, dynamic
    overlap, agreement): asked for by the submissions that completed them."""
    from tasks import routing

    routing.decisions_run(project_id=project_id)
