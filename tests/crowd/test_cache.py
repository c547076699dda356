"""Production's cache on a real Redis that goes away, hangs and comes back: it fails open (reads
miss, writes report failure) at once or within its timeout, says so once per outage, and is in
use again by itself once Redis answers. (Through the whole server, with the rate limit of
``next``: tests/e2e/test_live_redis_outage.py.)"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crowd.cache import RETRY_EVERY_SECONDS, FailOpenRedisCache
from tests.plugins.services import RestartableRedis

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 0.3  # the cache's connect and read timeout in these tests
# Redis answering again is noticed within the retry interval (and a little scheduling).
BACK_SECONDS = RETRY_EVERY_SECONDS + 5.0


@pytest.fixture
def cache(restartable_redis: RestartableRedis) -> Iterator[FailOpenRedisCache]:
    cache = FailOpenRedisCache(
        restartable_redis.url,
        {
            "KEY_PREFIX": f"crowd-test-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"socket_connect_timeout": TIMEOUT, "socket_timeout": TIMEOUT},
        },
    )
    yield cache
    # Whatever the test did, Redis answers again at its end: no process-wide outage state
    # outlives it.
    _until(lambda: cache.add("probe", 1), seconds=BACK_SECONDS)


def _until(ok: Callable[[], object], seconds: float) -> float:
    started = time.monotonic()
    while not ok():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "crowd.cache" and r.levelno >= logging.WARNING
    ]


def test_while_redis_is_down_reads_miss_and_writes_report_failure_until_it_is_back(
    cache: FailOpenRedisCache, restartable_redis: RestartableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    assert cache.add("sweep", 1)
    assert not cache.add("sweep", 1)
    cache.set("history", [1.0, 2.0])
    assert cache.get("history") == [1.0, 2.0]

    restartable_redis.kill()
    started = time.monotonic()
    for _ in range(20):  # a throttle's read and write per request, for twenty requests
        assert cache.get("history", []) == []
        cache.set("history", [3.0])
    assert cache.add("sweep", 1) is False
    assert cache.get_many(["history", "sweep"]) == {}
    assert cache.has_key("history") is False
    assert cache.touch("history") is False
    assert cache.delete("history") is False
    assert cache.set_many({"a": 1, "b": 2}) == ["a", "b"]
    cache.delete_many(["a", "b"])
    with pytest.raises(ValueError, match="not found"):
        cache.incr("count")
    assert cache.get_or_set("x", 7) == 7
    cache.clear()
    assert time.monotonic() - started < 1.0  # refused at once, nothing waited
    # One warning for the outage, not one per call.
    assert len(_warnings(caplog)) == 1, _warnings(caplog)
    assert "Redis cache unreachable" in _warnings(caplog)[0]

    restartable_redis.start_again()
    # In use again by itself, within the retry interval; Redis came back empty.
    _until(lambda: cache.add("sweep", 1), seconds=BACK_SECONDS)
    assert cache.get("history") is None
    cache.set("history", [4.0])
    assert cache.get("history") == [4.0]
    assert any("Redis cache reachable again" in r.getMessage() for r in caplog.records)
    assert len(_warnings(caplog)) == 1


def test_a_hanging_redis_holds_a_call_no_longer_than_the_timeout(
    cache: FailOpenRedisCache, restartable_redis: RestartableRedis
) -> None:
    cache.set("history", [1.0])
    pid = restartable_redis.server.process.pid
    os.kill(pid, signal.SIGSTOP)  # accepts connections (the kernel does) but never answers
    try:
        started = time.monotonic()
        assert cache.get("history", []) == []
        first = time.monotonic() - started
        assert first < TIMEOUT + 0.3, first
        # The calls after it, until the next try, do not wait on Redis again.
        started = time.monotonic()
        for _ in range(20):
            assert cache.get("history", []) == []
            assert cache.add("sweep", 1) is False
        # All forty together in less than one wait on Redis (a loaded machine's slack kept).
        assert time.monotonic() - started < TIMEOUT - 0.05
    finally:
        os.kill(pid, signal.SIGCONT)
    _until(lambda: cache.get("history") == [1.0], seconds=BACK_SECONDS)


def test_production_settings_use_the_fail_open_cache_with_the_configured_timeout(
    tmp_path: Path,
) -> None:
    script = (
        "import django; django.setup(); from django.core.cache import caches; "
        "c = caches['default']; print(type(c).__name__, c._options['socket_timeout'], "
        "c._options['socket_connect_timeout'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="crowd.settings",
        VAR_DIR=str(tmp_path),
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing is connected while settings load
        REDIS_CACHE_TIMEOUT_SECONDS="0.25",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["FailOpenRedisCache", "0.25", "0.25"]


def test_cache_objects_of_every_thread_share_one_connection_pool(
    cache: FailOpenRedisCache, restartable_redis: RestartableRedis
) -> None:
    """Django makes a cache object per thread, and an ASGI server a thread per request: they
    share the process's client, so a request does not open a Redis connection of its own."""
    params = {
        "KEY_PREFIX": "other-prefix",
        "OPTIONS": {"socket_connect_timeout": TIMEOUT, "socket_timeout": TIMEOUT},
    }
    made: list[FailOpenRedisCache] = []
    threads = [
        threading.Thread(
            target=lambda: made.append(FailOpenRedisCache(restartable_redis.url, params))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in made:
        assert other.add("key", 1) in (True, False)
    assert {id(other._cache) for other in made} == {id(cache._cache)}
    pool = cache._cache._get_connection_pool(write=True)
    assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
