"""A project's labels and annotation schema, read once per project version.

Every request for work and every submission needs the labels; they change only through
``project_update``, which bumps ``Project.updated_at``. So they are kept per process, keyed
by ``(project id, updated_at)``: a changed project is a new key, and no process ever serves
stale labels after reading the project row.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tasks.annotations import AnnotationError, Schema, validate_annotations
from tasks.models import Image, Label, Project


@lru_cache(maxsize=1024)
def _labels(project_id: int, version: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    return tuple(
        (label.name, label.color, tuple(label.keypoints))
        for label in Label.objects.filter(project_id=project_id).order_by("order", "id")
    )


def project_labels(project: Project) -> list[dict[str, Any]]:
    """The labels as the API shows them: name, colour and, for keypoints, keypoint names."""
    return [
        {"name": name, "color": color, "keypoints": list(keypoints)}
        if keypoints
        else {"name": name, "color": color}
        for name, color, keypoints in _labels(project.pk, project.updated_at.isoformat())
    ]


def project_schema(project: Project) -> Schema:
    labels = _labels(project.pk, project.updated_at.isoformat())
    return Schema(kind=project.kind, keypoints={name: list(kps) for name, _, kps in labels})


def annotations_clean(*, project: Project, image: Image, payload: Any) -> list[dict[str, Any]]:
    """Validated, normalised annotations for this image, or InvalidInput naming each problem."""
    from crowd.errors import InvalidInput

    try:
        return validate_annotations(
            payload, schema=project_schema(project), width=image.width, height=image.height
        )
    except AnnotationError as exc:
        raise InvalidInput("The annotations are not valid.", errors=exc.errors) from None
