"""Background jobs of quality: thin, take ids, safe to run twice.

Safe to run twice at the same time too (a job redelivered while its first copy still runs):
each service claims its row, and a copy that finds it claimed by a live copy returns without
error, so the broker does not retry it (see ``crowd.claims``).
"""

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
