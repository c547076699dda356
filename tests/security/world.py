"""A small world for the security tests: two projects of two managers, each with images, gold,
a worker's open lease and submitted answer, a finished consensus run and dataset export, and
an operator's payout batch, all made through the services as the API would make them."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from crowd.models import User
from payouts.models import Payout, PayoutBatch
from payouts.providers import batch_create
from payouts.services import assignment_approve, payout_request
from qa.exports.build import export_build, export_request
from qa.merge import consensus_compute, consensus_run_request
from qa.models import ConsensusRun, DatasetExport
from qa.services import gold_set
from tasks import routing
from tasks.models import Assignment, Image, ImageImport, PredictionRun, Project
from tasks.services import project_client_add, project_transition
from tests import images
from tests.factories import (
    ClientFactory,
    ManagerFactory,
    WorkerFactory,
    image_ready,
    project_create,
)


def no_gold() -> float:
    return 1.0


@dataclass
class Side:
    """One manager's project and the objects in it."""

    owner: User
    client: User
    worker: User  # holds ``lease`` and answered ``submitted``
    project: Project
    image: Image  # the image of ``lease``, with a stored file and thumbnail
    gold_image: Image
    spare_image: Image  # no gold, no lease: free for a new gold answer
    lease: Assignment
    submitted: Assignment
    run: ConsensusRun
    export: DatasetExport
    image_import: ImageImport  # a finished import from the bucket
    prediction_run: PredictionRun  # a finished run of an ML backend


@dataclass
class World:
    a: Side  # the project under test
    b: Side  # another manager's project
    operator: User  # a staff manager: handles payout batches
    payout: Payout  # a worker of project a's, processing in ``batch``
    batch: PayoutBatch
    requested: Payout  # another worker's, requested and in no batch yet


def _store_file(image: Image, seed: int) -> None:
    data = images.jpeg(image.width, image.height, seed=seed)
    image.file.name = default_storage.save(image.file.name, ContentFile(data))
    image.thumbnail.name = default_storage.save(
        f"projects/{image.project_id}/thumbnails/{image.pk}.jpg", ContentFile(data)
    )
    image.save(update_fields=["file", "thumbnail"])


def build_side(seed: int) -> Side:
    owner, client, worker = ManagerFactory.create(), ClientFactory.create(), WorkerFactory.create()
    project = project_create(
        owner, kind="bbox", labels=["car", "tree"], gold_rate=0.0, tile_size=0,
        min_overlap=2, max_overlap=2, reward="5.00",
    )  # fmt: skip
    project_client_add(project=project, username=client.username)
    real = [image_ready(project, seed=seed + i) for i in range(2)]
    gold_image = image_ready(project, seed=seed + 10)
    spare_image = image_ready(project, seed=seed + 11)
    gold_set(
        project=project, image_id=gold_image.pk, user=owner,
        annotations=[{"label": "car", "bbox": [10, 10, 50, 40]}],
    )  # fmt: skip
    project = project_transition(project=project, action="start")
    submitted = routing.assignment_next(project=project, worker=worker, rand=no_gold)
    assert submitted is not None
    routing.assignment_submit(
        assignment_id=submitted.pk, worker=worker,
        annotations=[{"label": "car", "bbox": [5, 5, 20, 20]}],
    )  # fmt: skip
    lease = routing.assignment_next(project=project, worker=worker, rand=no_gold)
    assert lease is not None
    image = Image.objects.get(pk=lease.task.image_id)
    assert image in real
    _store_file(image, seed)
    run = consensus_run_request(project=project, user=owner)
    consensus_compute(run_id=run.pk)
    export = export_request(project=project, user=owner, data={"format": "coco"})
    export_build(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == "done", export.error
    image_import = ImageImport.objects.create(
        project=project, prefix="incoming/", requested_by=owner, status="done"
    )
    prediction_run = PredictionRun.objects.create(
        project=project, requested_by=owner, backend_url="http://127.0.0.1:9090", status="done"
    )
    run.refresh_from_db()
    submitted.refresh_from_db()
    return Side(
        owner=owner, client=client, worker=worker, project=project, image=image,
        gold_image=gold_image, spare_image=spare_image, lease=lease, submitted=submitted,
        run=run, export=export, image_import=image_import, prediction_run=prediction_run,
    )  # fmt: skip


def _earned_payout(side: Side) -> Payout:
    """A new worker answers a task of ``side``'s project, is approved and asks for the money."""
    earner = WorkerFactory.create()
    answer = routing.assignment_next(project=side.project, worker=earner, rand=no_gold)
    assert answer is not None
    routing.assignment_submit(assignment_id=answer.pk, worker=earner, annotations=[])
    assignment_approve(assignment_id=answer.pk, by=side.owner)
    return payout_request(worker=earner, currency="USD", provider="manual")


def build_world() -> World:
    a, b = build_side(0), build_side(100)
    operator = ManagerFactory.create(is_staff=True)
    payout = _earned_payout(a)
    batch = batch_create(currency="USD", by=operator)
    payout.refresh_from_db()
    requested = _earned_payout(a)
    for side in (a, b):
        assert not Assignment.objects.filter(task__image=side.spare_image).exists()
    return World(a=a, b=b, operator=operator, payout=payout, batch=batch, requested=requested)
