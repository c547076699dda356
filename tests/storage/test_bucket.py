"""Files in an S3-compatible bucket (a real SeaweedFS server): uploads, thumbnails and exports
are stored there, and the API answers with presigned URLs after its usual permission checks."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from datetime import timedelta
from typing import Any
from urllib.error import HTTPError

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image as PILImage

from crowd.jobs import wait_for_jobs
from qa.models import DatasetExport
from tasks.models import Assignment, AssignmentStatus, Image, ImageStatus
from tasks.services import project_client_add
from tests import images
from tests.factories import ClientFactory, ManagerFactory, WorkerFactory, project_create
from tests.qa.test_exports import bbox_project

pytestmark = pytest.mark.django_db(transaction=True)


def upload(client, project, *files: tuple[str, bytes]):
    payload = {"files": [SimpleUploadedFile(name, data) for name, data in files]}
    return client.post(f"/api/v1/projects/{project.pk}/images/", payload, format="multipart")


def fetch(url: str) -> tuple[bytes, dict[str, str]]:
    """What a browser gets from the presigned URL: no credentials of ours."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), dict(response.headers)


def test_an_upload_is_stored_in_the_bucket_with_its_thumbnail(
    api_as, manager, bucket, settings, tmp_path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    project = project_create(manager, kind="bbox")
    data = images.jpeg(seed=11)
    body = upload(api_as(manager), project, ("street.jpg", data)).json()
    assert body["created"] == 1, body
    wait_for_jobs()
    image = Image.objects.get(pk=body["files"][0]["id"])
    assert image.status == ImageStatus.READY, image.error
    sha256 = hashlib.sha256(data).hexdigest()
    assert bucket.keys() == [
        f"projects/{project.pk}/images/{sha256[:2]}/{sha256}.jpg",
        f"projects/{project.pk}/thumbs/{image.pk}.jpg",
    ]
    assert bucket.read(image.file.name) == data
    with PILImage.open(io.BytesIO(bucket.read(image.thumbnail.name))) as thumb:
        assert thumb.format == "JPEG"
    # Nothing under the local media folder: the bucket is the only store.
    assert not settings.MEDIA_ROOT.exists()


def test_image_and_thumbnail_redirect_to_presigned_urls(api_as, manager, bucket) -> None:
    project = project_create(manager, kind="bbox")
    data = images.jpeg(seed=12)
    body = upload(api_as(manager), project, ("street.jpg", data)).json()
    wait_for_jobs()
    image = Image.objects.get(pk=body["files"][0]["id"])

    response = api_as(manager).get(f"/api/v1/images/{image.pk}/file/")
    assert response.status_code == 302
    assert response["Location"].startswith(bucket.client.meta.endpoint_url)
    assert "X-Amz-Signature=" in response["Location"]
    assert response["Cache-Control"] == "private, no-store"
    served, headers = fetch(response["Location"])
    assert served == data
    assert headers["Content-Type"] == "image/jpeg"

    thumb = api_as(manager).get(f"/api/v1/images/{image.pk}/thumbnail/")
    assert thumb.status_code == 302
    served, _ = fetch(thumb["Location"])
    assert served == bucket.read(image.thumbnail.name)
    assert served[:2] == b"\xff\xd8"

    # The presigned URL is what grants access: the same object without it is refused.
    with pytest.raises(HTTPError) as refused:
        fetch(response["Location"].split("?")[0])
    assert refused.value.code == 403


def test_permission_checks_come_before_any_url(api, api_as, manager, bucket) -> None:
    project = project_create(manager, kind="bbox")
    upload(api_as(manager), project, ("street.jpg", images.jpeg(seed=13)))
    wait_for_jobs()
    image = Image.objects.get()
    paths = [f"/api/v1/images/{image.pk}/file/", f"/api/v1/images/{image.pk}/thumbnail/"]
    worker = WorkerFactory.create()
    client = ClientFactory.create()
    for path in paths:
        assert api.get(path).status_code == 401
        assert api_as(ManagerFactory.create()).get(path).status_code == 404
        assert api_as(worker).get(path).status_code == 404
        assert api_as(client).get(path).status_code == 404
    project_client_add(project=project, username=client.username)
    now = timezone.now()
    Assignment.objects.create(
        task=image.tasks.get(), project=project, worker=worker, status=AssignmentStatus.LEASED,
        leased_at=now, expires_at=now + timedelta(minutes=5),
    )  # fmt: skip
    for path in paths:
        assert api_as(client).get(path).status_code == 302
        assert api_as(worker).get(path).status_code == 302
        assert api_as(WorkerFactory.create()).get(path).status_code == 404


def test_an_export_is_written_to_the_bucket_and_downloaded_from_it(
    api, api_as, manager, client_user, worker, bucket
) -> None:
    project, _ = bbox_project(manager, images=2, workers=1)
    project_client_add(project=project, username=client_user.username)
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/",
        {"format": "coco", "include_images": True},
        format="json",
    )
    assert response.status_code == 202, response.content
    wait_for_jobs()  # the export job, sent after commit, runs on the in-process worker
    export = DatasetExport.objects.get(pk=response.json()["id"])
    assert export.status == "done", export.error
    key = f"exports/{project.pk}/{export.pk}/{export.file_name}"
    assert export.file.name == key
    assert key in bucket.keys("exports/")
    stored = bucket.read(key)
    assert hashlib.sha256(stored).hexdigest() == export.sha256
    assert len(stored) == export.size_bytes

    url = f"/api/v1/exports/{export.pk}/download/"
    for user in (manager, client_user):
        download = api_as(user).get(url)
        assert download.status_code == 302
        assert download["ETag"] == f'"{export.sha256}"'
        served, headers = fetch(download["Location"])
        assert served == stored
        assert headers["Content-Type"] == "application/zip"
        assert headers["Content-Disposition"] == f'attachment; filename="{export.file_name}"'
    assert api_as(manager).get(url, HTTP_IF_NONE_MATCH=f'"{export.sha256}"').status_code == 304
    assert api.get(url).status_code == 401
    assert api_as(worker).get(url).status_code == 403
    for outsider in (ClientFactory.create(), ManagerFactory.create()):
        assert api_as(outsider).get(url).status_code == 404
    assert DatasetExport.objects.filter(project=project).count() == 1


def test_an_unreachable_store_answers_503_and_stores_nothing(
    api_as, manager, bucket, settings
) -> None:
    from tests.plugins.services import free_port

    project = project_create(manager, kind="bbox")
    working = settings.AWS_S3_ENDPOINT_URL
    # Nothing listens there: every call to the store is refused.
    settings.AWS_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.STORAGES = {**settings.STORAGES}  # a new storage object with the dead endpoint
    response = upload(api_as(manager), project, ("street.jpg", images.jpeg(seed=14)))
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "storage_unavailable"
    assert response["Retry-After"]
    assert not Image.objects.exists()

    settings.AWS_S3_ENDPOINT_URL = working
    settings.STORAGES = {**settings.STORAGES}
    assert bucket.keys() == []
    again = upload(api_as(manager), project, ("street.jpg", images.jpeg(seed=14)))
    assert again.status_code == 201
    wait_for_jobs()
    assert len(bucket.keys()) == 2


def test_a_large_file_streams_to_the_bucket_in_parts(bucket) -> None:
    """As an export is stored: from a temporary file, in a multipart upload, so no process
    holds the whole file; read back, it spills from memory to disk."""
    import os
    import tempfile

    from django.core.files import File
    from django.core.files.storage import default_storage

    from crowd.storage import READ_SPOOL_BYTES

    size = 20 * 1024 * 1024
    with tempfile.TemporaryFile() as out:
        chunk = os.urandom(1024 * 1024)
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.seek(0)
        digest = hashlib.sha256(out.read()).hexdigest()
        out.seek(0)
        name = default_storage.save("exports/1/2/big.zip", File(out))
    head = bucket.client.head_object(Bucket=bucket.name, Key=name)
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-3")  # three 8 MiB parts: a multipart upload
    with default_storage.open(name, "rb") as stored:
        read = hashlib.sha256()
        while block := stored.read(1024 * 1024):
            read.update(block)
        spool: Any = stored.file
        assert spool._rolled  # spilled to a temporary file past READ_SPOOL_BYTES
    assert read.hexdigest() == digest
    assert size > READ_SPOOL_BYTES


def test_pages_may_load_images_from_the_bucket(api, bucket) -> None:
    policy = api.get("/healthz")["Content-Security-Policy"]
    endpoint = bucket.client.meta.endpoint_url
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert endpoint in directives["img-src"].split()
    assert endpoint in directives["connect-src"].split()
    assert endpoint not in directives["script-src"]
