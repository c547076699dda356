"""Coalescing across ASGI processes: with Redis, the quiet periods and the last frame of each
key are shared, so several processes together send at most one frame per key and interval,
and never leave clients on a stale frame. Two coalescers stand for two processes."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from crowd import live
from crowd.live import Coalescer, SharedWindows
from tests.plugins.services import Server, free_port

INTERVAL = 0.1


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    lock = threading.Lock()

    def record(group: str, event: dict[str, Any]) -> None:
        with lock:
            frames.append(event)

    monkeypatch.setattr(live, "send_now", record)
    monkeypatch.setattr(live, "listening", lambda group: True)  # someone is connected
    return frames


def two_processes(url: str) -> tuple[Coalescer, Coalescer]:
    prefix = f"crowd-test-{uuid.uuid4().hex[:8]}"
    return (
        Coalescer(INTERVAL, SharedWindows(url, prefix)),
        Coalescer(INTERVAL, SharedWindows(url, prefix)),
    )


def wait_for(frames: list[dict[str, Any]], count: int, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while len(frames) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_two_processes_send_one_frame_per_interval_in_all_and_the_latest_last(
    redis_server: Server, sent: list[dict[str, Any]]
) -> None:
    first, second = two_processes(redis_server.url)
    state = {"n": 0}
    started = time.monotonic()
    for i in range(600):  # a change every millisecond or so, seen by both processes in turn
        state["n"] += 1
        (first if i % 2 else second).submit("progress.1", "g", lambda: dict(state))
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    time.sleep(4 * INTERVAL)

    numbers = [frame["n"] for frame in sent]
    # The first change went at once (built when sent: a change or two later, not a window).
    assert numbers[0] < 0.5 * INTERVAL / 0.001
    assert numbers[-1] == 600  # the trailing frame carries the latest state
    # One window for both: at most one frame per interval (each process alone would allow
    # one per interval each), plus the leading one.
    assert len(numbers) <= elapsed / INTERVAL + 2
    assert len(set(numbers)) == len(numbers)  # no frame twice


def test_a_frame_another_process_sent_is_not_repeated_and_a_return_to_it_is_sent(
    redis_server: Server, sent: list[dict[str, Any]]
) -> None:
    first, second = two_processes(redis_server.url)
    state = {"available": 700}

    first.submit("queue.1", "g", lambda: dict(state))
    wait_for(sent, 1)
    time.sleep(2 * INTERVAL)
    second.submit("queue.1", "g", lambda: dict(state))  # the same numbers, seen elsewhere
    time.sleep(2 * INTERVAL)
    assert [frame["available"] for frame in sent] == [700]

    state["available"] = 690
    second.submit("queue.1", "g", lambda: dict(state))
    wait_for(sent, 2)
    time.sleep(2 * INTERVAL)
    # Back to what the first process sent last: clients were told 690 since, so 700 goes out.
    state["available"] = 700
    first.submit("queue.1", "g", lambda: dict(state))
    wait_for(sent, 3)
    assert [frame["available"] for frame in sent] == [700, 690, 700]


def test_without_redis_each_process_still_sends(sent: list[dict[str, Any]]) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    alone = Coalescer(INTERVAL, SharedWindows(nowhere, "crowd-test"))
    alone.submit("progress.1", "g", lambda: {"n": 1})
    wait_for(sent, 1, seconds=5)
    assert sent == [{"n": 1, "at": sent[0]["at"]}]
