"""Where the files live: the local disk (embedded default) or an S3-compatible bucket.

Every image, thumbnail and export is read and written through Django's storage API
(``default_storage``), never through a path, so the same code runs on either. With
``AWS_STORAGE_BUCKET_NAME`` set the default storage is :class:`BucketStorage`: uploads stream
to the bucket (multipart past the transfer threshold), reads spill to a temporary file past
``AWS_S3_MAX_MEMORY_SIZE``, and the web processes hand out short-lived presigned URLs instead
of streaming the bytes themselves (:func:`presigned_url`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import Storage, storages
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage

from crowd.errors import StorageUnavailable

# A read larger than this spills from memory to a temporary file (django-storages' default,
# 0, would keep every object read whole in memory).
READ_SPOOL_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT = 5.0


class BucketStorage(S3Storage):
    """django-storages' S3 backend with the choices this project relies on.

    - Names are never overwritten (as on the local disk): two concurrent uploads of the same
      bytes store two objects, and the loser of the database race deletes its own, never the
      winner's.
    - Signature v4 (the only one S3-compatible servers such as SeaweedFS and MinIO accept for
      presigned URLs) and path-style addressing when an endpoint is named (a bucket name is
      then no DNS name).
    - No ACL: objects stay private; they are read through presigned URLs only.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Fail fast when the store is unreachable (botocore waits 60 s to connect by default,
        # on every retry), so a request answers 503 instead of hanging.
        configured: Config = self.client_config  # type: ignore[has-type]
        self.client_config = configured.merge(
            Config(connect_timeout=CONNECT_TIMEOUT, retries={"max_attempts": 3, "mode": "standard"})
        )

    def get_default_settings(self) -> dict[str, Any]:
        defaults: dict[str, Any] = super().get_default_settings()
        defaults["file_overwrite"] = False
        defaults["default_acl"] = None
        defaults["querystring_auth"] = True
        defaults["querystring_expire"] = settings.STORAGE_URL_SECONDS
        defaults["signature_version"] = defaults["signature_version"] or "s3v4"
        if defaults["endpoint_url"] and not defaults["addressing_style"]:
            defaults["addressing_style"] = "path"
        defaults["max_memory_size"] = defaults["max_memory_size"] or READ_SPOOL_BYTES
        return defaults


def bucket() -> S3Storage | None:
    """The bucket the files live in; None on the local disk."""
    storage: Storage = storages["default"]
    return storage if isinstance(storage, S3Storage) else None


def presigned_url(
    name: str, *, content_type: str | None = None, download_name: str | None = None
) -> str | None:
    """A short-lived URL that fetches the stored file straight from the bucket, or None when
    the files are on the local disk (the caller then streams them). Call it only after the
    permission checks: whoever holds the URL can read the file until it expires.

    ``download_name`` makes the bucket answer as an attachment of that name.
    """
    storage = bucket()
    if storage is None:
        return None
    parameters: dict[str, str] = {}
    if content_type:
        parameters["ResponseContentType"] = content_type
    if download_name:
        disposition = content_disposition_header(True, download_name)
        assert disposition is not None
        parameters["ResponseContentDisposition"] = disposition
    with unavailable_as_503():
        url: str = storage.url(name, parameters=parameters, expire=settings.STORAGE_URL_SECONDS)
    return url


_origins: weakref.WeakKeyDictionary[S3Storage, str] = weakref.WeakKeyDictionary()


def origin() -> str | None:
    """The origin (scheme://host[:port]) presigned URLs point at, for the pages'
    Content-Security-Policy; None on the local disk. Taken from a URL signed for a made-up
    name (signing is local, no request), so it is right for AWS's virtual-hosted buckets and
    for an endpoint alike."""
    store = bucket()
    if store is None:
        return None
    if store not in _origins:
        parts = urlsplit(store.url("origin-probe"))
        _origins[store] = f"{parts.scheme}://{parts.netloc}"
    return _origins[store]


# The exceptions that mean the store (not the request) failed.
STORAGE_ERRORS = (BotoCoreError, ClientError)


@contextmanager
def unavailable_as_503() -> Iterator[None]:
    """Turns a failure of the bucket into :class:`StorageUnavailable` (503)."""
    try:
        yield
    except STORAGE_ERRORS as exc:
        raise StorageUnavailable() from exc
