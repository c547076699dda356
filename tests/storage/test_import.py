"""Imports of the images already in the bucket (a real SeaweedFS server), like uploads."""

from __future__ import annotations

import hashlib

import pytest

from crowd.jobs import wait_for_jobs
from tasks.models import Image, ImageImport, ImageStatus, Task
from tests import images
from tests.factories import ManagerFactory, WorkerFactory, project_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both_databases]


def import_from(client, project, prefix):
    return client.post(
        f"/api/v1/projects/{project.pk}/images/import/", {"prefix": prefix}, format="json"
    )


def finished(client, project, import_id: int) -> dict:
    wait_for_jobs()
    response = client.get(f"/api/v1/projects/{project.pk}/images/import/{import_id}/")
    assert response.status_code == 200
    return response.json()


def test_every_object_under_the_prefix_is_ingested_once(api_as, manager, bucket) -> None:
    project = project_create(manager, kind="bbox", tile_size=1024)
    photo = images.jpeg(seed=21)
    bucket.put("incoming/a.jpg", photo)
    bucket.put("incoming/sub/b.png", images.png(seed=22))
    bucket.put("incoming/same-as-a.jpg", photo)
    bucket.put("incoming/notes.txt", b"not an image")
    bucket.put("incoming/big.jpg", images.encode(images.scene(2500, 1200, seed=23), "JPEG"))
    bucket.put("incoming/archive.zip", images.zip_of({"c.jpg": images.jpeg(seed=24)}))
    bucket.put("elsewhere/d.jpg", images.jpeg(seed=25))
    client = api_as(manager)

    response = import_from(client, project, "incoming/")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    report = finished(client, project, response.json()["id"])
    assert report["status"] == "done", report
    assert (report["created"], report["duplicates"], report["rejected"], report["skipped"]) == (
        4, 1, 1, 0
    )  # fmt: skip
    results = {f["name"]: f for f in report["files"]}
    assert results["incoming/same-as-a.jpg"]["result"] == "duplicate"
    assert results["incoming/same-as-a.jpg"]["duplicate_of"] == results["incoming/a.jpg"]["id"]
    assert results["incoming/notes.txt"]["code"] == "not_an_image"
    assert results["incoming/archive.zip/c.jpg"]["result"] == "created"
    assert {f["key"] for f in report["files"]} == set(bucket.keys("incoming/"))

    # Processed like uploads: ready, thumbnailed, tiled; the copies live in the project's
    # folder and the originals stay where they were.
    assert set(Image.objects.values_list("status", flat=True)) == {ImageStatus.READY}
    big = Image.objects.get(name="incoming/big.jpg")
    assert Task.objects.filter(image=big).count() > 1
    a = Image.objects.get(name="incoming/a.jpg")
    sha256 = hashlib.sha256(photo).hexdigest()
    assert a.sha256 == sha256
    assert a.file.name.startswith(f"projects/{project.pk}/images/")
    assert bucket.read(a.file.name) == photo
    assert bucket.read("incoming/a.jpg") == photo
    assert a.thumbnail.name in bucket.keys(f"projects/{project.pk}/thumbs/")
    assert not Image.objects.filter(name__startswith="elsewhere").exists()
    listed = client.get(f"/api/v1/projects/{project.pk}/images/").json()
    assert listed["count"] == 4
    progress = client.get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["last_import"] == {k: v for k, v in report.items() if k != "files"}
    assert progress["images"]["ready"] == 4

    # A re-run reads nothing it already has; a new object is brought in.
    bucket.put("incoming/e.jpg", images.jpeg(seed=26))
    again = finished(client, project, import_from(client, project, "incoming/").json()["id"])
    assert again["status"] == "done"
    assert again["created"] == 1
    assert again["skipped"] == 3  # a, b and big: read from those keys before
    assert Image.objects.count() == 5


def test_a_redelivered_job_does_not_count_twice(api_as, manager, bucket) -> None:
    from tasks.imports import images_import_run

    project = project_create(manager, kind="bbox")
    bucket.put("in/a.jpg", images.jpeg(seed=31))
    queued = ImageImport.objects.create(project=project, prefix="in/", requested_by=manager)
    images_import_run(import_id=queued.pk)
    ImageImport.objects.filter(pk=queued.pk).update(status="running")  # as if it died at the end
    job = images_import_run(import_id=queued.pk)
    assert job is not None
    assert [f["result"] for f in job.files] == ["created"]
    assert Image.objects.count() == 1


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (12, "as text"),
        (None, "as text"),
        ("/incoming/", "relative"),
        ("incoming/../projects/", ".."),
        ("./incoming", ".."),
        ("projects/", "own files"),
        ("proj", "own files"),
        ("exports/1/", "own files"),
        ("in\x00coming/", "control"),
        ("x" * 1025, "longer"),
    ],
)
def test_bad_prefixes_are_refused_and_nothing_is_queued(
    api_as, manager, bucket, prefix, words
) -> None:
    project = project_create(manager, kind="bbox")
    response = import_from(api_as(manager), project, prefix)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "bad_prefix"
    assert words in body["errors"]["prefix"][0]
    assert not ImageImport.objects.exists()


def test_who_may_import(api, api_as, manager, bucket) -> None:
    project = project_create(manager, kind="bbox")
    url = f"/api/v1/projects/{project.pk}/images/import/"
    assert api.post(url, {"prefix": "in/"}, format="json").status_code == 401
    assert (
        api_as(WorkerFactory.create()).post(url, {"prefix": "in/"}, format="json").status_code
        == 403
    )
    assert (
        api_as(ManagerFactory.create()).post(url, {"prefix": "in/"}, format="json").status_code
        == 404
    )
    assert not ImageImport.objects.exists()
    job = import_from(api_as(manager), project, "in/").json()
    wait_for_jobs()
    detail = f"{url}{job['id']}/"
    assert api_as(ManagerFactory.create()).get(detail).status_code == 404
    assert api_as(manager).get(detail).json()["status"] == "done"


def test_without_a_bucket_the_import_is_refused(api_as, manager) -> None:
    project = project_create(manager, kind="bbox")
    response = import_from(api_as(manager), project, "incoming/")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "no_bucket"
    assert "AWS_STORAGE_BUCKET_NAME" in body["detail"]
    assert not ImageImport.objects.exists()


def test_a_bucket_failing_mid_import_fails_the_import_and_a_new_one_goes_on(
    api_as, manager, bucket, settings
) -> None:
    from tasks.imports import images_import_run
    from tests.plugins.services import free_port

    project = project_create(manager, kind="bbox")
    bucket.put("in/a.jpg", images.jpeg(seed=41))
    bucket.put("in/b.jpg", images.jpeg(seed=42))
    job = ImageImport.objects.create(project=project, prefix="in/", requested_by=manager)
    working = settings.AWS_S3_ENDPOINT_URL
    settings.AWS_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.STORAGES = {**settings.STORAGES}
    failed = images_import_run(import_id=job.pk)
    assert failed is not None
    assert failed.status == "failed"
    assert "bucket could not be read" in failed.error
    assert failed.finished_at is not None
    assert not Image.objects.exists()

    settings.AWS_S3_ENDPOINT_URL = working
    settings.STORAGES = {**settings.STORAGES}
    client = api_as(manager)
    report = finished(client, project, import_from(client, project, "in/").json()["id"])
    assert (report["status"], report["created"]) == ("done", 2)
