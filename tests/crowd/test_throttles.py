"""The rate limits (``crowd.throttles``): DRF's answers, counted in one step. Requests that
arrive together cannot each read the same count and all pass, on Redis (a script) as on the
embedded default's cache (a lock of the process)."""

from __future__ import annotations

import gc
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from rest_framework import throttling

from crowd.throttles import ScopedRateThrottle

RATE = "5/minute"


def _on_redis(settings: Any, server: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "crowd.cache.FailOpenRedisCache",
            "LOCATION": server.url,
            "KEY_PREFIX": f"crowd-test-{uuid.uuid4().hex[:8]}",
        }
    }


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, settings: Any) -> str:
    if request.param == "redis":
        _on_redis(settings, request.getfixturevalue("redis_server"))
    return str(request.param)


def _throttle(kind: type[throttling.ScopedRateThrottle], clock: list[float]) -> Any:
    throttle = kind()
    throttle.THROTTLE_RATES = {"test": RATE}
    throttle.timer = lambda: clock[0]
    return throttle


def _call(throttle: Any, user_id: int) -> tuple[bool, float | None]:
    request = SimpleNamespace(user=SimpleNamespace(pk=user_id, is_authenticated=True))
    view = SimpleNamespace(throttle_scope="test")
    allowed = throttle.allow_request(request, view)
    return allowed, None if allowed else throttle.wait()


def test_the_answers_are_drf_s(backend: str) -> None:
    """The same requests at the same times: allowed and refused alike, the same wait."""
    times = [0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 10.0, 59.9, 60.0, 60.5, 61.0, 63.0, 130.0, 130.1]
    ours: list[tuple[bool, float | None]] = []
    drf: list[tuple[bool, float | None]] = []
    for kind, answers, user in ((ScopedRateThrottle, ours, 1),
                                (throttling.ScopedRateThrottle, drf, 2)):  # fmt: skip
        clock = [0.0]
        for at in times:
            clock[0] = at
            allowed, wait = _call(_throttle(kind, clock), user)
            answers.append((allowed, None if wait is None else round(wait, 6)))
    assert ours == drf
    assert [allowed for allowed, _ in ours].count(False) >= 3  # the limit was reached


def test_requests_arriving_together_are_counted_one_by_one(backend: str) -> None:
    clock = [1000.0]
    start = threading.Barrier(24)
    answers: list[bool] = []

    def ask() -> None:
        throttle = _throttle(ScopedRateThrottle, clock)
        start.wait()
        answers.append(_call(throttle, 7)[0])

    threads = [threading.Thread(target=ask) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 19 + [True] * 5
    # Another worker has an allowance of their own.
    assert _call(_throttle(ScopedRateThrottle, clock), 8)[0]


@pytest.mark.postgres
def test_counting_keeps_no_redis_client_alive(settings: Any, redis_server: Any) -> None:
    """Django's cache makes a new client object for each command: a script registered on each
    one kept them all (about 4 KB a request in a web process, found by the soak)."""
    _on_redis(settings, redis_server)

    def clients() -> int:
        gc.collect()
        return sum(isinstance(o, redis.Redis) for o in gc.get_objects())

    clock = [5000.0]
    _call(_throttle(ScopedRateThrottle, clock), 9)
    before = clients()
    for n in range(500):
        clock[0] += 1.0
        _call(_throttle(ScopedRateThrottle, clock), 10 + n % 3)
    assert clients() - before < 10
