"""Ingestion: uploads become stored, checked, de-duplicated images, then tasks.

The upload request streams each file (or each zip entry) to a temporary file while hashing
it, runs the cheap checks of :func:`tasks.imaging.inspect`, and stores it. The heavy part,
a full decode with thumbnail, perceptual hash and splitting into tasks, runs in the
``image_process`` job; once a batch is processed, ``near_duplicates_scan`` reports images that
look like earlier ones. One bad file never aborts the batch: each file is its own
transaction and gets its own line in the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from crowd import storage
from crowd.errors import Conflict, StorageUnavailable
from crowd.jobs import send_on_commit
from crowd.models import User
from tasks import archives, events, imaging, planner_stats
from tasks.models import Image, ImageStatus, Project, ProjectState, Task
from tasks.services import stored_files_delete_on_commit
from tasks.tiling import tile_regions

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024


@dataclass
class FileResult:
    name: str
    result: str  # created | duplicate | rejected (| skipped: an import's key already in)
    id: int | None = None
    duplicate_of: int | None = None
    code: str | None = None
    error: str | None = None


@dataclass
class UploadReport:
    files: list[FileResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def count(result: str) -> int:
            return sum(f.result == result for f in self.files)

        return {
            "created": count("created"),
            "duplicates": count("duplicate"),
            "rejected": [
                {"name": f.name, "error": f.error, "code": f.code}
                for f in self.files
                if f.result == "rejected"
            ],
            "files": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.files],
        }


def _display_name(raw: str) -> str:
    cleaned = "".join(c for c in unicodedata.normalize("NFC", raw) if c.isprintable())
    return cleaned.replace("\\", "/").strip()[-255:] or "unnamed"


class _Staged(File):
    """An upload on local disk with its hash. ``temporary_file_path`` lets a filesystem
    storage move it into place instead of copying it again."""

    def __init__(self, path: str, sha256: str, size: int, *, owned: bool) -> None:
        super().__init__(open(path, "rb"))  # noqa: SIM115 (a File owns and closes it)
        self.path, self.sha256, self.size, self.owned = path, sha256, size, owned

    def temporary_file_path(self) -> str:
        return self.path

    def discard(self) -> None:
        self.close()
        if self.owned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # gone already if the storage moved it


def _stage(source: IO[bytes], limit: int) -> _Staged | None:
    """The upload on local disk, hashed; None past ``limit`` bytes.

    Django has already streamed a large upload to a temporary file: that file is hashed
    where it lies. Anything else (small uploads, zip entries) is copied to a temporary file
    in chunks while hashing, never held whole in memory.
    """
    temporary = getattr(source, "temporary_file_path", None)
    if callable(temporary):
        path = str(temporary())
        size = os.path.getsize(path)
        if size > limit:
            return None
        with open(path, "rb") as fh:
            sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        return _Staged(path, sha256, size, owned=False)
    descriptor, path = tempfile.mkstemp(prefix="crowd-ingest-")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(descriptor, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    break
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(path)  # the source failed mid-read (a bucket's stream cut off): no leftover
        raise
    if size > limit:
        os.unlink(path)
        return None
    return _Staged(path, digest.hexdigest(), size, owned=True)


def _storage_name(project: Project, sha256: str, fmt: str, suffix: str = "") -> str:
    return f"projects/{project.pk}/images/{sha256[:2]}/{sha256}{suffix}{imaging.FORMATS[fmt]}"


def _ingest_one(
    project: Project, user: User | None, name: str, source: IO[bytes], *, source_key: str = ""
) -> FileResult:
    name = _display_name(name)
    fh = _stage(source, settings.MAX_IMAGE_BYTES)
    if fh is None:
        limit = settings.MAX_IMAGE_BYTES
        return FileResult(
            name,
            "rejected",
            code="file_too_large",
            error=f"Larger than the {limit:,} bytes allowed.",
        )
    sha256, size = fh.sha256, fh.size
    try:
        if size == 0:
            return FileResult(name, "rejected", code="empty_file", error="The file is empty.")
        if archives.looks_like_archive(name, fh.read(8)):
            return FileResult(name, "rejected", code="nested_archive",
                              error="Archives inside archives are not accepted.")  # fmt: skip
        try:
            header = imaging.inspect(fh.path, max_pixels=settings.MAX_IMAGE_PIXELS)
        except imaging.ImageRejected as exc:
            return FileResult(name, "rejected", code=exc.code, error=str(exc))
        existing = Image.objects.filter(project=project, sha256=sha256).values_list("pk", flat=True)
        if existing:
            return FileResult(name, "duplicate", duplicate_of=existing[0])
        fh.seek(0)
        stored = default_storage.save(_storage_name(project, sha256, header.format), fh)
    finally:
        fh.discard()  # a no-op once the storage has moved the file into place
    try:
        with transaction.atomic():
            image = Image.objects.create(
                project=project, name=name, file=stored, sha256=sha256, format=header.format,
                width=header.width, height=header.height, orientation=header.orientation,
                size_bytes=size, uploaded_by=user, source_key=source_key,
            )  # fmt: skip
            from tasks.jobs import image_process

            send_on_commit(image_process, image.pk)
    except IntegrityError:
        # The same bytes arrived in a concurrent upload and won the race.
        default_storage.delete(stored)
        winner = Image.objects.filter(project=project, sha256=sha256).values_list("pk", flat=True)
        return FileResult(name, "duplicate", duplicate_of=winner[0] if winner else None)
    except BaseException:
        default_storage.delete(stored)  # nothing half-written: no row, no orphan file
        raise
    return FileResult(name, "created", id=image.pk)


def _ingest_zip(project: Project, user: User | None, name: str, fh: IO[bytes]) -> list[FileResult]:
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        return [FileResult(_display_name(name), "rejected", code="bad_archive",
                           error=f"Not a readable zip archive ({exc}).")]  # fmt: skip
    results = []
    with archive:
        for entry in archives.entries(
            archive,
            max_entries=settings.MAX_ARCHIVE_FILES,
            max_entry_bytes=settings.MAX_IMAGE_BYTES,
        ):
            label = f"{_display_name(name)}/{_display_name(entry.name)}"
            if entry.error:
                results.append(FileResult(label, "rejected", code=entry.code, error=entry.error))
                continue
            assert entry.info is not None
            try:
                with archive.open(entry.info) as member:
                    results.append(_ingest_one(project, user, label, member))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                results.append(
                    FileResult(label, "rejected", code="bad_archive_entry",
                               error=f"The archive entry cannot be read ({exc}).")
                )  # fmt: skip
    return results


def images_upload(*, project: Project, user: User | None, files: Iterable[Any]) -> UploadReport:
    """Store each uploaded file (zip archives entry by entry); queue each new image's job.

    Not one transaction on purpose: each file commits on its own, so one bad file never
    aborts the batch, and a retried upload finds the good ones again as duplicates.
    """
    if project.state == ProjectState.COMPLETED:
        raise Conflict(
            "The project is completed; it takes no more images.", code="project_completed"
        )
    report = UploadReport()
    files = list(files)
    for index, upload in enumerate(files):
        upload.seek(0)
        try:
            if archives.is_zip(upload):
                report.files.extend(
                    _ingest_zip(project, user, upload.name or "archive.zip", upload)
                )
            else:
                report.files.append(_ingest_one(project, user, upload.name or "unnamed", upload))
        except storage.STORAGE_ERRORS as exc:
            # The file that failed has no row and no object (see _ingest_one); those before
            # it are stored whole, and come back as duplicates when the upload is sent again.
            stored = sum(f.result == "created" for f in report.files)
            not_stored = [_display_name(f.name or "unnamed") for f in files[index:]]
            raise StorageUnavailable(
                f"The file store could not be reached while storing {not_stored[0]!r}: it and "
                f"the {len(not_stored) - 1} files after it were not stored"
                + (f" ({stored} before it were)" if stored else "")
                + ". Send the upload again shortly: files already stored come back as "
                "duplicates.",
                extra={**report.as_json(), "not_stored": not_stored},
            ) from exc
    return report


def _replace_file(image: Image, processed: imaging.Processed) -> None:
    assert processed.replacement is not None
    assert processed.replacement_format is not None
    old = image.file.name
    name = _storage_name(image.project, image.sha256, processed.replacement_format, "-upright")
    image.file.name = default_storage.save(name, ContentFile(processed.replacement))
    image.format = processed.replacement_format
    if old != image.file.name:
        default_storage.delete(old)


def near_duplicates_scan(*, project_id: int) -> int:
    """Compare the perceptual hashes of the project's newly processed images with all of its
    images; a later image within ``NEAR_DUPLICATE_BITS`` of an earlier one is reported as its
    near-duplicate. Returns how many images were checked. Safe to run twice.

    One pass per batch rather than per image: loading the project's hashes once per batch
    keeps a large project's ingestion linear instead of quadratic.
    """
    ready = Image.objects.filter(project_id=project_id, status=ImageStatus.READY).exclude(
        phash=None
    )
    unchecked: list[tuple[int, int]] = list(
        ready.filter(near_duplicate_checked=False).order_by("pk").values_list("pk", "phash")  # type: ignore[arg-type]
    )
    if not unchecked:
        return 0
    known = np.array(list(ready.values_list("pk", "phash")), dtype=np.int64).reshape(-1, 2)
    clean: list[int] = []
    for pk, phash in unchecked:
        earlier = known[known[:, 0] < pk]
        distances = imaging.hamming(phash, earlier[:, 1]) if len(earlier) else np.array([])
        best = int(np.argmin(distances)) if len(distances) else -1
        if best >= 0 and distances[best] <= settings.NEAR_DUPLICATE_BITS:
            Image.objects.filter(pk=pk).update(
                near_duplicate_of=int(earlier[best, 0]),
                near_duplicate_distance=int(distances[best]),
                near_duplicate_checked=True,
            )
        else:
            clean.append(pk)
    Image.objects.filter(pk__in=clean).update(near_duplicate_checked=True)
    return len(unchecked)


def _after_processing(project_id: int) -> None:
    # The batch is done when nothing is pending: then look for near-duplicates, once.
    if not Image.objects.filter(project_id=project_id, status=ImageStatus.PENDING).exists():
        from tasks.jobs import near_duplicates_scan as scan

        send_on_commit(scan, project_id)


def image_process(*, image_id: int) -> Image | None:
    """Decode, thumbnail, hash and split into tasks. Safe to run twice: only the run that
    moves the image out of ``pending`` creates its tasks."""
    image = Image.objects.select_related("project").filter(pk=image_id).first()
    if image is None or image.status != ImageStatus.PENDING:
        return image
    project = image.project
    try:
        with default_storage.open(image.file.name, "rb") as fh:
            processed = imaging.process(
                fh,
                orientation=image.orientation,
                max_pixels=settings.MAX_IMAGE_PIXELS,
            )
    except imaging.ImageRejected as exc:
        with transaction.atomic():
            Image.objects.filter(pk=image.pk, status=ImageStatus.PENDING).update(
                status=ImageStatus.FAILED, error=str(exc)[:300], processed_at=timezone.now()
            )
            _after_processing(project.pk)
        image.refresh_from_db()
        return image

    if processed.replacement is not None:
        _replace_file(image, processed)
        image.width, image.height = processed.width, processed.height
    thumb_name = f"projects/{project.pk}/thumbs/{image.pk}.jpg"
    if default_storage.exists(thumb_name):
        default_storage.delete(thumb_name)
    image.thumbnail.name = default_storage.save(thumb_name, ContentFile(processed.thumbnail))
    image.phash = processed.phash

    with transaction.atomic():
        claimed = Image.objects.filter(pk=image.pk, status=ImageStatus.PENDING).update(
            status=ImageStatus.READY,
            file=image.file.name,
            format=image.format,
            width=image.width,
            height=image.height,
            thumbnail=image.thumbnail.name,
            phash=image.phash,
            processed_at=timezone.now(),
        )
        if claimed:
            tasks_create_for_image(project=project, image=image)
            image.status = ImageStatus.READY
            _after_processing(project.pk)
            events.project_changed(project.pk)
            return image
    current = Image.objects.filter(pk=image.pk).first()
    if current is None:
        # Deleted while this job made its thumbnail, which the deletion did not know of (named
        # by the image's id, it can be no other image's).
        stored_files_delete_on_commit(names=[image.thumbnail.name])
    return current


def tasks_create_for_image(*, project: Project, image: Image) -> list[Task]:
    """One task per region: the whole image, or its tiles. Must run inside the transaction
    that marks the image ready."""
    if project.tiles:
        regions = tile_regions(image.width, image.height, project.tile_size, project.tile_overlap)
    else:
        regions = [(0, 0, image.width, image.height)]
    tasks = Task.objects.bulk_create(
        Task(project=project, image=image, x=x, y=y, width=w, height=h,
             required_overlap=project.min_overlap)
        for x, y, w, h in regions
    )  # fmt: skip
    planner_stats.routing_tables_analyze_soon()
    return tasks
