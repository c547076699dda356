"""An export longer than its claim's heartbeat: the build's progress writes go through while
the results are read, on both databases (on SQLite an open read cursor kept a snapshot that
the heartbeat's renewal made stale, and the next progress write failed as locked)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from qa.exports import build
from qa.models import DatasetExport
from tests.qa.test_exports import bbox_project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both_databases]


def _renew_elsewhere(export_id: int) -> None:
    """What the claim's heartbeat does, from its own thread and connection."""

    def renew() -> None:
        try:
            DatasetExport.objects.filter(pk=export_id).update(lease_expires_at=timezone.now())
        finally:
            connection.close()

    thread = threading.Thread(target=renew)
    thread.start()
    thread.join()


def test_a_renewal_during_the_read_does_not_stop_the_build(
    manager, monkeypatch, settings, tmp_path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    project, truth = bbox_project(manager, images=7)
    # Progress is written every 2 images, read 3 at a time: writes fall inside a chunk.
    monkeypatch.setattr(build, "READ_CHUNK", 3)
    monkeypatch.setattr(build, "PROGRESS_EVERY", 2)
    original = build.export_records
    renewals = []

    def records(export: DatasetExport, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for record in original(export, *args, **kwargs):
            _renew_elsewhere(export.pk)  # between two progress writes, every image
            renewals.append(record.id)
            yield record

    monkeypatch.setattr(build, "export_records", records)
    export = build.export_request(project=project, user=manager, data={"format": "coco"})
    built = build.export_build(export_id=export.pk)
    assert built is not None
    assert built.status == "done", built.error
    assert built.counts["images"] == len(truth) == 7
    assert len(renewals) == 7
