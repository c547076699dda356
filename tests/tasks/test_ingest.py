"""Uploads through the API, processed by the in-process job worker."""

from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image as PILImage

from crowd.jobs import wait_for_jobs
from tasks.models import Image, ImageStatus, Task
from tests import images
from tests.factories import project_create

pytestmark = pytest.mark.django_db(transaction=True)


def upload(client, project, *files: tuple[str, bytes]):
    payload = {"files": [SimpleUploadedFile(name, data) for name, data in files]}
    return client.post(f"/api/v1/projects/{project.pk}/images/", payload, format="multipart")


@pytest.fixture
def project(manager):
    return project_create(manager, kind="bbox")


def by_name(body: dict) -> dict[str, dict]:
    return {f["name"]: f for f in body["files"]}


def test_a_batch_with_every_kind_of_bad_file(api_as, manager, project) -> None:
    good = images.jpeg(seed=1)
    response = upload(
        api_as(manager),
        project,
        ("a.jpg", good),
        ("b.png", images.png(seed=2)),
        ("a-again.jpg", good),
        ("cut.jpg", images.truncated(images.jpeg(seed=3))),
        ("broken.png", images.corrupt_png()),
        ("notes.txt", b"just some text, not an image"),
        ("bomb.png", images.bomb_png()),
        ("empty.jpg", b""),
        ("cut.webp", images.truncated(images.encode(images.scene(seed=6), "WEBP"))),
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["created"] == 2
    assert body["duplicates"] == 1
    files = by_name(body)
    assert files["a-again.jpg"]["duplicate_of"] == files["a.jpg"]["id"]
    codes = {r["name"]: r["code"] for r in body["rejected"]}
    assert codes == {
        "cut.jpg": "truncated",
        "broken.png": "corrupt",
        "notes.txt": "not_an_image",
        "bomb.png": "too_many_pixels",
        "empty.jpg": "empty_file",
        "cut.webp": "corrupt",
    }
    assert all(r["error"] for r in body["rejected"])
    assert Image.objects.count() == 2

    wait_for_jobs()
    assert set(Image.objects.values_list("status", flat=True)) == {ImageStatus.READY}
    assert Task.objects.count() == 2
    progress = api_as(manager).get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["images"] == {
        "total": 2, "pending": 0, "ready": 2, "failed": 0, "near_duplicates": 0
    }  # fmt: skip
    assert progress["tasks"] == 2
    assert progress["open"] == 2
    assert progress["spent"] == {"amount": "0.00", "currency": "USD"}


def test_truncation_only_a_full_decode_finds_fails_the_image_not_the_batch(
    api_as, manager, project
) -> None:
    # A GIF cut short has a readable header, so it passes the upload's quick checks; the
    # processing job's full decode catches it.
    cut_gif = images.truncated(images.encode(images.scene(seed=4), "GIF"))
    body = upload(
        api_as(manager), project, ("sneaky.gif", cut_gif), ("fine.jpg", images.jpeg(seed=5))
    ).json()
    assert body["created"] == 2
    wait_for_jobs()
    failed = Image.objects.get(name="sneaky.gif")
    assert failed.status == ImageStatus.FAILED
    assert failed.error
    assert not Task.objects.filter(image=failed).exists()
    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/images/").json()
    assert listed["count"] == 2
    assert {r["name"]: r["status"] for r in listed["results"]} == {
        "sneaky.gif": "failed", "fine.jpg": "ready"
    }  # fmt: skip


def test_exif_rotated_jpeg_is_stored_upright(api_as, manager, project) -> None:
    body = upload(api_as(manager), project, ("phone.jpg", images.rotated_jpeg(400, 200, 6))).json()
    image = Image.objects.get(pk=body["files"][0]["id"])
    assert (image.width, image.height) == (200, 400)
    wait_for_jobs()
    image.refresh_from_db()
    assert (image.width, image.height) == (200, 400)
    with default_storage.open(image.file.name) as fh, PILImage.open(fh) as stored:
        assert stored.size == (200, 400)
        assert stored.getexif().get(0x0112, 1) == 1  # orientation applied once, tag gone
    task = Task.objects.get(image=image)
    assert task.region == [0, 0, 200, 400]


def test_large_image_is_tiled_into_tasks(api_as, manager, project) -> None:
    big = images.encode(images.scene(5000, 3000, seed=9), "JPEG", quality=70)
    upload(api_as(manager), project, ("big.jpg", big))
    wait_for_jobs()
    regions = sorted(Task.objects.values_list("x", "y", "width", "height"))
    assert regions == sorted(
        [(0, 0, 2048, 2048), (1476, 0, 2048, 2048), (2952, 0, 2048, 2048),
         (0, 952, 2048, 2048), (1476, 952, 2048, 2048), (2952, 952, 2048, 2048)]
    )  # fmt: skip


def test_classification_never_tiles(api_as, manager) -> None:
    project = project_create(manager, kind="classification", labels=["cat", "dog"])
    upload(api_as(manager), project, ("big.jpg", images.jpeg(5000, 3000, seed=9)))
    wait_for_jobs()
    assert list(Task.objects.values_list("x", "y", "width", "height")) == [(0, 0, 5000, 3000)]


def test_near_duplicates_are_reported_not_dropped(api_as, manager, project) -> None:
    original = images.scene(640, 480, seed=11)
    upload(api_as(manager), project, ("orig.jpg", images.encode(original, "JPEG", quality=92)))
    wait_for_jobs()
    smaller = images.encode(original.resize((480, 360)), "JPEG", quality=60)
    upload(
        api_as(manager), project, ("copy.jpg", smaller), ("other.jpg", images.jpeg(640, 480, 12))
    )
    wait_for_jobs()
    orig, copy, other = (Image.objects.get(name=n) for n in ("orig.jpg", "copy.jpg", "other.jpg"))
    assert copy.near_duplicate_of_id == orig.pk
    assert copy.near_duplicate_distance is not None
    assert other.near_duplicate_of_id is None
    assert copy.status == ImageStatus.READY  # reported, still annotated
    assert Task.objects.filter(image=copy).exists()
    listed = {
        r["name"]: r
        for r in api_as(manager).get(f"/api/v1/projects/{project.pk}/images/").json()["results"]
    }
    assert listed["copy.jpg"]["near_duplicate_of"] == orig.pk
    progress = api_as(manager).get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["images"]["near_duplicates"] == 1


def test_zip_archive_with_hostile_entries(api_as, manager, project) -> None:
    archive = images.zip_of(
        {"set/one.jpg": images.jpeg(seed=21), "set/two.png": images.png(seed=22),
         "../../etc/evil.jpg": images.jpeg(seed=23), "/abs.jpg": images.jpeg(seed=24),
         "nested.zip": images.zip_of({"x.jpg": images.jpeg(seed=25)}),
         "set/readme.txt": b"hello"},
        symlinks={"set/link.jpg": "/etc/passwd"},
    )  # fmt: skip
    body = upload(api_as(manager), project, ("batch.zip", archive)).json()
    assert body["created"] == 2
    codes = {r["name"]: r["code"] for r in body["rejected"]}
    assert codes == {
        "batch.zip/../../etc/evil.jpg": "unsafe_path",
        "batch.zip//abs.jpg": "unsafe_path",
        "batch.zip/nested.zip": "nested_archive",
        "batch.zip/set/readme.txt": "not_an_image",
        "batch.zip/set/link.jpg": "symlink",
    }
    stored = list(Image.objects.values_list("file", flat=True))
    assert all(name.startswith(f"projects/{project.pk}/images/") for name in stored)


def test_a_corrupt_zip_is_rejected_whole(api_as, manager, project) -> None:
    data = images.zip_of({"one.jpg": images.jpeg(seed=31)})
    body = upload(api_as(manager), project, ("bad.zip", data[:40])).json()
    assert body["created"] == 0
    assert body["rejected"][0]["code"] == "bad_archive"


@override_settings(MAX_IMAGE_BYTES=1_000)
def test_files_over_the_byte_limit_are_rejected(api_as, manager, project) -> None:
    body = upload(api_as(manager), project, ("huge.png", images.png(1200, 900, seed=3))).json()
    assert body["rejected"][0]["code"] == "file_too_large"
    assert not Image.objects.exists()


@override_settings(MAX_UPLOAD_BYTES=1000)
def test_an_oversized_request_is_a_413_before_reading_it(api_as, manager, project) -> None:
    response = upload(api_as(manager), project, ("a.jpg", images.jpeg(seed=1)))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert not Image.objects.exists()


def test_no_files_is_a_400(api_as, manager, project) -> None:
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/images/", {}, format="multipart"
    )
    assert response.status_code == 400
    assert "files" in response.json()["errors"]


def test_only_the_projects_managers_upload(api_as, manager, worker, project) -> None:
    from tests.factories import ManagerFactory

    assert upload(api_as(worker), project, ("a.jpg", images.jpeg())).status_code == 403
    other = ManagerFactory.create()
    assert upload(api_as(other), project, ("a.jpg", images.jpeg())).status_code == 404
    assert not Image.objects.exists()


def test_processing_twice_creates_tasks_once(api_as, manager, project) -> None:
    from tasks.ingest import image_process

    body = upload(api_as(manager), project, ("a.jpg", images.jpeg(seed=41))).json()
    wait_for_jobs()
    image_process(image_id=body["files"][0]["id"])
    assert Task.objects.count() == 1


def test_thumbnail_is_small_jpeg(api_as, manager, project) -> None:
    body = upload(api_as(manager), project, ("a.png", images.png(1600, 1200, seed=5))).json()
    wait_for_jobs()
    response = api_as(manager).get(f"/api/v1/images/{body['files'][0]['id']}/thumbnail/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    with PILImage.open(io.BytesIO(b"".join(response.streaming_content))) as thumb:
        assert max(thumb.size) == 256


def test_an_upload_that_stores_nothing_says_so(api_as, manager) -> None:
    """All rejected: 400 with the per-file results; all already there: 200, not 201."""
    project = project_create(manager)
    client = api_as(manager)
    url = f"/api/v1/projects/{project.pk}/images/"

    def send(*files: tuple[str, bytes]):
        uploads = [SimpleUploadedFile(name, data) for name, data in files]
        return client.post(url, {"files": uploads}, format="multipart")

    refused = send(("notes.txt", b"not an image"), ("empty.jpg", b""))
    assert refused.status_code == 400, refused.content
    body = refused.json()
    assert (body["code"], body["created"], body["duplicates"]) == ("upload_rejected", 0, 0)
    assert {r["code"] for r in body["rejected"]} == {"not_an_image", "empty_file"}
    assert "notes.txt" in " ".join(body["errors"]["files"])
    assert not Image.objects.filter(project=project).exists()
    good = images.jpeg(seed=11)
    assert send(("a.jpg", good)).status_code == 201
    again = send(("a.jpg", good))
    assert (again.status_code, again.json()["duplicates"]) == (200, 1)
