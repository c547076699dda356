"""Projects with gold for the quality tests, worked through the routing services."""

from __future__ import annotations

from typing import Any

from qa.services import gold_set
from tasks import routing
from tasks.models import Assignment, Project
from tasks.services import project_transition
from tests.factories import image_ready, project_create

LABELS = ["cat", "dog", "bird", "fish"]


def classification_project(
    manager, *, images: int = 10, gold: int = 10, start: bool = True, **settings: Any
) -> tuple[Project, dict[int, str]]:
    """A classification project; the first ``gold`` images have gold answers. Returns the
    project and the true label of every image (by image id)."""
    options: dict[str, Any] = {"gold_rate": 0.2, "min_overlap": 1, "max_overlap": 1}
    options.update(settings)
    project = project_create(manager, kind="classification", labels=LABELS, **options)
    truth: dict[int, str] = {}
    for i in range(images + gold):
        image = image_ready(project, seed=i)
        truth[image.pk] = LABELS[i % len(LABELS)]
        if i < gold:
            gold_set(
                project=project,
                image_id=image.pk,
                annotations=[{"label": truth[image.pk]}],
                user=manager,
            )
    if start:
        project = project_transition(project=project, action="start")
    return project, truth


def answer(project: Project, worker, label_for, *, rand=None) -> Assignment | None:
    """The worker asks for a task and answers it with ``label_for(assignment)``."""
    assignment = routing.assignment_next(project=project, worker=worker, rand=rand)
    if assignment is None:
        return None
    routing.assignment_submit(
        assignment_id=assignment.pk, worker=worker, annotations=label_for(assignment)
    )
    return assignment


def always(label: str):
    return lambda assignment: [{"label": label}]


def truthfully(truth: dict[int, str]):
    return lambda assignment: [{"label": truth[assignment.task.image_id]}]


def gold_draw() -> float:
    return 0.0  # rand() below any gold rate: gold whenever there is some left


def no_gold() -> float:
    return 1.0
