"""Publishing live events: services call :func:`publish` and the event leaves after commit.

Events that summarise state (a project's progress, the work available to workers) go through
:func:`publish_coalesced`: the first change in a quiet period is sent at once, later ones
within ``LIVE_COALESCE_SECONDS`` are merged into one frame sent at the end of the period, and
the frame is built when it is sent, so it carries the latest numbers. A burst of a thousand
submissions becomes a handful of frames per second per group, not a thousand. A frame that
would say nothing new (the same numbers as the last one sent for its key) is not sent, and
does not count against the key's quiet period.

With several ASGI processes (``REDIS_URL`` set) the quiet periods and the last frame sent for
each key are kept in Redis (:class:`SharedWindows`), so the processes coalesce together: at
most one frame per key and interval in all, however many processes see the changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.db import connections, transaction

log = logging.getLogger(__name__)

Builder = Callable[[], dict[str, Any] | None]
T = TypeVar("T")
# After a frame that said nothing new, its key is looked at again after this share of the
# coalescing interval (not the whole interval: a change that follows goes out sooner).
RECHECK = 0.5
# How much earlier than this process reckons another's quiet period may have started (Redis
# counts the time left in whole milliseconds, and its answer takes a round trip to arrive).
SHARED_CLOCK_SLACK = 0.005


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


# The server's event loop (uvicorn's one loop per process), remembered by the ASGI application
# on its first call. On the Redis layer a frame sent from another thread (a request's, a
# job's, the coalescer's) is published from that thread on a plain connection
# (``publish_now``): one round trip, no event loop. Frames for the in-memory layer are handed
# to the server's loop and not waited for: its queues belong to that loop (a frame put from
# another thread may sit unnoticed). Frames from one thread keep their order either way.
_home_loop: asyncio.AbstractEventLoop | None = None
# Sends started on the loop itself, held until done (the loop keeps only weak references).
_in_flight: set[asyncio.Task[None]] = set()
# After a direct publish failed (Redis unreachable), frames go the loop's way for this long:
# a request then does not wait on a connection timeout per frame.
DIRECT_PAUSE_SECONDS = 5.0
_direct_paused_until = 0.0


def remember_loop() -> None:
    global _home_loop
    _home_loop = asyncio.get_running_loop()


def _layer_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None and _published_here(layer, group, message):
        return
    loop = _home_loop
    if loop is None or not loop.is_running():  # a job worker, a management command, a test
        _send_here(layer.group_send(group, message))
        return
    if running is loop:
        task = loop.create_task(layer.group_send(group, message))
        _in_flight.add(task)
        task.add_done_callback(_in_flight.discard)
        return
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
    future.add_done_callback(lambda done: _report(group, done))


def _published_here(layer: Any, group: str, message: dict[str, Any]) -> bool:
    """Publish from this thread if the layer can (Redis); False to send it the loop's way."""
    global _direct_paused_until
    publish_now = getattr(layer, "publish_now", None)
    if publish_now is None or time.monotonic() < _direct_paused_until:
        return False
    try:
        publish_now(group, message)
    except Exception as exc:
        log.warning("live frame for %s not published directly: %r", group, exc)
        _direct_paused_until = time.monotonic() + DIRECT_PAUSE_SECONDS
        return False
    return True


_thread_loops = threading.local()


def _send_here(send: Coroutine[Any, Any, None]) -> None:
    """Run a send to its end from a thread with no server loop. When an outer loop runs
    this thread's code (``sync_to_async``: a test's consumer, a job run from async code), the
    send runs on that loop, where its listeners are. Otherwise it runs on this thread's own
    loop, kept for the thread's life: no thread is started and no loop or layer connection
    made per frame, as ``async_to_sync`` would."""
    outer = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if outer is not None and outer.is_running():

        async def wrapped() -> None:
            await send

        async_to_sync(wrapped)()
        return
    loop = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    loop.run_until_complete(send)


# What a forked child took over from its parent and must not use, kept so that it is never
# collected either (a channels_redis loop's close, run on collection, would flush the parent's
# connections from the child).
_inherited: list[Any] = []


def _forget_inherited() -> None:
    """In a forked child: its own loop and channel layer from now on. The parent's layer
    holds its Redis connections, and a socket both processes write to delivers each one's
    replies to whichever reads first: the other then waits out its timeout, seconds a frame.
    The coalescer's thread did not survive the fork, and its lock may have been held."""
    global _home_loop, _thread_loops, _coalescer, _direct_paused_until
    _direct_paused_until = 0.0
    _inherited.append((_home_loop, _thread_loops, dict(channel_layers.backends), _coalescer))
    _home_loop, _thread_loops, _coalescer = None, threading.local(), None
    _in_flight.clear()
    channel_layers.backends.clear()


def _report(group: str, done: Any) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("live frame for %s not delivered: %r", group, done.exception())


def listening(group: str) -> bool:
    """Whether any live connection is in ``group`` (True when the layer cannot tell)."""
    layer = get_channel_layer()
    if layer is None:
        return False
    check = getattr(layer, "has_listeners", None)
    return True if check is None else bool(check(group))


def send_now(group: str, event: dict[str, Any]) -> None:
    """Encoded once here, forwarded as text by every consumer of the group."""
    _layer_send(group, {"type": "live.event", "text": orjson.dumps(event).decode()})


def send_control(group: str, message: dict[str, Any]) -> None:
    """A message for the consumers themselves (e.g. ``live.join``), not for the client."""
    _layer_send(group, message)


def publish(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one),
    so no client hears of a change that was rolled back. ``at`` is the commit time (Unix
    seconds): what a client measures delivery latency from."""
    transaction.on_commit(lambda: send_now(group, {**event, "at": round(time.time(), 6)}))


@dataclass(frozen=True)
class _Changes:
    """Changes behind one key not yet sent: commit times of the first and the last."""

    group: str
    build: Builder
    earliest: float
    latest: float


class Coalescer:
    """At most one frame per key per ``interval`` seconds: in this process (``LocalWindows``),
    or in all the processes that share ``SharedWindows``. Keys are strings like
    ``progress.12``; the builder runs when the frame is sent.

    Frames are built and sent by one long-lived daemon thread, never by the request that
    caused them (a progress frame costs a few aggregate queries), and that thread keeps one
    database connection only while it builds a round of frames.
    """

    def __init__(self, interval: float, windows: Windows | None = None) -> None:
        self.interval = interval
        self.windows = windows or LocalWindows()
        self._wake = threading.Condition()
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, _Changes] = {}
        self._thread: threading.Thread | None = None

    def submit(self, key: str, group: str, build: Builder) -> None:
        """A change behind ``key`` committed now; ``at`` of the frame that carries it is the
        earliest commit it merges."""
        committed = time.time()
        with self._wake:
            before = self._pending.get(key)
            earliest = before.earliest if before is not None else committed
            self._pending[key] = _Changes(group, build, earliest, committed)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="live-frames", daemon=True)
                self._thread.start()
            elif before is not None:
                # The key's frame is waiting already, and the thread knows when it is due:
                # waking it (a thread switch per submission, under load) would change nothing.
                return
            self._wake.notify()

    def _due(self, now: float) -> tuple[dict[str, tuple[_Changes, float]], float | None]:
        """Frames whose quiet period is over (with when the one before was sent), and how
        long until the next one is."""
        due: dict[str, tuple[_Changes, float]] = {}
        wait = None
        for key, changes in self._pending.items():
            before = self._last_sent.get(key, float("-inf"))
            ready_at = before + self.interval
            if ready_at <= now:
                due[key] = (changes, before)
            else:
                wait = ready_at - now if wait is None else min(wait, ready_at - now)
        for key in due:
            del self._pending[key]
            self._last_sent[key] = now
        return due, wait

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due, wait = self._due(now)
                if not due and self._pending:  # frames waiting out their quiet period
                    self._wake.wait(timeout=wait)
                    continue
            if not due:
                # Idle: hand the connection back (to the pool where there is one), so an
                # idle thread holds no database session; while frames keep coming it keeps it.
                connections.close_all()
                with self._wake:
                    if not self._pending:
                        self._wake.wait(timeout=60.0)
                continue
            for key, (changes, before) in due.items():
                left = self.windows.open(key, self.interval)
                if left > 0:  # another process sent this key's frame within the interval
                    self._defer(key, changes, left)
                    continue
                if not self._send(key, changes.group, changes.build, changes.earliest):
                    # Nothing new to send: no quiet period for clients, but the next look
                    # (a few aggregate queries) waits a fraction of one.
                    self.windows.reopen(key)
                    with self._wake:
                        self._last_sent[key] = max(before, now - self.interval * (1 - RECHECK))

    def _defer(self, key: str, changes: _Changes, left: float) -> None:
        """Another process started ``key``'s quiet period ``interval - left`` seconds ago and
        built its frame after that: the changes committed before then are in it. The rest
        wait for the end of the period, counted (at worst) from its start."""
        started = time.time() - (self.interval - left) - SHARED_CLOCK_SLACK
        with self._wake:
            later = self._pending.get(key)
            if started <= changes.latest:
                merged = _Changes(
                    changes.group, changes.build, max(changes.earliest, started), changes.latest
                )
                if later is not None:  # a change came meanwhile: one entry, earliest first
                    merged = _Changes(later.group, later.build, merged.earliest, later.latest)
                self._pending[key] = merged
            self._last_sent[key] = time.monotonic() + left - self.interval

    def _send(self, key: str, group: str, build: Builder, committed: float) -> bool:
        """Build and send one frame; False when there was nothing (new) to send. A frame
        nobody is connected to hear is not built (a progress frame is a few aggregate
        queries): whoever connects later gets the state in their snapshot."""
        if not listening(group):
            return False
        try:
            event = build()
        except Exception:  # a frame that cannot be built is skipped, never raised at a caller
            log.exception("live frame for %s failed", group)
            return False
        if event is None or not self.windows.is_new(key, event):
            return False
        send_now(group, {**event, "at": round(committed, 6)})
        return True

    def forget(self) -> None:
        """Drop pending frames and timings (tests)."""
        with self._wake:
            self._pending.clear()
            self._last_sent.clear()
            self.windows.forget()


class Windows(Protocol):
    """Where a coalescer keeps each key's quiet period and the last frame it sent."""

    def open(self, key: str, interval: float) -> float:
        """Start ``key``'s quiet period and return 0, or return the seconds left of one
        another process started."""

    def reopen(self, key: str) -> None:
        """End ``key``'s quiet period (its frame said nothing new, so was not sent)."""

    def is_new(self, key: str, event: dict[str, Any]) -> bool:
        """Whether ``event`` differs from the last frame sent for ``key``, recording it."""

    def forget(self) -> None:
        """Drop what this process remembers (tests)."""


class LocalWindows:
    """One process alone: its own timings are the quiet periods, its last frames in memory."""

    def __init__(self) -> None:
        self._last_event: dict[str, dict[str, Any]] = {}

    def open(self, key: str, interval: float) -> float:
        return 0.0

    def reopen(self, key: str) -> None:
        return None

    def is_new(self, key: str, event: dict[str, Any]) -> bool:
        if self._last_event.get(key) == event:
            return False
        self._last_event[key] = event
        return True

    def forget(self) -> None:
        self._last_event.clear()


class SharedWindows:
    """Quiet periods and last frames of coalesced keys, kept in Redis for all the processes
    of a deployment. Redis being unreachable makes each process coalesce on its own (frames
    still go out; there are simply more of them), never drops a frame."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = f"{prefix}:live:"
        self.errors = (redis.RedisError, OSError)

    def _ask(self, command: Callable[[], T], unavailable: T) -> T:
        """``command``'s answer, or ``unavailable`` (what a lone process would do) when Redis
        cannot be reached."""
        try:
            return command()
        except self.errors as exc:
            log.warning("live coalescing on Redis unavailable: %r", exc)
            return unavailable

    def open(self, key: str, interval: float) -> float:
        window = self.prefix + key

        def both() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(window, b"1", nx=True, px=max(round(interval * 1000), 1))
            pipe.pttl(window)
            return list(pipe.execute())

        opened, left_ms = self._ask(both, [True, 0])
        if opened:
            return 0.0
        # The period may have ended between the two commands (-2): look again at once.
        return max(int(left_ms), 1) / 1000

    def reopen(self, key: str) -> None:
        self._ask(lambda: self.redis.delete(self.prefix + key), None)

    def is_new(self, key: str, event: dict[str, Any]) -> bool:
        digest = hashlib.blake2b(
            orjson.dumps(event, option=orjson.OPT_SORT_KEYS), digest_size=16
        ).digest()
        last = f"{self.prefix}{key}:last"
        before = self._ask(lambda: self.redis.set(last, digest, ex=3600, get=True), None)
        return before is None or before != digest

    def forget(self) -> None:
        return None  # Redis's state belongs to the deployment, not to this process


_coalescer: Coalescer | None = None


def coalescer() -> Coalescer:
    global _coalescer
    if _coalescer is None:
        shared = None
        if settings.REDIS_URL:
            shared = SharedWindows(settings.REDIS_URL, settings.REDIS_PREFIX)
        _coalescer = Coalescer(settings.LIVE_COALESCE_SECONDS, shared)
    return _coalescer


def publish_coalesced(key: str, group: str, build: Builder) -> None:
    """After commit, send the frame ``build()`` makes to ``group``, coalesced by ``key``."""
    transaction.on_commit(lambda: coalescer().submit(key, group, build))


os.register_at_fork(after_in_child=_forget_inherited)
