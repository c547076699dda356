"""Imports from the file bucket: every object under a prefix, ingested like an upload.

A manager who already has the images in the bucket (copied there with any S3 tool) asks for
the prefix; the ``images_import`` job lists the objects under it and runs each through the
upload's path (:mod:`tasks.ingest`: same checks, hashing, de-duplication, processing and
tiling), recording one result per object. Objects stay where they are: the image's file is a
copy under the project's own folder, as an upload's is.

A re-run (or a redelivered job) skips every key an image of the project was already read
from without reading it again; the same bytes under another key are found as duplicates.
"""

from __future__ import annotations

import logging
import tempfile
import time
import unicodedata
from contextlib import closing
from dataclasses import asdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from crowd import storage
from crowd.errors import Conflict, InvalidInput
from crowd.jobs import send_on_commit
from crowd.models import User
from tasks import archives, ingest
from tasks.models import Image, ImageImport, ImportStatus, Project, ProjectState

logger = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024  # S3's limit on a key, and so on a prefix
# Folders the files of projects and exports live under: importing them would copy the
# store into itself.
OWN_FOLDERS = ("projects/", "exports/")
# Progress is written every this many objects or seconds, whichever comes first.
FLUSH_EVERY = 25
FLUSH_SECONDS = 2.0


def last_import(project: Project) -> dict[str, Any] | None:
    """The project's latest import, without its per-object results (for ``/progress/``)."""
    job = project.imports.defer("files").order_by("-pk").first()
    return image_import_summary(job) if job else None


def _prefix_clean(raw: Any) -> str:
    """The prefix as given, or InvalidInput saying what is wrong with it."""

    def bad(message: str) -> InvalidInput:
        return InvalidInput(errors={"prefix": [message]}, code="bad_prefix")

    if not isinstance(raw, str):
        raise bad('Give the prefix of the bucket to import from, as text ("incoming/").')
    if not raw.strip():
        raise bad(
            'The prefix is empty; name the folder of the bucket to import from ("incoming/").'
        )
    if len(raw.encode()) > MAX_KEY_BYTES:
        raise bad(f"The prefix is longer than the {MAX_KEY_BYTES} bytes a bucket key may have.")
    if any(unicodedata.category(c).startswith("C") for c in raw):
        raise bad("The prefix contains control characters.")
    if raw.startswith("/") or "\\" in raw:
        raise bad('Bucket keys are relative and use "/": drop the leading "/" or the "\\".')
    if any(part in (".", "..") for part in raw.split("/")):
        raise bad('A prefix has no "." or ".." parts.')
    if any(raw.startswith(folder) or folder.startswith(raw) for folder in OWN_FOLDERS):
        raise bad(
            f"The prefix reaches the folders this server keeps its own files in "
            f"({', '.join(OWN_FOLDERS)}); put the images to import under another prefix."
        )
    return raw


def images_import_create(*, project: Project, user: User, prefix: Any) -> ImageImport:
    """Queue the import of every object under ``prefix`` of the bucket into ``project``."""
    if storage.bucket() is None:
        raise Conflict(
            "This server keeps its files on its local disk, so there is no bucket to import "
            "from. Set AWS_STORAGE_BUCKET_NAME (and the endpoint and keys) to import from one, "
            "or upload the images.",
            code="no_bucket",
        )
    clean = _prefix_clean(prefix)
    if project.state == ProjectState.COMPLETED:
        raise Conflict(
            "The project is completed; it takes no more images.", code="project_completed"
        )
    with transaction.atomic():
        job = ImageImport.objects.create(project=project, prefix=clean, requested_by=user)
        from tasks.jobs import images_import

        send_on_commit(images_import, job.pk)
    return job


def image_import_summary(job: ImageImport) -> dict[str, Any]:
    return {
        "id": job.pk,
        "project": job.project_id,
        "prefix": job.prefix,
        "status": job.status,
        "error": job.error or None,
        "files_done": job.files_done,
        "created": job.created,
        "duplicates": job.duplicates,
        "rejected": job.rejected,
        "skipped": job.skipped,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


class _Progress:
    """The job's results, written to its row in batches."""

    def __init__(self, job: ImageImport) -> None:
        self.job = job
        self.files: list[dict[str, Any]] = list(job.files)
        self.seen = {f["key"] for f in self.files if "key" in f}
        self.pending = 0
        self.flushed_at = time.monotonic()

    def add(self, key: str, result: ingest.FileResult) -> None:
        entry = {k: v for k, v in asdict(result).items() if v is not None}
        self.files.append({"key": key, **entry})
        self.seen.add(key)
        self.pending += 1
        if self.pending >= FLUSH_EVERY or time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self, **fields: Any) -> None:
        def count(result: str) -> int:
            return sum(f.get("result") == result for f in self.files)

        ImageImport.objects.filter(pk=self.job.pk).update(
            files=self.files, files_done=len(self.files), created=count("created"),
            duplicates=count("duplicate"), rejected=count("rejected"), skipped=count("skipped"),
            **fields,
        )  # fmt: skip
        self.pending, self.flushed_at = 0, time.monotonic()


def _ingest_object(
    project: Project, user: User | None, key: str, size: int, bucket: Any
) -> list[ingest.FileResult]:
    """One object through the upload's path; a zip archive entry by entry."""
    if size > settings.MAX_UPLOAD_BYTES or (
        size > settings.MAX_IMAGE_BYTES and not key.lower().endswith(".zip")
    ):
        limit = settings.MAX_IMAGE_BYTES
        return [ingest.FileResult(ingest._display_name(key), "rejected", code="file_too_large",
                                  error=f"Larger than the {limit:,} bytes allowed.")]  # fmt: skip
    body = bucket.connection.meta.client.get_object(Bucket=bucket.bucket_name, Key=key)["Body"]
    with closing(body):
        if not key.lower().endswith(".zip"):
            return [ingest._ingest_one(project, user, key, body, source_key=key)]
        # An archive is read from a local copy (zip's index is at its end), streamed there.
        with tempfile.TemporaryFile() as local:
            while chunk := body.read(ingest.CHUNK):
                local.write(chunk)
            local.seek(0)
            if not archives.is_zip(local):
                return [ingest._ingest_one(project, user, key, local, source_key=key)]
            return ingest._ingest_zip(project, user, key, local)


def images_import_run(*, import_id: int) -> ImageImport | None:
    """Run the import: safe to run twice (keys with a result or an image are skipped)."""
    job = ImageImport.objects.select_related("project", "requested_by").filter(pk=import_id)
    found = job.first()
    if found is None or found.status in (ImportStatus.DONE, ImportStatus.FAILED):
        return found
    job_row = found
    project = job_row.project
    ImageImport.objects.filter(pk=job_row.pk).update(
        status=ImportStatus.RUNNING, started_at=job_row.started_at or timezone.now()
    )
    progress = _Progress(job_row)
    bucket = storage.bucket()
    if bucket is None:
        progress.flush(
            status=ImportStatus.FAILED, finished_at=timezone.now(),
            error="The files are no longer kept in a bucket: there is nothing to import from.",
        )  # fmt: skip
        job_row.refresh_from_db()
        return job_row
    try:
        pages = bucket.connection.meta.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket.bucket_name, Prefix=job_row.prefix
        )
        for page in pages:
            objects = [o for o in page.get("Contents", []) if not o["Key"].endswith("/")]
            keys = [o["Key"] for o in objects]
            known = set(
                Image.objects.filter(project=project, source_key__in=keys).values_list(
                    "source_key", flat=True
                )
            )
            for item in objects:
                key = item["Key"]
                if key in progress.seen:
                    continue  # a result from an earlier delivery of this job
                if key in known:
                    progress.add(key, ingest.FileResult(ingest._display_name(key), "skipped"))
                    continue
                for result in _ingest_object(
                    project, job_row.requested_by, key, int(item["Size"]), bucket
                ):
                    progress.add(key, result)
    except (BotoCoreError, ClientError) as exc:
        logger.warning("image import %s failed: %s", job_row.pk, exc)
        progress.flush(
            status=ImportStatus.FAILED,
            finished_at=timezone.now(),
            error=f"The bucket could not be read or written ({str(exc)[:160]}); run the "
            "import again to go on from here.",
        )
    else:
        progress.flush(status=ImportStatus.DONE, finished_at=timezone.now())
    job_row.refresh_from_db()
    return job_row
