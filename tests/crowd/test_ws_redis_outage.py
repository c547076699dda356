"""Live connections while the channel layer's Redis is down (the production layer on a real
Redis the test stops and starts): a new connection is closed with 1013 (try again later), not
failed, and a connection refused or closed meanwhile leaves nothing in the layer, nor a
subscription Redis would be given again once it is back. (Through a whole server, with the
log checked for unhandled exceptions: tests/e2e/test_live_redis_outage.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from crowd.asgi import application
from crowd.layers import RedisBroadcastLayer
from crowd.ws import CLOSE_TRY_AGAIN_LATER
from tests.factories import WorkerFactory, token_for
from tests.live import redis_channel_layers
from tests.plugins.services import RestartableRedis

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TRY_AGAIN_LATER = {"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}


@pytest.fixture
def redis_layer(restartable_redis: RestartableRedis, settings: Any) -> str:
    """The production channel layer on the test's Redis (the settings fixture puts back the
    test default afterwards); returns its prefix."""
    settings.CHANNEL_LAYERS, prefix = redis_channel_layers(restartable_redis.url)
    return prefix


@database_sync_to_async
def _worker_token() -> str:
    return token_for(WorkerFactory.create())


def _loop_layer() -> Any:
    """The layer's state for this event loop (channels_redis keeps one per loop)."""
    layer = get_channel_layer()
    assert isinstance(layer, RedisBroadcastLayer)
    return layer._get_layer()


def _state(loop_layer: Any) -> dict[str, Any]:
    """Everything the layer keeps per channel and group: queues, group members, direct sinks,
    and the subscriptions its connection holds (and would renew after a reconnect)."""
    shards = loop_layer._shards
    return {
        "channels": dict(loop_layer.channels),
        "groups": dict(loop_layer.groups),
        "sinks": dict(loop_layer.sinks),
        "subscribed": [set(s._subscribed_to) for s in shards],
        "renewed": [dict(s._pubsub.channels) if s._pubsub else {} for s in shards],
    }


EMPTY: dict[str, Any] = {
    "channels": {},
    "groups": {},
    "sinks": {},
    "subscribed": [set()],
    "renewed": [{}],
}


async def _emptied(seconds: float = 5.0) -> None:
    """Wait for the layer to forget a closed connection with Redis up: redis-py drops a
    subscription when Redis confirms the unsubscribe, which the layer's reader takes in."""
    deadline = time.monotonic() + seconds
    while (state := _state(_loop_layer())) != EMPTY:
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.05)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def _snapshot(token: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(timeout=5))["type"] == "hello"
    return ws


async def _connected_again(token: str, seconds: float = 10.0) -> WebsocketCommunicator:
    """A connection that gets its snapshot, once the layer reaches Redis again."""
    deadline = time.monotonic() + seconds
    while True:
        ws = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
        connected, _ = await ws.connect()
        assert connected
        first = await ws.receive_output(timeout=5)
        if first != TRY_AGAIN_LATER:
            assert first["type"] == "websocket.send", first
            return ws
        await ws.disconnect()
        assert time.monotonic() < deadline, f"still refused after {seconds} s"
        await asyncio.sleep(0.1)


async def test_a_connection_while_redis_is_down_is_closed_with_1013_and_leaves_nothing(
    redis_layer: str, restartable_redis: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    token = await _worker_token()
    restartable_redis.kill()
    for _ in range(3):
        ws = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
        connected, _ = await ws.connect()
        assert connected  # accepted, so that the client reads why it is closed
        assert await ws.receive_output(timeout=5) == TRY_AGAIN_LATER
        await ws.disconnect()
    assert _state(_loop_layer()) == EMPTY
    assert _errors(caplog) == []
    refusals = [r for r in caplog.records if r.name == "crowd.ws" and r.levelno >= logging.WARNING]
    assert len(refusals) == 1  # one warning for the outage, not one per connection

    restartable_redis.start_again()
    ws = await _connected_again(token)
    await ws.disconnect()
    await _emptied()


async def test_redis_gone_between_the_channel_and_the_groups_closes_with_1013_and_leaves_nothing(
    redis_layer: str, restartable_redis: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    token = await _worker_token()
    ws = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
    # The consumer makes its channel (a Redis subscription) as it starts, before it reads the
    # handshake; Redis goes away then, before the consumer joins its groups.
    assert not ws.future.done()  # the communicator starts the application on first use
    deadline = time.monotonic() + 5
    while not _loop_layer().channels:
        assert time.monotonic() < deadline, "the consumer made no channel"
        await asyncio.sleep(0.01)
    (channel,) = _loop_layer().channels
    restartable_redis.kill()

    connected, _ = await ws.connect()
    assert connected
    assert await ws.receive_output(timeout=5) == TRY_AGAIN_LATER
    await ws.disconnect()
    assert _state(_loop_layer()) == EMPTY
    assert _errors(caplog) == []

    # Once Redis is back, the layer subscribes again only for the connections it has.
    restartable_redis.start_again()
    other = await _connected_again(token)
    client = redis.Redis.from_url(restartable_redis.url, socket_timeout=1)
    try:
        assert client.pubsub_numsub(channel) == [(channel.encode(), 0)]
        await asyncio.sleep(1.5)  # the layer's reconnection, had it kept the subscription
        assert client.pubsub_numsub(channel) == [(channel.encode(), 0)]
    finally:
        client.close()
    await other.disconnect()
    await _emptied()


async def test_a_connection_that_closes_while_redis_is_down_leaves_nothing(
    redis_layer: str, restartable_redis: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    token = await _worker_token()
    ws = await _snapshot(token)
    groups = list(_loop_layer().groups)
    assert groups

    restartable_redis.kill()
    await ws.disconnect()
    assert _state(_loop_layer()) == EMPTY
    assert _errors(caplog) == []

    restartable_redis.start_again()
    ws = await _connected_again(token)
    await ws.disconnect()
    await _emptied()
    # Nothing of the closed connection was subscribed again.
    client = redis.Redis.from_url(restartable_redis.url, socket_timeout=1)
    try:
        assert all(n == 0 for _, n in client.pubsub_numsub(*groups))
    finally:
        client.close()


async def test_listeners_of_a_group_are_counted_by_redis_and_assumed_when_it_is_down(
    redis_layer: str, restartable_redis: RestartableRedis
) -> None:
    """The coalescer builds a frame only for a group someone listens to (crowd.live): Redis
    counts the group's subscribers for every process; with Redis down the answer is "yes",
    so no frame is dropped for want of one."""
    layer = get_channel_layer()
    assert isinstance(layer, RedisBroadcastLayer)
    assert not await asyncio.to_thread(layer.has_listeners, "project.1")
    channel = await layer.new_channel()
    await layer.group_add("project.1", channel)
    assert await asyncio.to_thread(layer.has_listeners, "project.1")
    assert not await asyncio.to_thread(layer.has_listeners, "project.2")
    await layer.group_discard("project.1", channel)
    assert not await asyncio.to_thread(layer.has_listeners, "project.1")
    restartable_redis.kill()
    assert await asyncio.to_thread(layer.has_listeners, "project.2")
    restartable_redis.start_again()


async def test_a_subscription_whose_connection_is_torn_down_under_it_closes_with_1013(
    redis_layer: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Redis goes away, the layer's reader disconnects the shared subscribing
    connection while a new connection's subscribe may be writing to it: redis-py then fails
    with an AttributeError (its writer gone) rather than a ConnectionError. That is the same
    outage, so the new connection is refused with 1013, not failed unhandled."""
    token = await _worker_token()
    first = await _snapshot(token)  # the shard's subscribing connection is up
    (shard,) = _loop_layer()._shards
    connection = shard._pubsub.connection
    send = connection._send_packed_command

    async def torn_down(command: Any) -> None:
        connection._writer = None  # as the reader's disconnect leaves it, mid-command
        await send(command)

    monkeypatch.setattr(connection, "_send_packed_command", torn_down)
    ws = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
    connected, _ = await ws.connect()
    assert connected
    assert await ws.receive_output(timeout=5) == TRY_AGAIN_LATER
    await ws.disconnect()
    assert _errors(caplog) == []

    monkeypatch.undo()
    await first.disconnect()
    ws = await _connected_again(token)
    await ws.disconnect()
    await _emptied()
