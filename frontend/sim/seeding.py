"""A simulated project: generated scenes uploaded through the real ingestion services, gold set
from their truth, the project started and the truth saved. This is the manager's set-up; it
runs in this process whichever way the workers go."""

from __future__ import annotations

import random
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from crowd.errors import DomainError
from crowd.models import User
from frontend.sim.errors import SimError
from frontend.sim.truth import Truth, truth_save
from qa import services as qa_services
from qa.sim import scenes
from tasks import ingest
from tasks.models import Image, ImageStatus, Kind, Project
from tasks.services import project_create, project_transition

# Settings of a project the simulator creates; the lease is short so that a dropout's
# abandoned task comes back soon.
PROJECT_DEFAULTS: dict[str, Any] = {
    "min_overlap": 2, "max_overlap": 4, "agreement_threshold": 0.9, "gold_rate": 0.2,
    "min_worker_score": 0.6, "assignment_seconds": 30, "reward": "0.05", "currency": "USD",
}  # fmt: skip
INSTRUCTIONS = {
    "classification": "Which shape is the large one in the middle: circle, square, triangle "
    "or star?",
    "bbox": "Draw a tight box around every shape, including shapes cut by the image's edge.",
    "polygon": "Outline every shape, including the visible part of shapes cut by the edge.",
    "mask": "Paint every shape's visible pixels, one mask a shape; where shapes overlap, the "
    "pixels belong to the one on top.",
    "keypoints": "Mark each shape's points: a circle's top, right, bottom and left; the "
    "corners of squares and triangles and the tips of stars, clockwise from the topmost. "
    "Points hidden under another shape are occluded (1); points outside the image absent (0).",
}


def sim_project_create(
    *,
    kind: str,
    images: int,
    gold: int,
    manager: User,
    seed: int = 0,
    name: str = "",
    width: int = 480,
    height: int = 360,
    overrides: dict[str, Any] | None = None,
) -> tuple[Project, Truth]:
    """A started project of generated scenes with gold from their truth, and that truth.

    One transaction: a failure leaves no project behind. The images go through the real
    upload service; their processing job is run here, inside the transaction, so the jobs
    queued for after the commit find them done.
    """
    if kind not in scenes.KINDS:
        raise SimError(f"Unknown kind {kind!r}; one of {', '.join(scenes.KINDS)}.")
    if not 1 <= images <= 10_000:
        raise SimError("Between 1 and 10000 images.")
    if not 0 <= gold < images:
        raise SimError("Gold must be at least 0 and fewer than the images (some must be work).")
    files = scenes.scenes_write(images, seed=seed, kind=kind, width=width, height=height)
    data: dict[str, Any] = {
        "name": name or f"Simulated {kind}: {images} images, seed {seed}",
        "kind": kind,
        "labels": scenes.labels_json()
        if kind == Kind.KEYPOINTS
        else [{"name": x["name"], "color": x["color"]} for x in scenes.labels_json()],
        "instructions": INSTRUCTIONS[kind],
        **PROJECT_DEFAULTS,
        **(overrides or {}),
    }
    with transaction.atomic():
        try:
            project = project_create(owner=manager, data=data)
        except DomainError as exc:
            raise SimError(f"The project was refused: {exc.errors or exc.detail}") from None
        uploads = [SimpleUploadedFile(f.name, f.data) for f in files]
        report = ingest.images_upload(project=project, user=manager, files=uploads)
        created = [row for row in report.files if row.result == "created" and row.id]
        if len(created) != images:
            problems = [f"{row.name}: {row.result} {row.error or ''}" for row in report.files]
            raise SimError(f"Not every generated image was accepted: {problems}")
        for row in created:
            assert row.id is not None
            ingest.image_process(image_id=row.id)
        ingest.near_duplicates_scan(project_id=project.pk)
        ids = dict(
            Image.objects.filter(project=project, status=ImageStatus.READY).values_list(
                "name", "pk"
            )
        )
        if len(ids) != images:
            raise SimError("Some generated images failed processing.")
        truth = Truth(project.pk, kind, {f.name: f.scene.truth(kind) for f in files})
        for image_name in random.Random(f"gold:{seed}").sample(sorted(truth.images), gold):
            qa_services.gold_set(
                project=project,
                image_id=ids[image_name],
                annotations=truth.images[image_name],
                user=manager,
            )
        project = project_transition(project=project, action="start")
        truth_save(truth)
    return project, truth
