"""Proof that the suite talks to real servers: PostgreSQL in the PostgreSQL pass, Redis and
SeaweedFS (S3) always.

With REQUIRE_SERVICES=1 (CI) none can be skipped: a missing server fails the run.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import redis
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from crowd.layers import RedisBroadcastLayer
from tests.plugins.services import Server


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_postgres_pass_runs_on_a_real_postgresql_server() -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version(), current_database()")
        version, database = cursor.fetchone()
    assert version.startswith("PostgreSQL ")
    assert database.startswith("test_")  # pytest-django's database on the throwaway server
    assert os.environ["DATABASE_URL"].startswith("postgres://postgres@127.0.0.1:")


def test_redis_round_trip(redis_server: Server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.set("crowd-test", "value")
    assert client.get("crowd-test") == b"value"
    assert client.info("server")["redis_version"]


def test_seaweedfs_speaks_s3_and_refuses_strangers(seaweedfs_server: Server) -> None:
    import boto3
    from botocore.exceptions import ClientError

    def client(key: str, secret: str) -> Any:
        return boto3.client(
            "s3", endpoint_url=seaweedfs_server.url, aws_access_key_id=key,
            aws_secret_access_key=secret, region_name="us-east-1",
        )  # fmt: skip

    s3 = client(seaweedfs_server.extra["access_key"], seaweedfs_server.extra["secret_key"])
    s3.create_bucket(Bucket="crowd-infra")
    s3.put_object(Bucket="crowd-infra", Key="a/b.txt", Body=b"value")
    assert s3.get_object(Bucket="crowd-infra", Key="a/b.txt")["Body"].read() == b"value"
    assert seaweedfs_server.url.startswith("http://127.0.0.1:")
    with pytest.raises(ClientError):
        client("stranger", "wrong").list_objects_v2(Bucket="crowd-infra")


def test_channel_layer_on_redis_crosses_instances(redis_server: Server) -> None:
    """Two layer instances stand for two ASGI processes: a group send from one reaches the
    other's members through Redis pub/sub, a queued member by its channel and an attached
    one by a direct call (decoded once for all of them)."""

    async def scenario() -> tuple[dict, list[dict], list[dict]]:
        publisher = RedisBroadcastLayer(hosts=[redis_server.url], prefix="crowd-test")
        subscriber = RedisBroadcastLayer(hosts=[redis_server.url], prefix="crowd-test")
        queued = await subscriber.new_channel()
        attached = [await subscriber.new_channel() for _ in range(2)]
        sinks: list[list[dict]] = [[], []]
        for channel, sink in zip(attached, sinks, strict=True):
            subscriber.attach(channel, sink.append)
        for channel in [queued, *attached]:
            await subscriber.group_add("project.1", channel)
        await publisher.group_send("project.1", {"type": "live.event", "event": {"n": 1}})
        message = await asyncio.wait_for(subscriber.receive(queued), 5)
        for _ in range(50):  # the attached ones were called when the message came
            if all(sinks):
                break
            await asyncio.sleep(0.02)
        assert sinks[0][0] is sinks[1][0]
        await publisher.flush()
        await subscriber.flush()
        return message, *sinks

    message, first, second = asyncio.run(scenario())
    assert message == {"type": "live.event", "event": {"n": 1}}
    assert first == second == [message]


@pytest.mark.django_db
def test_healthz_on_the_redis_channel_layer(redis_server: Server) -> None:
    layers = {
        "default": {
            "BACKEND": "crowd.layers.RedisBroadcastLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        response = APIClient().get("/healthz")
    assert response.status_code == 200, response.content
    assert response.json()["channel_layer"]["backend"] == "RedisBroadcastLayer"


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_statement_run_again_and_again_is_planned_once_per_connection(manager: Any) -> None:
    """DATABASE_PREPARE_THRESHOLD (5): from its fifth run on, a statement is a prepared one
    of the connection's, planned once (the routing claim's cost was half planning)."""
    from tests.factories import project_with_tasks

    project = project_with_tasks(manager, tasks=3, overlap=1)

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ["%tasks_task%project_id%"],
            )
            return int(cursor.fetchone()[0])

    before = prepared()
    for _ in range(6):
        list(project.tasks.filter(state="open").values_list("pk", flat=True))
    assert prepared() == before + 1
