"""On the Redis layer a frame sent from a request's thread is published from that thread, not
handed to the server's event loop: it reaches Redis while the loop is busy, and with Redis
unreachable the request does not wait on it frame after frame."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from crowd import live
from tests.live import redis_channel_layers
from tests.plugins.services import Server, free_port


@pytest.fixture
def server_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A running loop in a thread of its own, remembered as the server's (as uvicorn's is)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(_remember(), loop).result(timeout=5)
    try:
        yield loop
    finally:
        live._home_loop = None
        live._direct_paused_until = 0.0
        asyncio.run_coroutine_threadsafe(_settled(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


async def _remember() -> None:
    live.remember_loop()


async def _settled() -> None:
    """The sends handed to the loop end (or are canceled) before it stops."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        await asyncio.wait(others, timeout=3)
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def test_a_frame_from_a_thread_reaches_redis_while_the_server_loop_is_busy(
    redis_server: Server, settings: Any, server_loop: asyncio.AbstractEventLoop
) -> None:
    settings.CHANNEL_LAYERS, prefix = redis_channel_layers(redis_server.url, "direct")
    listener = redis.Redis.from_url(redis_server.url).pubsub()
    listener.subscribe(f"{prefix}__group__g")
    assert listener.get_message(timeout=2)["type"] == "subscribe"

    server_loop.call_soon_threadsafe(time.sleep, 3.0)  # the loop is stuck for three seconds
    time.sleep(0.1)
    started = time.monotonic()
    live.send_now("g", {"n": 1})
    message = listener.get_message(timeout=2)
    assert message is not None
    assert message["type"] == "message"
    # Published from this thread: it did not wait for the loop to be free.
    assert time.monotonic() - started < 1.0
    listener.close()


def test_with_redis_unreachable_frames_do_not_hold_up_the_request(
    settings: Any, server_loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CHANNEL_LAYERS, _ = redis_channel_layers(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="crowd.live"):
        for n in range(20):
            live.send_now("g", {"n": n})
    assert time.monotonic() - started < 1.0
    direct = [r for r in caplog.records if "not published directly" in r.getMessage()]
    # One failed attempt, then the loop's way for the pause: not a connection attempt a frame.
    assert len(direct) == 1
    assert live._direct_paused_until > time.monotonic()
