from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
from django.core.cache import cache
from dramatiq.brokers.stub import StubBroker
from rest_framework.test import APIClient

from crowd.jobs import wait_for_jobs
from crowd.models import User
from tests.factories import ClientFactory, ManagerFactory, WorkerFactory, token_for
from tests.plugins.services import Server, services_required, start


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Throttle counters live in the cache; one test's log-ins must not throttle the next's.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _jobs_finish_within_their_test() -> Iterator[None]:
    """Jobs a test caused run (and fail) inside that test, never in the next one."""
    yield
    broker = dramatiq.get_broker()
    if isinstance(broker, StubBroker):
        try:
            wait_for_jobs()
        finally:
            broker.flush_all()


@pytest.fixture(scope="session")
def redis_server() -> Server:
    """A private Redis server for this test session (fails, not skips, with REQUIRE_SERVICES=1)."""
    try:
        return start("redis")
    except (FileNotFoundError, RuntimeError) as exc:
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but Redis cannot start: {exc}")
        pytest.skip(f"Redis not available: {exc}")


@pytest.fixture(scope="session")
def seaweedfs_server() -> Server:
    """A private SeaweedFS (S3) server for this test session (fails, not skips, with
    REQUIRE_SERVICES=1)."""
    try:
        return start("seaweedfs")
    except (FileNotFoundError, RuntimeError) as exc:
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but SeaweedFS cannot start: {exc}")
        pytest.skip(f"SeaweedFS not available: {exc}")


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
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def api_as() -> Callable[[User], APIClient]:
    """An API client authenticated with the user's token, as a script would be."""

    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make


@pytest.fixture
def worker(db: None) -> User:
    return WorkerFactory.create()


@pytest.fixture
def manager(db: None) -> User:
    return ManagerFactory.create()


@pytest.fixture
def client_user(db: None) -> User:
    return ClientFactory.create()
