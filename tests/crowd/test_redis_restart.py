"""Redis restarting under a running process: the production channel layer and the shared
coalescing windows pick up again on the new server by themselves. (The whole deployment
through a restart, with clients connected: tests/e2e/test_live_redis_restart.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from crowd.layers import RedisBroadcastLayer
from crowd.live import SharedWindows
from tests.plugins.services import RestartableRedis


async def _first_message(layer: RedisBroadcastLayer, channel: str, seconds: float) -> Any:
    """The first message on ``channel``, sending one every tenth of a second until one arrives
    (the layer delivers at most once: what is sent before it has subscribed again is gone)."""
    receiving = asyncio.ensure_future(layer.receive(channel))
    deadline = time.monotonic() + seconds
    try:
        while not receiving.done():
            assert time.monotonic() < deadline, f"nothing received within {seconds} s"
            await layer.group_send("g", {"type": "live.event"})
            await asyncio.wait({receiving}, timeout=0.1)
        return receiving.result()
    finally:
        receiving.cancel()


async def test_the_layer_sends_at_once_after_redis_restarts_and_receives_again(
    restartable_redis: RestartableRedis,
) -> None:
    layer = RedisBroadcastLayer(
        hosts=[{"address": restartable_redis.url}], prefix=f"crowd-test-{uuid.uuid4().hex[:8]}"
    )
    try:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "live.event", "n": 0})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 0

        restartable_redis.kill()
        restartable_redis.start_again()
        # The connection the layer sent on is one Redis closed: the first send after the
        # restart goes out on a new one instead of failing.
        await layer.group_send("g", {"type": "live.event", "n": -1})
        # And the layer subscribes again by itself: messages arrive within a couple of seconds.
        assert (await _first_message(layer, channel, seconds=5))["type"] == "live.event"
    finally:
        await layer.flush()


def test_coalescing_is_shared_again_once_redis_is_back(
    restartable_redis: RestartableRedis,
) -> None:
    windows = SharedWindows(restartable_redis.url, f"crowd-test-{uuid.uuid4().hex[:8]}")
    try:
        assert windows.open("progress.1", 5.0) == 0.0
        assert windows.open("progress.1", 5.0) > 4.0  # the period another process started

        restartable_redis.kill()
        started = time.monotonic()
        # Each process alone, at once: every frame goes out, none waits on Redis.
        assert windows.open("progress.1", 5.0) == 0.0
        assert windows.is_new("progress.1", {"n": 1})
        assert windows.is_new("progress.1", {"n": 1})
        assert time.monotonic() - started < 1.0

        restartable_redis.start_again()
        # Shared again with the first call, not left coalescing alone.
        assert windows.open("progress.1", 5.0) == 0.0
        assert windows.open("progress.1", 5.0) > 4.0
        assert windows.is_new("progress.1", {"n": 1})
        assert not windows.is_new("progress.1", {"n": 1})
    finally:
        windows.redis.close()
