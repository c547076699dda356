"""Rate limits whose count cannot be raced.

DRF's throttle reads a key's history of requests from the cache, checks it, and writes it
back with the new request: requests that arrive together each read the same history, and
all of them pass. A script that sends its log-in attempts (or its ``next`` calls) many at a
time got the allowance once for every request in flight. Here the check and the count are
one step: on Redis a script that runs atomically (one round trip, where DRF's took two and
carried the whole history each way), elsewhere under a lock of the process (the embedded
default's cache lives in its one process). The answers are DRF's: the same window, the same
count, the same ``Retry-After``.
"""

from __future__ import annotations

import threading
from typing import Any

from rest_framework import throttling

_lock = threading.Lock()


def _record(
    cache: Any, key: str, now: float, window: float, limit: int
) -> tuple[bool, list[float]]:
    """Count a request: whether it is allowed, and the history DRF's ``wait`` reads."""
    in_one_step = getattr(cache, "rate_record", None)
    if in_one_step is not None:
        allowed, history = in_one_step(key, now, window, limit)
        return bool(allowed), history
    with _lock:
        history = [at for at in cache.get(key, []) if at > now - window]
        if len(history) >= limit:
            return False, history
        history.insert(0, now)
        cache.set(key, history, window)
        return True, history


class AtomicRateThrottle(throttling.SimpleRateThrottle):
    num_requests: int  # set from the rate, by DRF
    duration: int

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        allowed, self.history = _record(
            self.cache, self.key, self.now, self.duration, self.num_requests
        )
        return allowed


class ScopedRateThrottle(throttling.ScopedRateThrottle, AtomicRateThrottle):
    """DRF's scoped rate limit (``throttle_scope`` on the view, the rate from
    ``DEFAULT_THROTTLE_RATES``), counted in one step."""
