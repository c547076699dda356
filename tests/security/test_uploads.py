"""Hostile uploads and bodies: each is a clear 4xx JSON error (or a per-file rejection in the
upload report) and leaves nothing behind: no Image or Answer rows, no files in MEDIA_ROOT.

The basic cases (a PNG bomb, ``..`` and absolute zip paths, symlinks, nested archives, the
request size cap) are in tests/tasks/test_ingest.py; these add what an attacker tries next.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from qa.models import GoldAnswer
from tasks.models import Assignment, AssignmentStatus, Image, Task
from tests import images
from tests.factories import token_for
from tests.security.world import World

pytestmark = pytest.mark.django_db


def as_user(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def media_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return (
        {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        if root.exists()
        else set()
    )


def upload(client: APIClient, project_id: int, name: str, data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        f"/api/v1/projects/{project_id}/images/",
        {"files": [SimpleUploadedFile(name, data)]},
        format="multipart",
    )


def assert_all_rejected(response: Any, codes: dict[str, str]) -> None:
    # Nothing stored: a 400 in the error shape, with the per-file results beside it.
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "upload_rejected"
    assert len(body["errors"]["files"]) == len(body["rejected"])
    assert body["created"] == 0
    assert {r["name"]: r["code"] for r in body["rejected"]} == codes
    assert all(r["error"] for r in body["rejected"])


def deflated_zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def manager_client(world: World) -> APIClient:
    return as_user(world.a.owner)


@pytest.fixture
def unchanged(world: World):
    """Asserts, after the test, that no image row and no stored file was added."""
    images_before, files_before = Image.objects.count(), media_files()
    yield
    assert Image.objects.count() == images_before
    assert media_files() == files_before


# --- Archives and bombs -----------------------------------------------------------------------


def test_a_decompression_bomb_inside_a_zip(world: World, manager_client, unchanged) -> None:
    archive = images.zip_of({"bomb.png": images.bomb_png()})
    response = upload(manager_client, world.a.project.pk, "set.zip", archive)
    assert_all_rejected(response, {"set.zip/bomb.png": "too_many_pixels"})


def test_a_gif_bomb_is_caught_by_its_header(world: World, manager_client, unchanged) -> None:
    # A GIF's logical screen claims 65535 x 65535 pixels in a few dozen bytes.
    gif = bytearray(images.encode(images.scene(64, 64), "GIF"))
    gif[6:10] = (65535).to_bytes(2, "little") * 2
    response = upload(manager_client, world.a.project.pk, "screen.gif", bytes(gif))
    assert response.status_code == 400
    body = response.json()
    assert body["created"] == 0
    assert body["rejected"][0]["code"] == "too_many_pixels"


@override_settings(MAX_IMAGE_BYTES=5 * 1024 * 1024)
def test_a_zip_bomb_entry_is_refused_without_inflating_it_all(
    world: World, manager_client, unchanged
) -> None:
    # 64 MiB of zeros deflate to about 64 KiB; the entry is over the per-image byte cap.
    archive = deflated_zip({"zeros.jpg": bytes(64 * 1024 * 1024)})
    assert len(archive) < 200_000
    response = upload(manager_client, world.a.project.pk, "bomb.zip", archive)
    assert_all_rejected(response, {"bomb.zip/zeros.jpg": "file_too_large"})


def test_a_zip_entry_that_lies_about_its_size_is_not_inflated_past_it(
    world: World, manager_client, unchanged
) -> None:
    """The headers claim 1,000 bytes; the data inflates to 64 MiB. The reader stops at the
    claimed size, and the checksum then gives the lie away."""
    data = bytearray(deflated_zip({"zeros.jpg": bytes(64 * 1024 * 1024)}))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    response = upload(manager_client, world.a.project.pk, "liar.zip", bytes(data))
    assert_all_rejected(response, {"liar.zip/zeros.jpg": "bad_archive_entry"})


@override_settings(MAX_ARCHIVE_FILES=5)
def test_an_archive_with_too_many_entries_is_read_only_up_to_the_cap(
    world: World, manager_client, unchanged
) -> None:
    archive = deflated_zip({f"f{i}.txt": b"x" for i in range(50)})
    response = upload(manager_client, world.a.project.pk, "many.zip", archive)
    codes = {f"many.zip/f{i}.txt": "not_an_image" for i in range(5)}
    assert_all_rejected(response, {**codes, "many.zip/f5.txt": "too_many_files"})


def test_zip_slip_in_every_spelling(world: World, manager_client, unchanged) -> None:
    jpeg = images.jpeg(seed=5)
    archive = images.zip_of({
        "..\\..\\evil1.jpg": jpeg, "a/../../evil2.jpg": jpeg, "/etc/evil3.jpg": jpeg,
        "\\\\server\\share\\evil4.jpg": jpeg, "./../evil5.jpg": jpeg,
    })  # fmt: skip
    response = upload(manager_client, world.a.project.pk, "slip.zip", archive)
    assert response.status_code == 400
    body = response.json()
    assert body["created"] == 0
    assert {r["code"] for r in body["rejected"]} == {"unsafe_path"}
    assert len(body["rejected"]) == 5
    for name in ("evil1.jpg", "evil2.jpg", "evil3.jpg", "evil4.jpg", "evil5.jpg"):
        assert not list(Path(settings.MEDIA_ROOT).parent.rglob(name))


# --- Polyglots --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tail"),
    [
        ("photo.html", b"<html><script>alert(document.cookie)</script></html>"),
        ("photo.jpg", images.zip_of({"payload.sh": b"#!/bin/sh\nrm -rf /\n"})),
        ("photo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        ("photo.js", b"\n;alert(1)//"),
    ],
    ids=["jpeg+html", "jpeg+zip", "jpeg+svg", "jpeg+script"],
)
def test_a_polyglot_is_stored_and_served_only_as_an_image(
    world: World, manager_client, name: str, tail: bytes
) -> None:
    """A valid JPEG with something else appended is an image to us: stored under a name of
    our choosing with the image's own extension, served as image/jpeg with nosniff, so no
    browser runs it as a page or script."""
    response = upload(manager_client, world.a.project.pk, name, images.jpeg(seed=77) + tail)
    body = response.json()
    assert response.status_code == (201 if body["created"] else 400)
    if body["created"] == 0:  # refused outright is as good
        assert body["rejected"][0]["code"]
        return
    image = Image.objects.get(pk=body["files"][0]["id"])
    assert image.file.name.endswith(".jpg")
    assert image.file.name.startswith(f"projects/{world.a.project.pk}/images/")
    image.status = "ready"
    image.save(update_fields=["status"])
    served = manager_client.get(f"/api/v1/images/{image.pk}/file/")
    assert served.status_code == 200
    assert served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert b"".join(served.streaming_content).startswith(b"\xff\xd8")


def test_an_html_file_named_jpg_is_not_an_image(world: World, manager_client, unchanged) -> None:
    response = upload(
        manager_client, world.a.project.pk, "x.jpg", b"<html><script>alert(1)</script>"
    )
    assert_all_rejected(response, {"x.jpg": "not_an_image"})


# --- A large non-image, streamed --------------------------------------------------------------


class ChainedStream:
    """A request body read from several parts (bytes and open files) in turn, so a large
    upload is never held in memory."""

    def __init__(self, *parts: bytes | io.BufferedReader) -> None:
        self.parts = [io.BytesIO(p) if isinstance(p, bytes) else p for p in parts]

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while self.parts and (size < 0 or len(out) < size):
            chunk = self.parts[0].read(-1 if size < 0 else size - len(out))
            if not chunk:
                self.parts.pop(0)
            out += chunk
        return bytes(out)

    def readline(self, size: int = -1) -> bytes:  # the multipart parser reads blocks only
        return self.read(size)


def test_a_100_mb_non_image_is_rejected_and_not_kept(
    world: World, manager_client, tmp_path: Path, unchanged
) -> None:
    size = 100 * 1024 * 1024
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        fh.write(b"%PDF-1.7\n")
        fh.truncate(size)  # sparse: the disk holds almost nothing
    boundary = "----crowd-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    with big.open("rb") as fh:
        response = manager_client.generic(
            "POST", f"/api/v1/projects/{world.a.project.pk}/images/", b"",
            content_type=f"multipart/form-data; boundary={boundary}",
            **{"wsgi.input": ChainedStream(head, fh, tail),
               "CONTENT_LENGTH": str(len(head) + size + len(tail))},
        )  # fmt: skip
    assert_all_rejected(response, {"big.jpg": "not_an_image"})


# --- JSON bodies ------------------------------------------------------------------------------


def deep_list(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_object(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def answered(world: World) -> tuple[int, int]:
    return (
        Assignment.objects.filter(
            status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED]
        ).count(),
        GoldAnswer.objects.count(),
    )


@pytest.mark.parametrize(
    ("shape", "levels"),
    [("list", 100_000), ("list", 2_000), ("list", 900), ("object", 100_000), ("object", 900),
     ("inside annotations", 100_000), ("inside annotations", 2_000)],
)  # fmt: skip
def test_deeply_nested_json_is_a_400(world: World, levels: int, shape: str) -> None:
    if shape == "list":
        body = deep_list(levels)
    elif shape == "object":
        body = deep_object(levels)
    else:
        body = (
            b'{"annotations": [{"label": "car", "bbox": [1, 1, 5, 5], "extra": '
            + deep_list(levels)
            + b"}]}"
        )
    before = answered(world)
    worker, manager = as_user(world.a.worker), as_user(world.a.owner)
    targets = [
        (worker, f"/api/v1/assignments/{world.a.lease.pk}/submit/"),
        (manager, f"/api/v1/projects/{world.a.project.pk}/gold/"),
        (manager, "/api/v1/projects/"),
        (manager, f"/api/v1/projects/{world.a.project.pk}/reviews/"),
        (APIClient(), "/api/v1/auth/register/"),
    ]
    for client, url in targets:
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.status_code, response.content[:200])
        assert set(response.json()) == {"detail", "code", "errors"}
    assert answered(world) == before
    assert Assignment.objects.get(pk=world.a.lease.pk).status == AssignmentStatus.LEASED


def test_nesting_the_parser_takes_is_dropped_with_the_unknown_key(world: World) -> None:
    """Nested 800 deep (within what the parser decodes: the interpreter's recursion limit,
    less the frames of the middleware and view that call it), an unknown key is simply not
    kept."""
    extra = (
        b'{"annotations": [{"label": "car", "bbox": [1, 1, 5, 5], "extra": '
        + deep_list(800)
        + b"}]}"
    )
    response = as_user(world.a.worker).post(
        f"/api/v1/assignments/{world.a.lease.pk}/submit/", extra, content_type="application/json"
    )
    assert response.status_code == 200
    stored = Assignment.objects.get(pk=world.a.lease.pk).answer
    assert stored == [{"label": "car", "bbox": [1.0, 1.0, 5.0, 5.0]}]


def boxes(n: int) -> bytes:
    item = b'{"label":"car","bbox":[1,1,5,5]}'
    return b'{"image": IMAGE, "annotations": [' + b",".join([item] * n) + b"]}"


def test_a_million_boxes_is_a_413_before_parsing(world: World) -> None:
    body = boxes(1_000_000)
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    before = answered(world)
    worker, manager = as_user(world.a.worker), as_user(world.a.owner)
    submit = worker.post(
        f"/api/v1/assignments/{world.a.lease.pk}/submit/", body, content_type="application/json"
    )
    gold = manager.post(f"/api/v1/projects/{world.a.project.pk}/gold/",
                        body.replace(b"IMAGE", str(world.a.spare_image.pk).encode()), content_type="application/json")  # fmt: skip
    for response in (submit, gold):
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
    assert answered(world) == before


def test_more_boxes_than_an_answer_holds_is_a_400(world: World) -> None:
    from tasks.annotations import MAX_ITEMS

    body = boxes(MAX_ITEMS + 1)
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    before = answered(world)
    tasks_before = list(Task.objects.order_by("pk").values_list("pk", "answers", "is_gold"))
    worker, manager = as_user(world.a.worker), as_user(world.a.owner)
    submit = worker.post(f"/api/v1/assignments/{world.a.lease.pk}/submit/",
                         body.replace(b'"image": IMAGE, ', b""), content_type="application/json")  # fmt: skip
    gold = manager.post(f"/api/v1/projects/{world.a.project.pk}/gold/",
                        body.replace(b"IMAGE", str(world.a.spare_image.pk).encode()), content_type="application/json")  # fmt: skip
    for response in (submit, gold):
        assert response.status_code == 400, response.content[:200]
        assert "annotations" in response.json()["errors"]
    assert answered(world) == before
    assert list(Task.objects.order_by("pk").values_list("pk", "answers", "is_gold")) == tasks_before


def test_upload_limits_are_configured() -> None:
    """The settings every guard above depends on are set, and small enough to matter."""
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 16 * 1024 * 1024
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE <= 16 * 1024 * 1024  # larger files go to disk
    assert settings.MAX_IMAGE_PIXELS <= 200_000_000
    assert settings.MAX_UPLOAD_BYTES >= settings.MAX_IMAGE_BYTES
    assert settings.MAX_ARCHIVE_FILES > 0
