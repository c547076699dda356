"""Files in a bucket of the session's SeaweedFS server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.plugins.services import Server
from tests.storage.proxy import StoreProxy


@dataclass
class Bucket:
    """A fresh bucket of the test's own, which the files of the test live in; ``client``
    reads it directly (boto3), as another machine would."""

    name: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)


@pytest.fixture
def bucket(seaweedfs_server: Server, settings: Any) -> Bucket:
    """Switches the default storage to a new bucket on the test's SeaweedFS server, as
    ``AWS_STORAGE_BUCKET_NAME`` and friends do in production."""
    import boto3
    from botocore.config import Config

    name = f"crowd-{secrets.token_hex(6)}"
    keys = seaweedfs_server.extra
    client = boto3.client(
        "s3", endpoint_url=seaweedfs_server.url, aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"], region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )  # fmt: skip
    client.create_bucket(Bucket=name)
    settings.AWS_STORAGE_BUCKET_NAME = name
    settings.AWS_S3_ENDPOINT_URL = seaweedfs_server.url
    settings.AWS_ACCESS_KEY_ID = keys["access_key"]
    settings.AWS_SECRET_ACCESS_KEY = keys["secret_key"]
    settings.AWS_S3_REGION_NAME = "us-east-1"
    settings.AWS_S3_ADDRESSING_STYLE = None
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "crowd.storage.BucketStorage"}}
    return Bucket(name, client)


@pytest.fixture
def store_proxy(bucket: Bucket, seaweedfs_server: Server, settings: Any) -> Iterator[StoreProxy]:
    """The app reaches the bucket through a proxy the test can bring down; ``bucket.client``
    still reads the bucket directly, to see what the app left there."""
    proxy = StoreProxy("127.0.0.1", int(seaweedfs_server.extra["port"]))
    settings.AWS_S3_ENDPOINT_URL = proxy.url
    settings.STORAGES = {**settings.STORAGES}  # a new storage object on the proxy's address
    try:
        yield proxy
    finally:
        proxy.close()


def multipart_uploads(bucket: Bucket) -> list[str]:
    """Multipart uploads begun and never completed or aborted: invisible in a listing, but
    stored (and billed) until aborted."""
    answer = bucket.client.list_multipart_uploads(Bucket=bucket.name)
    return [upload["Key"] for upload in answer.get("Uploads", [])]
