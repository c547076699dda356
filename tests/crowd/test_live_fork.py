"""A process forked after it published live frames (a job worker's children, a pre-loading
server, a benchmark's clients) publishes on a Redis connection of its own. Sharing the
parent's socket, two processes read each other's replies: a publish then waited for an answer
another process had taken, five seconds at a time under load."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import redis

from crowd import live
from tests.live import redis_channel_layers
from tests.plugins.services import Server

FRAMES = 20


@pytest.fixture
def redis_layer(redis_server: Server, settings: Any) -> str:
    settings.CHANNEL_LAYERS, prefix = redis_channel_layers(redis_server.url, "fork")
    return prefix


def _publishers(client: redis.Redis) -> set[str]:
    """Addresses of the connections whose last command was a PUBLISH."""
    return {c["addr"] for c in client.client_list() if c["cmd"] == "publish"}


def test_a_forked_child_publishes_on_a_connection_of_its_own(
    redis_server: Server, redis_layer: str
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    listener = client.pubsub()
    listener.subscribe(f"{redis_layer}__group__g")
    assert listener.get_message(timeout=2)["type"] == "subscribe"

    live.send_now("g", {"n": 0})  # the parent's connection, on this thread's own loop
    parent = _publishers(client)
    assert len(parent) == 1

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which reports through the pipe
        status = 1
        try:
            for n in range(1, FRAMES + 1):
                live.send_now("g", {"n": n})
            ours = _publishers(redis.Redis.from_url(redis_server.url)) - parent
            os.write(write, f"{len(ours)}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    _, status = os.waitpid(child, 0)
    reported = os.read(read, 16).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reported == "1"  # the child's frames left on a new connection, not the parent's

    live.send_now("g", {"n": FRAMES + 1})  # and the parent's own still works
    received, deadline = 0, time.monotonic() + 5
    while received < FRAMES + 2 and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
        if message is not None and message["type"] == "message":
            received += 1
    assert received == FRAMES + 2
    listener.close()
