"""Background jobs of quality: thin, take ids, safe to run twice."""

from __future__ import annotations

import dramatiq


@dramatiq.actor(queue_name="consensus", max_retries=3, time_limit=60 * 60 * 1000)
def consensus_compute(run_id: int) -> None:
    from qa import merge

    merge.consensus_compute(run_id=run_id)


@dramatiq.actor(queue_name="exports", max_retries=3, time_limit=4 * 60 * 60 * 1000)
def export_build(export_id: int) -> None:
    from qa.exports import build

    build.export_build(export_id=export_id)
