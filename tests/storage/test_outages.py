"""The file store going down for real in the middle of a transfer: a TCP proxy between the app
and the SeaweedFS server is cut while an upload's body or an export's reads and writes pass
through it. Nothing is left half-written, and an export is retried to completion."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import dramatiq
import pytest
from botocore.exceptions import BotoCoreError
from django.core.files.uploadedfile import SimpleUploadedFile

from crowd.jobs import wait_for_jobs
from qa.jobs import export_build
from qa.models import DatasetExport
from tasks.models import Image
from tests import images
from tests.factories import project_create
from tests.qa.test_exports import bbox_project
from tests.storage.conftest import Bucket, multipart_uploads
from tests.storage.proxy import StoreProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both_databases]

# Room for the requests' headers (a HEAD, then the PUT's) before the body is cut.
HEADERS = 4096


def upload(client, project, *files: tuple[str, bytes]):
    payload = {"files": [SimpleUploadedFile(name, data) for name, data in files]}
    return client.post(f"/api/v1/projects/{project.pk}/images/", payload, format="multipart")


def large_png(seed: int) -> bytes:
    """A PNG of noise (it does not compress), about 800 KB: its PUT takes many segments."""
    import numpy as np
    from PIL import Image as PILImage

    pixels = np.random.default_rng(seed).integers(0, 256, (480, 560, 3), dtype=np.uint8)
    return images.encode(PILImage.fromarray(pixels), "PNG")


def test_the_store_cut_off_mid_upload_stores_nothing_of_the_file(
    api_as, manager, bucket: Bucket, store_proxy: StoreProxy
) -> None:
    project = project_create(manager, kind="bbox")
    data = large_png(81)
    assert len(data) > 200_000
    store_proxy.down_after(up=HEADERS + len(data) // 2)  # half the body reaches the store
    response = upload(api_as(manager), project, ("big.png", data))
    assert store_proxy.cut_during.startswith("PUT ")
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "storage_unavailable"
    assert "'big.png'" in body["detail"]
    assert body["not_stored"] == ["big.png"]
    assert body["created"] == 0
    assert response["Retry-After"]
    assert not Image.objects.exists()
    assert bucket.keys() == []
    assert multipart_uploads(bucket) == []

    store_proxy.restore()
    again = upload(api_as(manager), project, ("big.png", data))
    assert again.status_code == 201, again.content
    wait_for_jobs()
    image = Image.objects.get()
    assert bucket.read(image.file.name) == data


def test_an_upload_of_several_files_cut_off_keeps_the_whole_files_and_says_which(
    api_as, manager, bucket: Bucket, store_proxy: StoreProxy
) -> None:
    """Each file is stored whole or not at all: those before the outage are complete (row and
    object), the one cut off and those after have neither, and the response says which. The
    same upload sent again finds the first as duplicates and stores the rest."""
    project = project_create(manager, kind="bbox")
    first, second, third = large_png(82), large_png(83), large_png(84)
    # The first file's HEAD and PUT, then half of the second's body.
    store_proxy.down_after(up=2 * HEADERS + len(first) + len(second) // 2)
    response = upload(
        api_as(manager), project, ("a.png", first), ("b.png", second), ("c.png", third)
    )
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "storage_unavailable"
    assert body["created"] == 1
    assert [f["name"] for f in body["files"]] == ["a.png"]
    assert body["not_stored"] == ["b.png", "c.png"]
    assert "(1 before it were)" in body["detail"]
    stored = Image.objects.get()
    assert stored.name == "a.png"
    assert bucket.keys("projects/") == [stored.file.name]
    assert bucket.read(stored.file.name) == first
    assert multipart_uploads(bucket) == []

    store_proxy.restore()
    again = upload(
        api_as(manager), project, ("a.png", first), ("b.png", second), ("c.png", third)
    ).json()
    assert (again["created"], again["duplicates"]) == (2, 1)
    wait_for_jobs()
    names = {i.name: i for i in Image.objects.all()}
    assert sorted(names) == ["a.png", "b.png", "c.png"]
    assert bucket.read(names["c.png"].file.name) == third
    originals = [k for k in bucket.keys("projects/") if "/images/" in k]
    assert sorted(originals) == sorted(i.file.name for i in names.values())


# --- Exports ---------------------------------------------------------------------------------


def _request_export(api_as, manager, project) -> int:
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/",
        {"format": "coco", "include_images": True},
        format="json",
    )
    assert response.status_code == 202, response.content
    return int(response.json()["id"])


def _status(api_as, manager, export_id: int) -> dict:
    response = api_as(manager).get(f"/api/v1/exports/{export_id}/")
    assert response.status_code == 200
    return dict(response.json())


def _downloaded(api_as, manager, export: DatasetExport, bucket: Bucket) -> bytes:
    """The version as a client gets it (through the presigned redirect), checked against its
    hash; and the only object of the version's folder in the bucket."""
    redirect = api_as(manager).get(f"/api/v1/exports/{export.pk}/download/")
    assert redirect.status_code == 302
    with urllib.request.urlopen(redirect["Location"], timeout=10) as response:
        data = bytes(response.read())
    assert hashlib.sha256(data).hexdigest() == export.sha256
    assert bucket.keys(f"exports/{export.project_id}/") == [export.file.name]
    assert multipart_uploads(bucket) == []
    return data


@pytest.mark.parametrize("where", ["reading the images", "storing the file"])
def test_an_export_cut_off_is_retried_automatically_and_leaves_one_file(
    api_as, manager, bucket: Bucket, store_proxy: StoreProxy, monkeypatch, where
) -> None:
    """The store goes down in the middle of a build; the version shows queued with the
    reason (not a failure its readers take as final) while the job waits out its back-off;
    the store comes back, and the retry builds it: one file, downloadable, no leftovers."""
    project, _ = bbox_project(manager, images=3, workers=1)
    # Long enough a back-off for the test to bring the store back before the retry.
    monkeypatch.setitem(export_build.options, "min_backoff", 1500)
    if where == "reading the images":
        store_proxy.down_after(down=3_000)  # part of the first image read back
    else:
        store_proxy.down_after(up=4 * HEADERS)  # the images read; the file's PUT cut
    export_id = _request_export(api_as, manager, project)

    deadline = time.monotonic() + 30
    while (row := _status(api_as, manager, export_id))["status"] != "queued" or not row["error"]:
        # (failed for an instant: the failure is recorded, then the job marks the retry)
        assert row["status"] != "done", row
        assert time.monotonic() < deadline, row
        time.sleep(0.02)
    assert store_proxy.went_down.is_set()
    method, path = store_proxy.cut_during.split()[:2]
    if where == "reading the images":
        assert (method, path.split("/")[2:4]) == ("GET", ["projects", str(project.pk)])
    else:
        assert (method, path.split("/")[2:4]) == ("PUT", ["exports", str(project.pk)])
    assert bucket.keys(f"exports/{project.pk}/") == []
    assert row["error"].startswith("Attempt 1 of 4 failed; it is retried automatically.")
    assert "file store could not be reached" in row["error"]
    assert row["download_url"] is None
    assert api_as(manager).get(f"/api/v1/exports/{export_id}/download/").status_code == 409
    store_proxy.restore()

    wait_for_jobs()
    export = DatasetExport.objects.get(pk=export_id)
    assert export.status == "done", export.error
    assert export.attempts == 2
    assert export.error == ""
    data = _downloaded(api_as, manager, export, bucket)
    coco = json.loads(_member(data, "annotations/instances_default.json"))
    assert len(coco["images"]) == 3


def _member(data: bytes, name: str) -> bytes:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


def test_an_export_failed_for_good_is_built_again_on_request(
    api, api_as, manager, client_user, worker, bucket: Bucket, store_proxy: StoreProxy
) -> None:
    """The store stays down past every retry: the version fails, with the reason; once the
    store is back a manager builds it again (same number), and it is whole."""
    from tasks.services import project_client_add

    project, _ = bbox_project(manager, images=2, workers=1)
    project_client_add(project=project, username=client_user.username)
    store_proxy.down()
    export_id = _request_export(api_as, manager, project)
    with pytest.raises(BotoCoreError):
        wait_for_jobs()  # the last attempt's failure, as the broker dead-letters the job
    dramatiq.get_broker().flush_all()  # the stub broker would raise it again at each join
    failed = _status(api_as, manager, export_id)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("The file store could not be reached")
    assert DatasetExport.objects.get(pk=export_id).attempts == 4

    url = f"/api/v1/exports/{export_id}/retry/"
    assert api.post(url).status_code == 401
    assert api_as(worker).post(url).status_code == 403
    store_proxy.restore()
    response = api_as(manager).post(url)
    assert response.status_code == 202, response.content
    # The in-process job worker may have taken it up before the answer was written.
    assert response.json()["status"] in ("queued", "running")
    assert response.json()["error"] is None
    # Only a failed version is built again: a queued or done one is left as it is.
    again = api_as(client_user).post(url)
    assert again.status_code == 409
    assert again.json()["code"] == "export_not_failed"
    wait_for_jobs()
    export = DatasetExport.objects.get(pk=export_id)
    assert (export.status, export.version, export.attempts) == ("done", 1, 1)
    assert DatasetExport.objects.filter(project=project).count() == 1
    _downloaded(api_as, manager, export, bucket)
    assert api_as(manager).post(url).json()["code"] == "export_not_failed"


def test_a_project_deleted_while_the_store_is_down_loses_its_files_once_it_is_back(
    api_as, manager, bucket: Bucket, store_proxy: StoreProxy, monkeypatch
) -> None:
    """The rows go at once; the files' deletion job fails against the dead store and is
    retried after its back-off, once the store is back: no object of the project is left."""
    from tasks.jobs import stored_files_delete

    project = project_create(manager, kind="bbox")
    assert upload(api_as(manager), project, ("a.png", large_png(91))).status_code == 201
    wait_for_jobs()
    assert len(bucket.keys(f"projects/{project.pk}/")) == 2  # the original and its thumbnail
    monkeypatch.setitem(stored_files_delete.options, "min_backoff", 1000)

    store_proxy.down()
    response = api_as(manager).delete(f"/api/v1/projects/{project.pk}/")
    assert response.status_code == 204, response.content
    assert not Image.objects.exists()
    deadline = time.monotonic() + 30
    # The job's first attempt has failed: its client's three tries all met the dead store
    # (the next attempt waits out the job's back-off, past the store's return).
    while store_proxy.refused < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.1)
    assert len(bucket.keys(f"projects/{project.pk}/")) == 2
    store_proxy.restore()

    wait_for_jobs()
    assert bucket.keys() == []
