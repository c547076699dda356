"""Running with a bucket (a real SeaweedFS server): presigned URLs for the address clients
reach the store at, the store in /healthz, and a deletion taking its files from the store."""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client

from crowd.jobs import wait_for_jobs
from qa.models import DatasetExport
from tasks.models import Image, Project
from tests import images
from tests.factories import WorkerFactory, project_create
from tests.plugins.services import free_port
from tests.qa.test_exports import bbox_project
from tests.storage.conftest import Bucket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both_databases]


def upload(client, project, *files: tuple[str, bytes]):
    payload = {"files": [SimpleUploadedFile(name, data) for name, data in files]}
    return client.post(f"/api/v1/projects/{project.pk}/images/", payload, format="multipart")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def reset_storage(settings: Any) -> None:
    settings.STORAGES = {**settings.STORAGES}  # a new storage object with the settings now


# --- Public endpoint ----------------------------------------------------------------------------


def test_presigned_urls_are_signed_for_the_public_endpoint(
    api_as, manager, bucket: Bucket, settings
) -> None:
    """The app reaches the store at 127.0.0.1, clients at another name of the same server
    (localhost): the redirect names the public host, and its signature holds there."""
    internal = urlsplit(settings.AWS_S3_ENDPOINT_URL)
    public = f"http://localhost:{internal.port}"
    settings.AWS_S3_PUBLIC_ENDPOINT_URL = public
    reset_storage(settings)
    project = project_create(manager, kind="bbox")
    data = images.jpeg(seed=51)
    body = upload(api_as(manager), project, ("street.jpg", data)).json()
    wait_for_jobs()
    image = Image.objects.get(pk=body["files"][0]["id"])

    for field in ("file", "thumbnail"):
        response = api_as(manager).get(f"/api/v1/images/{image.pk}/{field}/")
        assert response.status_code == 302
        location = response["Location"]
        assert location.startswith(f"{public}/{bucket.name}/projects/{project.pk}/"), location
        assert "X-Amz-Signature=" in location
        assert fetch(location) == bucket.read(getattr(image, field).name)

    # Signature v4 signs the host: the same URL on the internal address is refused, so the
    # URL was signed for the public one (not signed internally and rewritten).
    location = api_as(manager).get(f"/api/v1/images/{image.pk}/file/")["Location"]
    with pytest.raises(HTTPError) as refused:
        fetch(location.replace(public, settings.AWS_S3_ENDPOINT_URL))
    assert refused.value.code == 403

    # Uploads and reads still go to the internal address: the store works as before.
    assert bucket.read(image.file.name) == data
    # The pages' policy admits the public origin, where the browser fetches the images.
    policy = Client().get("/healthz")["Content-Security-Policy"]
    img_src = next(d for d in policy.split(";") if d.strip().startswith("img-src"))
    assert public in img_src.split()


def test_an_export_download_redirects_to_the_public_endpoint(
    api_as, manager, bucket: Bucket, settings
) -> None:
    internal = urlsplit(settings.AWS_S3_ENDPOINT_URL)
    public = f"http://localhost:{internal.port}"
    settings.AWS_S3_PUBLIC_ENDPOINT_URL = public
    reset_storage(settings)
    project, _ = bbox_project(manager, images=2, workers=1)
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "coco"}, format="json"
    )
    wait_for_jobs()
    export = DatasetExport.objects.get(pk=response.json()["id"])
    assert export.status == "done", export.error
    download = api_as(manager).get(f"/api/v1/exports/{export.pk}/download/")
    assert download.status_code == 302
    assert download["Location"].startswith(f"{public}/{bucket.name}/exports/{project.pk}/")
    assert fetch(download["Location"]) == bucket.read(export.file.name)


# --- Health ---------------------------------------------------------------------------------


def test_healthz_reports_the_store(bucket: Bucket, settings) -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200, response.content
    store = response.json()["storage"]
    assert store["ok"] is True
    assert store["backend"] == "s3"
    assert store["ms"] >= 0


def test_healthz_without_a_bucket_does_not_mention_a_store(db) -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert "storage" not in response.json()


def test_healthz_is_503_with_the_store_unreachable_and_answers_fast(bucket, settings) -> None:
    import time

    settings.AWS_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reset_storage(settings)
    started = time.monotonic()
    response = Client().get("/healthz")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["storage"]["ok"] is False
    assert body["storage"]["error"] == "EndpointConnectionError"
    assert body["database"]["ok"] is True  # the store alone is at fault, and the body says so


def test_healthz_is_503_when_the_bucket_is_missing_or_the_keys_refused(bucket, settings) -> None:
    settings.AWS_STORAGE_BUCKET_NAME = "crowd-no-such-bucket"
    reset_storage(settings)
    missing = Client().get("/healthz")
    assert missing.status_code == 503
    assert missing.json()["storage"] == {"ok": False, "backend": "s3", "error": "404"}

    settings.AWS_STORAGE_BUCKET_NAME = bucket.name
    settings.AWS_SECRET_ACCESS_KEY = "not-the-secret"
    reset_storage(settings)
    refused = Client().get("/healthz")
    assert refused.status_code == 503
    assert refused.json()["storage"]["error"] == "403"


# --- Deleting -------------------------------------------------------------------------------


def _project_with_files(api_as, manager, bucket: Bucket) -> tuple[Project, list[Image]]:
    """A project with uploaded images (originals and thumbnails in the bucket) and a finished
    export with the images in it."""
    project = project_create(manager, kind="bbox", min_overlap=1, max_overlap=1, gold_rate=0)
    seeds = (61, 62, 63)
    body = upload(
        api_as(manager), project, *((f"{s}.jpg", images.jpeg(seed=s)) for s in seeds)
    ).json()
    assert body["created"] == len(seeds), body
    wait_for_jobs()
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/",
        {"format": "coco", "include_images": True},
        format="json",
    )
    assert response.status_code == 202, response.content
    wait_for_jobs()
    assert DatasetExport.objects.get(pk=response.json()["id"]).status == "done"
    return project, list(Image.objects.filter(project=project).order_by("pk"))


def test_deleting_an_image_removes_its_file_and_thumbnail(api_as, manager, bucket) -> None:
    project, (first, second, third) = _project_with_files(api_as, manager, bucket)
    before = set(bucket.keys())
    assert {first.file.name, first.thumbnail.name} <= before

    response = api_as(manager).delete(f"/api/v1/projects/{project.pk}/images/{first.pk}/")
    assert response.status_code == 204, response.content
    wait_for_jobs()  # the files go by a job sent after the commit
    assert not Image.objects.filter(pk=first.pk).exists()
    assert set(bucket.keys()) == before - {first.file.name, first.thumbnail.name}
    # The others, and the export (a finished version never changes), are untouched.
    for image in (second, third):
        assert bucket.read(image.file.name) == images.jpeg(seed=62 if image == second else 63)

    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/images/").json()
    assert listed["count"] == 2
    path = f"/api/v1/projects/{project.pk}/images/{first.pk}/"
    assert api_as(manager).delete(path).status_code == 404


def test_an_image_with_work_on_it_is_not_deleted(api_as, manager, bucket) -> None:
    project, (image, *_) = _project_with_files(api_as, manager, bucket)
    api_as(manager).post(f"/api/v1/projects/{project.pk}/start/")
    worker = WorkerFactory.create()
    task = None
    while True:  # lease until the worker holds one of this image's tasks
        lease = api_as(worker).post(f"/api/v1/projects/{project.pk}/assignments/next/")
        assert lease.status_code == 201, lease.content
        if lease.json()["task"]["image"] == image.pk:
            task = lease.json()["task"]
            break
        api_as(worker).post(f"/api/v1/assignments/{lease.json()['id']}/skip/")
    assert task is not None
    before = bucket.keys()
    response = api_as(manager).delete(f"/api/v1/projects/{project.pk}/images/{image.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "image_in_use"
    assert Image.objects.filter(pk=image.pk).exists()
    assert bucket.keys() == before


def test_deleting_a_project_empties_its_part_of_the_bucket(api, api_as, manager, bucket) -> None:
    project, _ = _project_with_files(api_as, manager, bucket)
    _project_with_files(api_as, manager, bucket)  # another project's files, which stay
    mine = [f"projects/{project.pk}/", f"exports/{project.pk}/"]
    for prefix in mine:
        assert bucket.keys(prefix), prefix
    # A project whose id starts with this one's keeps its files: prefixes end at the slash.
    bucket.put(f"projects/{project.pk}0/images/another-projects.jpg", b"kept")
    theirs = [key for key in bucket.keys("") if not key.startswith(tuple(mine))]
    bucket.put(f"projects/{project.pk}/images/zz/left-by-a-crash.jpg", b"orphan")

    url = f"/api/v1/projects/{project.pk}/"
    assert api.delete(url).status_code == 401
    assert api_as(WorkerFactory.create()).delete(url).status_code == 403
    response = api_as(manager).delete(url)
    assert response.status_code == 204, response.content
    wait_for_jobs()  # the files go by a job sent after the commit
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not Image.objects.filter(project_id=project.pk).exists()
    assert not DatasetExport.objects.filter(project_id=project.pk).exists()
    # Everything under the project's folders, files no row named included; nothing else.
    for prefix in mine:
        assert bucket.keys(prefix) == [], prefix
    assert bucket.keys() == sorted(theirs)
    assert api_as(manager).get(url).status_code == 404


def test_files_stay_when_the_deletion_rolls_back(api_as, manager, bucket) -> None:
    from tasks.services import project_delete

    project, _ = _project_with_files(api_as, manager, bucket)
    before = bucket.keys()

    class Abort(Exception):
        pass

    def delete_then_fail() -> None:
        with transaction.atomic():
            project_delete(project=Project.objects.get(pk=project.pk))
            raise Abort

    with pytest.raises(Abort):
        delete_then_fail()
    wait_for_jobs()
    assert Project.objects.filter(pk=project.pk).exists()
    assert bucket.keys() == before


def test_a_project_where_money_was_earned_is_not_deleted(api_as, manager, bucket) -> None:
    from payouts.models import LedgerEntry

    project, _ = _project_with_files(api_as, manager, bucket)
    worker = WorkerFactory.create()
    LedgerEntry.objects.create(
        worker=worker, project=project, kind="bonus", amount=100, currency="USD", memo="test"
    )
    before = bucket.keys()
    response = api_as(manager).delete(f"/api/v1/projects/{project.pk}/")
    wait_for_jobs()
    assert response.status_code == 409
    assert response.json()["code"] == "project_has_earnings"
    assert Project.objects.filter(pk=project.pk).exists()
    assert bucket.keys() == before


def test_deleting_a_project_on_the_local_disk_removes_its_folders(
    api_as, manager, settings, tmp_path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    reset_storage(settings)
    project = project_create(manager, kind="bbox")
    upload(api_as(manager), project, ("a.jpg", images.jpeg(seed=71)))
    wait_for_jobs()
    image = Image.objects.get()
    assert (settings.MEDIA_ROOT / image.file.name).exists()
    assert (settings.MEDIA_ROOT / image.thumbnail.name).exists()
    assert api_as(manager).delete(f"/api/v1/projects/{project.pk}/").status_code == 204
    wait_for_jobs()
    assert not (settings.MEDIA_ROOT / "projects" / str(project.pk)).exists()
