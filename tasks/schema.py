"""The annotation schema of a project, for :mod:`tasks.annotations`."""

from __future__ import annotations

from typing import Any

from tasks.annotations import AnnotationError, Schema, validate_annotations
from tasks.models import Image, Project


def project_schema(project: Project) -> Schema:
    return Schema(
        kind=project.kind,
        keypoints={label.name: list(label.keypoints) for label in project.labels.all()},
    )


def annotations_clean(*, project: Project, image: Image, payload: Any) -> list[dict[str, Any]]:
    """Validated, normalised annotations for this image, or InvalidInput naming each problem."""
    from crowd.errors import InvalidInput

    try:
        return validate_annotations(
            payload, schema=project_schema(project), width=image.width, height=image.height
        )
    except AnnotationError as exc:
        raise InvalidInput("The annotations are not valid.", errors=exc.errors) from None
