"""Publishing live events: services call :func:`publish` and the event leaves after commit.

Events that summarise state (a project's progress, the work available to workers) go through
:func:`publish_coalesced`: the first change in a quiet period is sent at once, later ones
within ``LIVE_COALESCE_SECONDS`` are merged into one frame sent at the end of the period, and
the frame is built when it is sent, so it carries the latest numbers. A burst of a thousand
submissions becomes a handful of frames per second per group, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, transaction

log = logging.getLogger(__name__)

Builder = Callable[[], dict[str, Any] | None]


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


# The event loop the in-memory channel layer's consumers live in (the embedded default's one
# server loop), remembered when a consumer connects. That layer's queues belong to the loop:
# a frame sent from another thread (a job, the coalescer's timer) must be handed to it, or it
# may sit unnoticed. Redis layers need none of this.
_home_loop: asyncio.AbstractEventLoop | None = None


def remember_loop() -> None:
    global _home_loop
    _home_loop = asyncio.get_running_loop()


def _layer_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _home_loop
    if isinstance(layer, InMemoryChannelLayer) and loop is not None and loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(layer.group_send(group, message))
            return
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        try:
            future.result(timeout=5)
        except Exception:  # a closed loop or a full queue: the frame is dropped, not raised
            log.warning("live frame for %s not delivered", group, exc_info=True)
        return
    async_to_sync(layer.group_send)(group, message)


def send_now(group: str, event: dict[str, Any]) -> None:
    _layer_send(group, {"type": "live.event", "event": event})


def send_control(group: str, message: dict[str, Any]) -> None:
    """A message for the consumers themselves (e.g. ``live.join``), not for the client."""
    _layer_send(group, message)


def publish(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one),
    so no client hears of a change that was rolled back. ``at`` is the commit time (Unix
    seconds): what a client measures delivery latency from."""
    transaction.on_commit(lambda: send_now(group, {**event, "at": round(time.time(), 6)}))


class Coalescer:
    """Per process: at most one frame per key per ``interval`` seconds. Keys are strings like
    ``progress.12``; the builder runs when the frame is sent."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, tuple[str, Builder, float]] = {}
        self._timer: threading.Timer | None = None

    def submit(self, key: str, group: str, build: Builder) -> None:
        """A change behind ``key`` committed now; ``at`` of the frame that carries it is the
        earliest commit it merges."""
        now, committed = time.monotonic(), time.time()
        with self._lock:
            quiet = now - self._last_sent.get(key, float("-inf")) >= self.interval
            if quiet and key not in self._pending:
                self._last_sent[key] = now
                send = True
            else:
                earliest = self._pending[key][2] if key in self._pending else committed
                self._pending[key] = (group, build, earliest)
                send = False
                self._schedule(now)
        if send:
            self._send(group, build, committed)

    def _schedule(self, now: float) -> None:
        if self._timer is not None:
            return
        due = min(self._last_sent.get(k, now) for k in self._pending) + self.interval
        self._timer = threading.Timer(max(due - now, 0.0), self._flush)
        self._timer.daemon = True
        self._timer.start()

    def _flush(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._timer = None
            due = {
                k: v
                for k, v in self._pending.items()
                if now - self._last_sent.get(k, float("-inf")) >= self.interval - 1e-3
            }
            for key in due:
                del self._pending[key]
                self._last_sent[key] = now
            if self._pending:
                self._schedule(now)
        if due:
            close_old_connections()
            try:
                for group, build, committed in due.values():
                    self._send(group, build, committed)
            finally:
                close_old_connections()

    @staticmethod
    def _send(group: str, build: Builder, committed: float) -> None:
        try:
            event = build()
        except Exception:  # a frame that cannot be built is skipped, never raised at a caller
            log.exception("live frame for %s failed", group)
            return
        if event is not None:
            send_now(group, {**event, "at": round(committed, 6)})

    def forget(self) -> None:
        """Drop pending frames and timings (tests)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._pending.clear()
            self._last_sent.clear()


_coalescer: Coalescer | None = None


def coalescer() -> Coalescer:
    global _coalescer
    if _coalescer is None:
        _coalescer = Coalescer(settings.LIVE_COALESCE_SECONDS)
    return _coalescer


def publish_coalesced(key: str, group: str, build: Builder) -> None:
    """After commit, send the frame ``build()`` makes to ``group``, coalesced by ``key``."""
    transaction.on_commit(lambda: coalescer().submit(key, group, build))
