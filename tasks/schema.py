"""A project's labels and annotation schema, read once per project version.

Every request for work and every submission needs the labels; they change only through
``project_update``, which bumps ``Project.updated_at``. So they are kept per process, keyed
by ``(project id, updated_at)``: a changed project is a new key, and no process ever serves
stale labels after reading the project row.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from tasks.annotations import AnnotationError, Annotations, Schema, validate_annotations
from tasks.models import Image, Label, Project

LabelRows = tuple[tuple[str, str, tuple[str, ...]], ...]
CACHED_PROJECTS = 1024
_cache: OrderedDict[tuple[int, str], LabelRows] = OrderedDict()
_cache_lock = threading.Lock()


def _version(project: Project) -> tuple[int, str]:
    return project.pk, project.updated_at.isoformat()


def _remember(key: tuple[int, str], rows: LabelRows) -> None:
    with _cache_lock:
        _cache[key] = rows
        _cache.move_to_end(key)
        while len(_cache) > CACHED_PROJECTS:
            _cache.popitem(last=False)


def labels_load(projects: Iterable[Project]) -> None:
    """Read the labels of every project not cached yet, in one query (a list of projects
    would otherwise read them one project at a time)."""
    missing = {_version(p) for p in projects} - set(_cache)
    if not missing:
        return
    found: dict[int, list[tuple[str, str, tuple[str, ...]]]] = {pk: [] for pk, _ in missing}
    rows = Label.objects.filter(project_id__in=list(found)).order_by("project_id", "order", "id")
    for label in rows:
        found[label.project_id].append((label.name, label.color, tuple(label.keypoints)))
    for key in missing:
        _remember(key, tuple(found[key[0]]))


def _labels(project: Project) -> LabelRows:
    key = _version(project)
    rows = _cache.get(key)
    if rows is None:
        labels_load([project])
        rows = _cache[key]
    return rows


def project_labels(project: Project) -> list[dict[str, Any]]:
    """The labels as the API shows them: name, colour and, for keypoints, keypoint names."""
    return [
        {"name": name, "color": color, "keypoints": list(keypoints)}
        if keypoints
        else {"name": name, "color": color}
        for name, color, keypoints in _labels(project)
    ]


def project_schema(project: Project) -> Schema:
    labels = _labels(project)
    return Schema(
        kind=project.kind,
        keypoints={name: list(kps) for name, _, kps in labels},
        mask_mode=project.mask_mode,
    )


def annotations_clean(
    *, project: Project, image: Image, payload: Any, region: Sequence[int] | None = None
) -> Annotations:
    """Validated, normalised annotations for this image (coordinates a little past its edge
    clipped to it, and counted), or InvalidInput naming each problem. ``region``: the task's
    tile, inside which its masks must lie."""
    from crowd.errors import InvalidInput

    try:
        return validate_annotations(
            payload,
            schema=project_schema(project),
            width=image.width,
            height=image.height,
            region=region,
        )
    except AnnotationError as exc:
        raise InvalidInput("The annotations are not valid.", errors=exc.errors) from None
