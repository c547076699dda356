"""The embedded channel layer's direct delivery: group messages reach attached consumers by a
plain call, in order, and one waiting client holds up nobody else."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from crowd.layers import EmbeddedChannelLayer, drive
from crowd.ws import AuthenticatedConsumer

USER = SimpleNamespace(is_authenticated=True, role="worker", pk=1)


async def test_drive_runs_to_the_first_wait_and_resumes_after_it() -> None:
    steps: list[str] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def quick() -> None:
        steps.append("quick")

    async def waiting() -> None:
        steps.append("before")
        steps.append(await gate)

    assert drive(quick()) is True
    assert steps == ["quick"]
    done: list[bool] = []
    assert drive(waiting(), then=lambda: done.append(True)) is False
    assert steps == ["quick", "before"]
    gate.set_result("after")
    await asyncio.sleep(0)
    assert steps == ["quick", "before", "after"]
    assert done == [True]


async def test_a_group_send_calls_attached_sinks_at_once_and_queues_the_rest() -> None:
    layer = EmbeddedChannelLayer()
    got: dict[str, list[Any]] = {"a": [], "b": []}
    attached = [await layer.new_channel() for _ in range(2)]
    queued = await layer.new_channel()
    for name, channel in zip("ab", attached, strict=True):
        layer.attach(channel, got[name].append)
    for channel in [*attached, queued]:
        await layer.group_add("g", channel)

    await layer.group_send("g", {"type": "live.event", "n": 1})
    await layer.group_send("g", {"type": "live.event", "n": 2})
    assert [m["n"] for m in got["a"]] == [1, 2]  # delivered before group_send returned
    assert [m["n"] for m in got["b"]] == [1, 2]
    assert (await layer.receive(queued))["n"] == 1
    assert (await layer.receive(queued))["n"] == 2

    layer.detach(attached[0])
    await layer.group_send("g", {"type": "live.event", "n": 3})
    assert [m["n"] for m in got["a"]] == [1, 2]
    assert (await layer.receive(attached[0]))["n"] == 3  # back to its queue


class SlowConsumer(AuthenticatedConsumer):
    """Reads its snapshot slowly, and has a handler that waits for a gate."""

    gate: asyncio.Event
    snapshot_started: asyncio.Event

    async def groups_for(self, user: Any) -> list[str]:
        return ["slow-test"]

    async def snapshot(self, user: Any) -> list[dict[str, Any]]:
        self.snapshot_started.set()
        await asyncio.sleep(0.05)
        return [{"type": "hello"}]

    async def live_wait(self, message: dict[str, Any]) -> None:
        await self.gate.wait()
        await self.send_json({"type": "waited", "n": message["n"]})


@pytest.mark.django_db  # Channels closes stale database connections on disconnect
async def test_a_consumer_gets_the_snapshot_first_and_events_in_order() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, EmbeddedChannelLayer)
    SlowConsumer.gate = asyncio.Event()
    SlowConsumer.snapshot_started = asyncio.Event()
    app = SlowConsumer.as_asgi()
    communicator = WebsocketCommunicator(app, "/ws/slow/")
    communicator.scope["user"] = USER
    connecting = asyncio.ensure_future(communicator.connect())
    await SlowConsumer.snapshot_started.wait()
    # An event while the snapshot is read waits for it.
    await layer.group_send("slow-test", {"type": "live.event", "event": {"type": "early"}})
    assert (await connecting)[0]
    assert (await communicator.receive_json_from())["type"] == "hello"
    assert (await communicator.receive_json_from())["type"] == "early"

    # A handler that waits holds back later events for this client only, in order.
    await layer.group_send("slow-test", {"type": "live.wait", "n": 1})
    await layer.group_send("slow-test", {"type": "live.event", "event": {"type": "after", "n": 2}})
    assert await communicator.receive_nothing(timeout=0.1)
    SlowConsumer.gate.set()
    assert await communicator.receive_json_from() == {"type": "waited", "n": 1}
    assert await communicator.receive_json_from() == {"type": "after", "n": 2}
    await communicator.disconnect()
    assert not layer.groups.get("slow-test")
