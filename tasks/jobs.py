"""Background jobs of the tasks app: thin, take ids, safe to run twice."""

from __future__ import annotations

import dramatiq

from tasks import ingest


@dramatiq.actor(queue_name="ingest", max_retries=3, time_limit=10 * 60 * 1000)
def image_process(image_id: int) -> None:
    ingest.image_process(image_id=image_id)


@dramatiq.actor(queue_name="ingest", max_retries=3, time_limit=10 * 60 * 1000)
def near_duplicates_scan(project_id: int) -> None:
    ingest.near_duplicates_scan(project_id=project_id)
