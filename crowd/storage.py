"""Where the files live: the local disk (embedded default) or an S3-compatible bucket.

Every image, thumbnail and export is read and written through Django's storage API
(``default_storage``), never through a path, so the same code runs on either. With
``AWS_STORAGE_BUCKET_NAME`` set the default storage is :class:`BucketStorage`: uploads stream
to the bucket (multipart past the transfer threshold), reads spill to a temporary file past
``AWS_S3_MAX_MEMORY_SIZE``, and the web processes hand out short-lived presigned URLs instead
of streaming the bytes themselves (:func:`presigned_url`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
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
# The health check's bucket call: short, and not retried, so /healthz answers in seconds
# with the store down.
HEALTH_TIMEOUT = 2.0
# S3 deletes at most this many keys in one request.
DELETE_BATCH = 1000

logger = logging.getLogger(__name__)


class BucketStorage(S3Storage):
    """django-storages' S3 backend with the choices this project relies on.

    - Names are never overwritten (as on the local disk): two concurrent uploads of the same
      bytes store two objects, and the loser of the database race deletes its own, never the
      winner's.
    - Signature v4 (the only one S3-compatible servers such as SeaweedFS and MinIO accept for
      presigned URLs) and path-style addressing when an endpoint is named (a bucket name is
      then no DNS name).
    - No ACL: objects stay private; they are read through presigned URLs only.
    - Presigned URLs are signed for ``AWS_S3_PUBLIC_ENDPOINT_URL`` when it is set: the
      address clients reach the store at, where the web and job processes reach it at
      ``AWS_S3_ENDPOINT_URL`` (an address inside their network). Signature v4 signs the host,
      so a URL signed for one host name is refused on another: rewriting the host of a
      signed URL would not do.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Fail fast when the store is unreachable (botocore waits 60 s to connect by default,
        # on every retry), so a request answers 503 instead of hanging.
        configured: Config = self.client_config  # type: ignore[has-type]
        self.client_config = configured.merge(
            Config(connect_timeout=CONNECT_TIMEOUT, retries={"max_attempts": 3, "mode": "standard"})
        )
        self._clients = threading.local()

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
        defaults["public_endpoint_url"] = (
            getattr(settings, "AWS_S3_PUBLIC_ENDPOINT_URL", None) or None
        )
        return defaults

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_clients", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_clients"] = threading.local()
        super().__setstate__(state)

    def url(
        self,
        name: str,
        parameters: dict[str, Any] | None = None,
        expire: int | None = None,
        http_method: str | None = None,
    ) -> str:
        if not self.public_endpoint_url:
            url: str = super().url(name, parameters, expire, http_method)
            return url
        params = {
            **(parameters or {}),
            "Bucket": self.bucket_name,
            "Key": self._normalize_name(name),
        }
        signed: str = self._public_signer().generate_presigned_url(
            "get_object",
            Params=params,
            ExpiresIn=self.querystring_expire if expire is None else expire,
            HttpMethod=http_method,
        )
        return signed

    def _public_signer(self) -> Any:
        """A client for the public endpoint, used only to sign URLs (signing sends nothing)."""
        signer = getattr(self._clients, "signer", None)
        if signer is None:
            signer = self._create_session().client(
                "s3", region_name=self.region_name, use_ssl=self.use_ssl,
                endpoint_url=self.public_endpoint_url, config=self.client_config,
                verify=self.verify,
            )  # fmt: skip
            self._clients.signer = signer
        return signer

    def check(self) -> None:
        """One HEAD of the bucket with a short timeout and no retry: raises the store's error
        if it cannot be reached, or refuses these keys or this bucket."""
        client = getattr(self._clients, "health", None)
        if client is None:  # one per thread: creating a client costs more than the call
            config = self.client_config.merge(
                Config(
                    connect_timeout=HEALTH_TIMEOUT,
                    read_timeout=HEALTH_TIMEOUT,
                    retries={"max_attempts": 1, "mode": "standard"},
                )
            )
            client = self._create_session().client(
                "s3", region_name=self.region_name, use_ssl=self.use_ssl,
                endpoint_url=self.endpoint_url, config=config, verify=self.verify,
            )  # fmt: skip
            self._clients.health = client
        client.head_bucket(Bucket=self.bucket_name)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix``, a thousand per request;
        returns how many were deleted."""
        client = self.connection.meta.client
        deleted = 0
        batch: list[dict[str, str]] = []

        def flush() -> None:
            nonlocal deleted
            if batch:
                answer = client.delete_objects(
                    Bucket=self.bucket_name, Delete={"Objects": batch, "Quiet": True}
                )
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise RuntimeError(
                        f"the bucket refused to delete {len(answer['Errors'])} objects "
                        f"({first.get('Code')}: {first.get('Key')})"
                    )
                deleted += len(batch)
                batch.clear()

        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket_name, Prefix=self._normalize_name(prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                batch.append({"Key": item["Key"]})
                if len(batch) == DELETE_BATCH:
                    flush()
        flush()
        return deleted


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


def check() -> dict[str, Any] | None:
    """The store's part of ``/healthz``: None on the local disk; else whether one cheap call
    to the bucket (HEAD, short timeout) succeeded, how long it took, and the error's name."""
    store = bucket()
    if store is None or not isinstance(store, BucketStorage):
        return None
    started = time.perf_counter()
    try:
        store.check()
    except Exception as exc:  # any failure means unhealthy; the reason is reported, not raised
        code = ""
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
        return {"ok": False, "backend": "s3", "error": code or type(exc).__name__}
    return {"ok": True, "backend": "s3", "ms": round((time.perf_counter() - started) * 1000, 2)}


def files_delete(*, names: Iterable[str] = (), prefixes: Iterable[str] = ()) -> None:
    """Delete these stored files, and every file under these prefixes (of a bucket, or
    folders of ``MEDIA_ROOT``). Tries them all, then raises the first failure (a job retries
    the whole call: deleting what is gone already is no error)."""
    store: Storage = storages["default"]
    failures: list[Exception] = []
    for name in names:
        try:
            store.delete(name)
        except Exception as exc:
            failures.append(exc)
    for prefix in prefixes:
        try:
            _delete_prefix(store, prefix.rstrip("/") + "/")
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


def _delete_prefix(store: Storage, prefix: str) -> None:
    if isinstance(store, BucketStorage):
        store.delete_prefix(prefix)
        return
    # The local disk: the folder's files, then its folders, deepest first.
    folder = prefix.rstrip("/")
    try:
        directories, files = store.listdir(folder)
    except FileNotFoundError:
        return
    for name in files:
        store.delete(f"{folder}/{name}")
    for directory in directories:
        _delete_prefix(store, f"{folder}/{directory}/")
    path = getattr(store, "path", None)
    if callable(path):
        with contextlib.suppress(OSError):
            os.rmdir(path(folder))
