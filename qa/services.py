"""Writes on quality data: gold answers."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from crowd.errors import Conflict, NotFound
from crowd.models import User
from qa.models import GoldAnswer
from tasks.models import Image, ImageStatus, Project
from tasks.schema import annotations_clean
from tasks.services import tasks_mark_gold


@transaction.atomic
def gold_set(
    *, project: Project, image_id: Any, annotations: Any, user: User
) -> tuple[GoldAnswer, bool]:
    """Store (or replace) the expert answer of an image and mark its tasks gold.

    Returns the answer and whether it was created.
    """
    image = (
        Image.objects.filter(project=project, pk=image_id).first()
        if isinstance(image_id, int) and not isinstance(image_id, bool)
        else None
    )
    if image is None:
        raise NotFound("No such image in this project.")
    if image.status != ImageStatus.READY:
        raise Conflict(
            f"The image is {image.status}; gold can be set once it is ready.",
            code="image_not_ready",
        )
    clean = annotations_clean(project=project, image=image, payload=annotations)
    gold, created = GoldAnswer.objects.update_or_create(
        image=image, defaults={"project": project, "annotations": clean, "created_by": user}
    )
    tasks_mark_gold(image=image)
    return gold, created


@transaction.atomic
def gold_remove(*, project: Project, image_id: int) -> None:
    gold = GoldAnswer.objects.filter(project=project, image_id=image_id).select_related("image")
    answer = gold.first()
    if answer is None:
        raise NotFound("This image has no gold answer.")
    tasks_mark_gold(image=answer.image, gold=False)
    answer.delete()
