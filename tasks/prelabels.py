"""Pre-labels: the model's objects offered to workers on a lease, and the record of what each
answer did with them.

A project with ``prelabels`` on offers every task the objects of its image's prediction of the
project's current model version (the newest imported or predicted), those scored at least
``ml_backend.min_score``, cut to the task's region. A share ``prelabel_holdout`` of all tasks is
drawn to get none: the draw is a keyed hash of the project and task (``SECRET_KEY`` is the key),
so it is fixed for the task's life, the same for every worker, and independent of whether the
task is gold. Gold tasks are offered pre-labels exactly as other tasks are: the same query,
the same draw, the same shape of response (a worker can tell no gold task by its pre-labels,
their absence, their number or the time the lease takes).

At submission the server reads the same pre-labels again and records, per object, what the
answer did with them (``prelabel_core.record``) on the assignment, with whether the task was
held out, so the crowd's gold scores and times with and without pre-labels can be compared.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db.models import Subquery
from django.utils.crypto import salted_hmac

from crowd.errors import InvalidInput
from crowd.prepared import Prepared
from tasks import prelabel_core as core
from tasks.models import Prediction, Project, Task

HOLDOUT_SALT = "tasks.prelabels.holdout"


@cache
def _holdout_key() -> bytes:
    return salted_hmac(HOLDOUT_SALT, "key").digest()


def holdout_value(project_id: int, task_id: int) -> float:
    return core.holdout_value(_holdout_key(), project_id, task_id)


def held_out(project: Project, task_id: int) -> bool:
    """Whether the task is in the share drawn to get no pre-labels."""
    return holdout_value(project.pk, task_id) < project.prelabel_holdout


def current_version(project: Project) -> str | None:
    """The project's current model version: that of its newest prediction."""
    return (
        Prediction.objects.filter(project=project)
        .order_by("-pk")
        .values_list("model_version", flat=True)
        .first()
    )


# The lease's read: the image's prediction of the project's current model version (that of
# its newest prediction), compiled once; every lease runs it.
_CURRENT_PREDICTION = Prepared(
    lambda project, image: Prediction.objects.filter(
        image_id=image,
        model_version=Subquery(
            Prediction.objects.filter(project_id=project)
            .order_by("-pk")
            .values("model_version")[:1]
        ),
    )[:1],
    int,
    int,
)


def _prediction_items(
    project: Project, image_id: int, version: str | None
) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(model version, the image's prediction's items of it), or (None, None) when the image
    has no prediction of that version (by default the project's current one). One query."""
    if version is None:
        found = _CURRENT_PREDICTION.first(project.pk, image_id)
    else:
        found = Prediction.objects.filter(image_id=image_id, model_version=version).first()
    return (None, None) if found is None else (found.model_version, found.annotations)


def offered(
    project: Project, task: Task, *, version: str | None = None
) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(model version, the pre-labels the task offers when not held out), both None when
    the image has no prediction of the version."""
    version, items = _prediction_items(project, task.image_id, version)
    if items is None:
        return version, None
    return version, core.offered(
        project.kind,
        items,
        task.region,
        min_score=project.ml_backend_min_score,
        model_version=version or "",
    )


def lease_prelabels(project: Project, task: Task) -> list[dict[str, Any]]:
    """``prelabels`` of a lease: always a list (empty when the project offers none, the task
    is held out or its image has no prediction), read the same way for every task."""
    if not project.prelabels:
        return []
    _, items = offered(project, task)
    if items is None or held_out(project, task.pk):
        return []
    return items


def answer_record(
    *,
    project: Project,
    task: Task,
    payload: Any,
    clean: list[dict[str, Any]],
    version: str | None = None,
) -> dict[str, Any] | None:
    """What the answer ``clean`` (``payload`` validated) did with the task's pre-labels, to
    store on the assignment; None when the project offers none. ``version``: the model
    version the worker was shown (the lease's), when it is no longer the current one.
    InvalidInput when an item names a pre-label the task did not offer, or claims an outcome
    its shape does not show."""
    if not project.prelabels:
        if _names_prelabels(payload):
            raise InvalidInput(
                "The answer names pre-labels, but this project offers none.",
                code="invalid_prelabels",
                errors={"annotations": ["Leave out prelabel and outcome."]},
            )
        return None
    asked = version
    version, items = offered(project, task, version=asked)
    if asked is not None and items is None:
        raise InvalidInput(
            f"The image has no prediction of model version {asked!r}.",
            code="invalid_prelabels",
            errors={"prelabel_version": ["Send the model_version the lease's pre-labels had."]},
        )
    out = held_out(project, task.pk)
    shown = [] if items is None or out else items
    try:
        refs, claims = core.references(payload, len(shown))
        result = core.record(project.kind, shown, clean, refs, claims)
    except core.ProvenanceError as exc:
        raise InvalidInput(
            "The answer's pre-label references are not valid.",
            code="invalid_prelabels",
            errors=exc.errors,
        ) from None
    return {
        "model_version": version,
        "held_out": out,
        "offered": len(shown),
        **result,
    }


def _names_prelabels(payload: Any) -> bool:
    return isinstance(payload, list) and any(
        isinstance(item, dict) and (item.get("prelabel") is not None or "outcome" in item)
        for item in payload
    )
