"""Production's cache: Django's Redis cache, failing open while Redis does not answer.

What the cache holds here is a helper, never a record: the rate limiters' counters (DRF's
throttles) and whether the periodic sweep is already scheduled (``tasks.jobs``). The
database is the source of truth for everything a worker, a manager or a payout depends on, so
Redis being down, restarting or hanging must not stop a request that the database can serve.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# Connect and read timeout of a cache command unless OPTIONS sets them (the settings do, from
# REDIS_CACHE_TIMEOUT_SECONDS): a Redis that accepts connections but does not answer holds a
# request this long at most, then the cache fails open.
DEFAULT_TIMEOUT_SECONDS = 0.5
# While Redis is down, one call per process tries it again this often; the others fail open
# at once instead of each waiting out a connection attempt (or a timeout, if Redis hangs).
RETRY_EVERY_SECONDS = 1.0
# What "Redis does not answer" looks like to redis-py (refused, reset, closed, loading, timed
# out). Any other error (a wrong command, a full Redis) is a fault to see, and is raised.
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)

T = TypeVar("T")

# A rate limit's check and count in one step (``FailOpenRedisCache.rate_record``): the key
# holds the times of the requests counted within the window, as a sorted set. ARGV: now, the
# window's start (times at or before it are dropped), the limit, this request's member, the
# key's lifetime in milliseconds. Returns 1 and the count with this request, or 0, the count
# and the oldest time counted.
_RATE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local counted = redis.call('ZCARD', KEYS[1])
if counted < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {1, counted + 1, ''}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, counted, oldest[2]}
"""


@dataclass
class _Outage:
    """Whether one Redis (a cache LOCATION) is down, for every cache object of the process
    (Django makes one per thread and context), so an outage is logged once per process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    down_since: float | None = None
    retry_at: float = 0.0

    def skip(self) -> bool:
        """True while Redis is known to be down and it is not yet time to try it again; the
        first caller after that time tries it, and the others keep skipping meanwhile."""
        if self.down_since is None:
            return False
        with self.lock:
            now = time.monotonic()
            if now < self.retry_at:
                return True
            self.retry_at = now + RETRY_EVERY_SECONDS
            return False

    def failed(self, error: Exception) -> None:
        with self.lock:
            now = time.monotonic()
            self.retry_at = now + RETRY_EVERY_SECONDS
            if self.down_since is not None:
                return
            self.down_since = now
        logger.warning(
            "Redis cache unreachable (%s: %s): reads miss and writes are skipped until it "
            "answers again; rate limits are not enforced meanwhile",
            type(error).__name__,
            error,
        )

    def answered(self) -> None:
        if self.down_since is None:
            return
        with self.lock:
            if self.down_since is None:
                return
            seconds = time.monotonic() - self.down_since
            self.down_since = None
        logger.info("Redis cache reachable again after %.1f s", seconds)


_outages: dict[str, _Outage] = {}
_outages_lock = threading.Lock()


def _outage_of(location: str) -> _Outage:
    with _outages_lock:
        return _outages.setdefault(location, _Outage())


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_script: Any = None


def _rate_script(client: Any) -> Any:
    """The rate script, one for the process, run with the client it is called with
    (redis-py sends it by its digest, and once whole if the server does not know it).
    Django's cache makes a new client object for every command, so a script registered on
    each would keep every one of them alive."""
    global _script
    if _script is None:
        _script = client.register_script(_RATE_SCRIPT)
    return _script


class FailOpenRedisCache(RedisCache):
    """Django's ``RedisCache`` that fails open when Redis cannot be reached or does not answer
    within the timeout: reads give their default (a miss), writes do nothing and say they did
    not happen (``add``, ``touch``, ``delete`` give False, ``set_many`` every key, ``incr`` the
    ValueError of a missing key). The first failure of an outage is logged as a warning and
    its end as an info, once per process; while Redis is down one call a second tries it
    again, so the cache is back in use within a second of Redis answering, with no restart.

    For the rate limits, failing open means that no request is rate-limited during an outage:
    a throttle reads an empty history and its write of the new one is dropped. That is the
    right trade for a worker's ``next``: its throttle protects capacity, not correctness (the
    claim itself, in the database, keeps one open lease per worker and project and never
    over-assigns a task, whatever the rate), so during an outage it can at worst let a
    hammering script cost some extra claim queries. Failing closed would turn a Redis outage
    into every worker of the deployment getting no work (a 500, or a 429 nobody earned) until
    Redis is back, a certain loss for all against a possible cost from one. The same holds for
    the log-in and sign-up limits, whose counters also start afresh when an outage ends (and
    when Redis restarts empty): a password guesser gains the outage's minutes at full speed,
    a cost bounded by how long Redis stays down, which the warning and ``/healthz`` report.
    """

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS", {}))
        options.setdefault("socket_connect_timeout", DEFAULT_TIMEOUT_SECONDS)
        options.setdefault("socket_timeout", DEFAULT_TIMEOUT_SECONDS)
        super().__init__(server, {**params, "OPTIONS": options})
        self._outage = _outage_of(server if isinstance(server, str) else ",".join(server))

    @cached_property
    def _cache(self) -> Any:
        """The client, with its connection pool, shared by every cache object of the process
        on the same Redis: Django makes a cache object per thread, and an ASGI server runs
        each request in a thread of its own, which would otherwise open (and set up) a new
        Redis connection for every request. redis-py's pools are thread-safe."""
        servers, options = self._servers, self._options  # type: ignore[attr-defined]
        key = (tuple(servers), repr(sorted(options.items())))
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(servers, **options)  # type: ignore[attr-defined]
            return client

    def is_down(self) -> bool:
        """Whether Redis is known to be unreachable now (its last call failed)."""
        return self._outage.down_since is not None

    def _fail_open(self, fallback: T, command: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._outage.skip():
            return fallback
        try:
            result = command(*args, **kwargs)
        except REDIS_UNREACHABLE as error:
            self._outage.failed(error)
            return fallback
        self._outage.answered()
        return result

    def add(
        self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return self._fail_open(False, super().add, key, value, timeout, version)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._fail_open(default, super().get, key, default, version)

    def set(
        self, key: Any, value: Any, timeout: float | None = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        self._fail_open(None, super().set, key, value, timeout, version)

    def touch(self, key: Any, timeout: float | None = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._fail_open(False, super().touch, key, timeout, version)

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._fail_open(False, super().delete, key, version)

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        return self._fail_open({}, super().get_many, keys, version)

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._fail_open(False, super().has_key, key, version)

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        value: int | None = self._fail_open(None, super().incr, key, delta, version)
        if value is None:  # as for a key that is not there (Django's contract)
            raise ValueError(f"Key '{key}' not found.")
        return value

    def set_many(
        self, data: dict[Any, Any], timeout: float | None = DEFAULT_TIMEOUT, version: Any = None
    ) -> list[Any]:
        return self._fail_open(list(data), super().set_many, data, timeout, version)

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        self._fail_open(None, super().delete_many, keys, version)

    def clear(self) -> None:
        self._fail_open(None, super().clear)

    def rate_record(
        self, key: str, now: float, window: float, limit: int
    ) -> tuple[bool, list[float]]:
        """Count a request against ``limit`` requests a ``window`` of seconds, in one step
        on Redis (a script: concurrent requests cannot each read the same count and all
        pass). Whether it is allowed, and the times counted (newest first, as DRF keeps a
        throttle's history; on a refusal, as many as were counted with the oldest last).
        Fails open: allowed while Redis is unreachable."""
        full_key = self.make_and_validate_key(f"rate:{key}")
        client = self._cache.get_client(full_key, write=True)
        script = _rate_script(client)
        member = f"{now!r}:{os.urandom(6).hex()}"
        ttl_ms = max(1, math.ceil(window * 1000))
        args = [repr(now), repr(now - window), limit, member, ttl_ms]
        allowed, counted, oldest = self._fail_open(
            (1, 1, b""), script, keys=[full_key], args=args, client=client
        )
        if allowed:
            return True, [now]
        return False, [now] * (int(counted) - 1) + [float(oldest)]
