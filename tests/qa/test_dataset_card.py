"""A dataset card is part of its version: made once, from the consensus run the version was
built from, and shipped unchanged inside the file."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from qa import services as qa_services
from qa.exports import build as export_build_module
from qa.exports.build import dataset_card, export_build
from qa.exports.formats import Counts
from qa.models import ConsensusRun, DatasetExport
from tasks import routing
from tasks.models import Project
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import no_gold

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def pets(manager, *, images: int = 4) -> Project:
    project = project_create(
        manager, kind="classification", labels=["cat", "dog"], gold_rate=0.0, min_overlap=3,
        max_overlap=3, agreement_threshold=0.5, name="Pets",
    )  # fmt: skip
    for seed in range(images):
        image_ready(project, seed=seed)
    return project_transition(project=project, action="start")


def answer_all(project: Project, workers: list, label: str = "cat") -> None:
    for worker in workers:
        while lease := routing.assignment_next(project=project, worker=worker, rand=no_gold):
            routing.assignment_submit(
                assignment_id=lease.pk, worker=worker, annotations=[{"label": label}]
            )


def request_export(api, project: Project, **body: Any) -> int:
    response = api.post(f"/api/v1/projects/{project.pk}/exports/", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def zipped_card(api, export: DatasetExport) -> str:
    download = api.get(f"/api/v1/exports/{export.pk}/download/")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as archive:
        return archive.read("README.md").decode()


def counts_of(export: DatasetExport) -> Counts:
    c = export.counts
    return Counts(
        images=c["images"], annotations=c["annotations"], empty_images=c["empty_images"],
        per_label=Counter(c["per_label"]), per_subset=Counter(c["per_subset"]),
    )  # fmt: skip


@pytest.mark.both_databases
def test_the_card_is_the_runs_and_the_zip_ships_the_stored_card(api_as, manager) -> None:
    project = pets(manager)
    workers = [WorkerFactory.create() for _ in range(3)]
    answer_all(project, workers)
    api = api_as(manager)
    export_id = request_export(api, project, format="csv")

    # A worker is suspended after the file is written, while it is being stored.
    hashed = export_build_module._sha256

    def suspend_then_hash(fh: Any) -> str:
        qa_services.worker_suspend(
            project=project, worker_id=workers[0].pk, by=manager, reason="Copies answers."
        )
        return hashed(fh)

    with mock.patch.object(export_build_module, "_sha256", suspend_then_hash):
        export = export_build(export_id=export_id)
    assert export is not None
    assert export.status == "done", export.error
    run = export.consensus_run
    assert run is not None

    # The project moves on: more answers from more workers, another suspension.
    image_ready(project, seed=10)
    answer_all(project, [WorkerFactory.create() for _ in range(3)], "dog")
    qa_services.worker_suspend(project=project, worker_id=workers[1].pk, by=manager, reason="")

    # The zip's copy is the stored card, byte for byte, and so is the API's.
    assert zipped_card(api, export) == export.card
    assert api.get(f"/api/v1/exports/{export.pk}/").json()["card"] == export.card
    # The card is the run's: what it counted when it read its answers.
    assert "- Workers: 3 answered; 0 suspended (their answers do not count)" in export.card
    assert "- Answers counted: 12" in export.card
    assert run.tally["answers"] == 12
    assert run.tally["suspended"] == 0
    # Made again now, from the same run and counts, it is the same card.
    export.refresh_from_db()
    assert dataset_card(export, run, counts_of(export)) == export.card


def test_the_card_counts_only_the_answers_the_run_counted(api_as, manager) -> None:
    project = pets(manager)
    workers = [WorkerFactory.create() for _ in range(3)]
    answer_all(project, workers)
    qa_services.worker_suspend(
        project=project, worker_id=workers[2].pk, by=manager, reason="Random labels."
    )
    export = export_build(export_id=request_export(api_as(manager), project, format="csv"))
    assert export is not None
    assert "- Workers: 2 answered; 1 suspended (their answers do not count)" in export.card
    assert "- Answers counted: 8" in export.card


def test_a_run_from_before_runs_kept_their_tally_says_so(api_as, manager) -> None:
    from qa.merge import consensus_compute

    project = pets(manager)
    answer_all(project, [WorkerFactory.create() for _ in range(3)])
    run = ConsensusRun.objects.create(project=project)
    consensus_compute(run_id=run.pk)
    ConsensusRun.objects.filter(pk=run.pk).update(tally={})
    export_id = request_export(api_as(manager), project, format="csv", consensus_run=run.pk)
    export = export_build(export_id=export_id)
    assert export is not None
    assert export.status == "done", export.error
    assert export_build_module.NOT_TALLIED in export.card
    assert "Workers:" not in export.card
    assert "- Low-confidence images (answers disagreed at the cap): 0" in export.card
