"""Active learning: with ``task_order: uncertain_first`` routing offers first the tasks whose
image the project's current model version is least sure of.

Each task keeps that confidence (``Task.model_confidence``, ``prelabel_core.confidence``: the
top class's score for classification, the least sure object decision for shapes), so the
claim orders by a column of the row it locks, under an index of its own, and reads nothing
more. It is kept here:

- whenever predictions are stored (``tasks.predictions._store``, imports and backend runs): the
  images stored, or every task of the project when the store made another version current;
- when a project is switched to ``uncertain_first`` (all its tasks, afresh).

Tasks of images without a prediction of the current version hold null, and are offered after
every task with a confidence (then oldest first, as by default).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from tasks import prelabel_core, prelabels
from tasks.models import Prediction, Project, Task

BATCH = 500
_SET_CONFIDENCE = f"UPDATE {Task._meta.db_table} SET model_confidence = %s WHERE id = %s"


def confidences_refresh(*, project: Project, image_ids: Iterable[int] | None = None) -> int:
    """Set the confidence of the current model version on the tasks of ``image_ids`` (all the
    project's tasks when None); returns how many tasks changed. Call in the transaction that
    stored the predictions, so routing never sees one without the other."""
    version = prelabels.current_version(project)
    wanted = None if image_ids is None else sorted(set(image_ids))
    chunks: list[list[int] | None] = (
        [None] if wanted is None else [wanted[i : i + BATCH] for i in range(0, len(wanted), BATCH)]
    )
    changed = 0
    for chunk in chunks:
        predictions = Prediction.objects.filter(project=project, model_version=version)
        tasks = Task.objects.filter(project=project)
        if chunk is not None:
            predictions = predictions.filter(image_id__in=chunk)
            tasks = tasks.filter(image_id__in=chunk)
        sure: dict[int, float | None] = {}
        if version is not None:
            rows = predictions.values_list("image_id", "annotations", "score")
            for image_id, items, score in rows.iterator(chunk_size=BATCH):
                sure[image_id] = prelabel_core.confidence(
                    project.kind, items if isinstance(items, list) else [], score
                )
        stale = [
            (sure.get(image_id), pk)
            for pk, image_id, old in tasks.values_list("pk", "image_id", "model_confidence")
            if sure.get(image_id) != old
        ]
        # One prepared statement run for every task (pipelined on PostgreSQL): bulk_update's
        # CASE over a batch's ids spent most of an import's time compiling expressions.
        with connection.cursor() as cursor:
            cursor.executemany(_SET_CONFIDENCE, stale)
        changed += len(stale)
    return changed
