"""The embedded default's channel layer: Channels' in-memory layer, made to scale with the
number of connected clients.

The stock layer walks every channel and every group membership on each ``receive`` and
``group_send`` to drop expired messages: with a thousand connected clients, one frame sent to
all of them costs a million steps. Here that clean-up runs at most once a second, and a group
send copies the message once and puts it on each member's queue directly instead of one task
and one deep copy per member. Consumers treat messages as read-only, so sharing the copy is
safe.

A consumer living in this process may also ``attach`` a sink for its channel: a group send
then hands each attached member the message by a plain call (see :func:`drive`) instead of a
queue put that wakes the consumer's receive task, a task switch per member and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from copy import deepcopy
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _consistent_hash, _wrap_close, decode_hosts
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CLEAN_EVERY_SECONDS = 1.0
logger = logging.getLogger(__name__)
# What "Redis does not answer" looks like to redis-py: refused, reset, closed, timed out.
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# A command can also fail on a connection Redis has closed before redis-py noticed: under
# uvloop the write raises a RuntimeError ("the handler is closed") until the layer's reader
# finds the connection closed and reconnects; and when the reader's disconnect tears the
# shared connection down while a command is being written on it, redis-py's write meets
# its writer gone (an AttributeError on None).
COMMAND_FAILED = (*REDIS_UNREACHABLE, RuntimeError, AttributeError)

Sink = Callable[[dict[str, Any]], None]


class LayerUnavailable(Exception):
    """The channel layer cannot reach Redis now: a channel or a group membership could not be
    made (and nothing of it is kept). The live connection asking for it should come back
    later; the layer subscribes again by itself once Redis answers."""


def drive(coro: Coroutine[Any, Any, Any], then: Callable[[], None] | None = None) -> bool:
    """Run ``coro`` at once, in the caller's turn of the event loop, until it first waits;
    what follows resumes when the awaited future is done (as a task would run it, without
    the task). Returns True when it finished at once; otherwise ``then`` is called once it
    has. Sending a frame to a writable WebSocket never waits, so a frame for a thousand
    clients is a thousand calls in one turn rather than a thousand scheduled task steps; a
    slow client whose socket buffer is full waits on its own without holding up the rest."""
    try:
        waited = coro.send(None)
    except StopIteration:
        return True
    except OSError as err:  # the client went away while the frame was on its way
        logger.debug("live frame not delivered: %r", err)
        return True
    except Exception:
        logger.exception("live frame delivery failed")
        return True

    def resume(_: object = None) -> None:
        if drive(coro, then) and then is not None:
            then()

    if waited is None:  # a bare yield (``asyncio.sleep(0)``): continue on the next turn
        asyncio.get_running_loop().call_soon(resume)
    else:
        waited._asyncio_future_blocking = False
        waited.add_done_callback(resume)
    return False


class DirectDelivery:
    """A layer's group messages for consumers of this process that ``attach`` a sink: each
    is handed the message by a plain call (on the event loop) instead of a queue put that
    wakes its receive task; the other members' messages are queued as the layer does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sinks: dict[str, Sink] = {}

    def attach(self, channel: str, sink: Sink) -> None:
        """Group messages for ``channel`` go to ``sink`` from now."""
        self.sinks[channel] = sink

    def detach(self, channel: str) -> None:
        self.sinks.pop(channel, None)

    def hand_over(
        self,
        members: list[str],
        message: Callable[[], dict[str, Any]],
        enqueue: Callable[[str], None],
    ) -> None:
        """One group message to ``members``: ``message()`` (made once, on first need) to the
        attached ones, ``enqueue(channel)`` for the rest. Consumers treat messages as
        read-only, so they share it."""
        made: dict[str, Any] | None = None
        for channel in members:
            sink = self.sinks.get(channel)
            if sink is None:
                enqueue(channel)
                continue
            if made is None:
                made = message()
            sink(made)


class EmbeddedChannelLayer(DirectDelivery, InMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < CLEAN_EVERY_SECONDS:
            return
        self._cleaned_at = now
        super()._clean_expired()

    def has_listeners(self, group: str) -> bool:
        """Whether a consumer of this process is in ``group`` (callable from any thread)."""
        return bool(self.groups.get(group))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = list(self.groups.get(group, {}))
        if not members:
            return
        message = deepcopy(message)
        item = (time.time() + self.expiry, message)

        def enqueue(channel: str) -> None:
            queue = self.channels.setdefault(
                channel, asyncio.Queue(maxsize=self.get_capacity(channel))
            )
            # A full queue drops the frame for that member, as the stock layer does.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(item)

        self.hand_over(members, lambda: message, enqueue)


class RedisBroadcastLayer(RedisPubSubChannelLayer):
    """Production's channel layer: channels_redis's pub/sub layer, with direct delivery.

    A group message is published once to Redis and each process with members in the group
    receives it once (Channels' list-based Redis layer instead pushes one copy per member
    into Redis and pops them one by one: a frame to a thousand clients was a thousand Redis
    round trips, and under load its backlog grew to seconds). Delivery is at most once, as a
    live event needs: a client that was not connected gets the state in its next snapshot.

    As in :class:`EmbeddedChannelLayer`, a consumer may ``attach`` a sink: group messages for
    its channel are then decoded once per process and handed to each attached member by a
    plain call instead of a queue put and a task wake-up per member.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hosts = decode_hosts(kwargs.get("hosts"))
        self._prefix = kwargs.get("prefix", "asgi")
        self._clients: dict[int, Any] = {}

    def _client(self, channel: str) -> Any:
        """A plain (blocking, thread-safe) Redis client for ``channel``'s shard: a command
        from any thread, with no event loop."""
        import redis

        shard = _consistent_hash(channel, len(self._hosts))
        client = self._clients.get(shard)
        if client is None:
            client = redis.Redis.from_url(
                self._hosts[shard]["address"], socket_timeout=1.0, socket_connect_timeout=1.0,
                retry_on_error=[RedisConnectionError],
            )  # fmt: skip
            self._clients[shard] = client
        return client

    def _group_channel(self, group: str) -> str:
        return f"{self._prefix}__group__{group}"  # as channels_redis names it

    def has_listeners(self, group: str) -> bool:
        """Whether any process has a consumer in ``group``: Redis counts the subscribers of
        the group's channel (one command, from any thread). True when Redis cannot say, so
        a frame is never dropped for want of an answer."""
        channel = self._group_channel(group)
        try:
            counts = self._client(channel).pubsub_numsub(channel)
        except (*COMMAND_FAILED, OSError):
            return True
        return bool(counts and counts[0][1])

    def publish_now(self, group: str, message: dict[str, Any]) -> None:
        """``group_send`` from the calling thread, done when Redis has the message: one
        PUBLISH on a plain connection, no event loop and no hand-over to the server's (a
        request thread's frame used to cross to the loop's thread and back through the
        interpreter lock). Raises what the command raised."""
        channel = self._group_channel(group)
        self._client(channel).publish(channel, self.serialize(message))

    def _get_layer(self) -> _BroadcastLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _BroadcastLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer

    async def discard_channel(self, channel: str) -> None:
        """Forget a channel made with ``new_channel`` whose receiver is done (a health check),
        so its Redis subscription does not outlive it."""
        await self._get_layer().discard_channel(channel)


def reconnecting(host: dict[str, Any]) -> dict[str, Any]:
    """``host``'s connection settings, with a command that fails on a connection Redis has
    closed tried once more on a new connection. After Redis restarts, each process's pooled
    publishing connection is still the old one until it is used: without the retry, the
    first frame a process sends afterwards is lost (and its first health check fails)."""
    return {"retry_on_error": [RedisConnectionError], **host}


class _BroadcastLoopLayer(DirectDelivery, RedisPubSubLoopLayer):
    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts, **kwargs)
        self._shards = [_BroadcastShard(reconnecting(host), self) for host in decode_hosts(hosts)]

    async def discard_channel(self, channel: str) -> None:
        if self.channels.pop(channel, None) is not None:
            await self._get_shard(channel).unsubscribe(channel)

    async def _subscribe_to_channel(self, channel: str) -> None:
        """channels_redis's, without keeping the channel's queue when Redis cannot be reached:
        the connection it was for is refused and never receives from it (each refused
        connection left one behind, for the life of the process)."""
        try:
            await super()._subscribe_to_channel(channel)
        except LayerUnavailable:
            self.channels.pop(channel, None)
            raise

    async def group_add(self, group: str, channel: str) -> None:
        """channels_redis's, without keeping the membership when Redis cannot be reached."""
        try:
            await super().group_add(group, channel)
        except LayerUnavailable:
            name = self._get_group_channel_name(group)
            members = self.groups.get(name)
            if members is not None:
                members.discard(channel)
                if not members:
                    del self.groups[name]
            raise


class _BroadcastShard(RedisSingleShardConnection):
    """One Redis connection's subscriptions. While Redis cannot be reached, a new subscription
    fails with :class:`LayerUnavailable`, one that ends is forgotten all the same (and not
    renewed when the connection comes back), and the outage is logged once instead of a
    traceback a second."""

    channel_layer: _BroadcastLoopLayer

    async def subscribe(self, channel: str) -> None:
        try:
            await super().subscribe(channel)
        except COMMAND_FAILED as error:
            raise LayerUnavailable(f"Redis unreachable: {error}") from error

    async def unsubscribe(self, channel: str) -> None:
        """channels_redis's, except that the subscription is forgotten at once, and also when
        Redis cannot be reached (it went with the connection). redis-py forgets one only when
        Redis confirms it, and after a reconnect subscribes again to every one it still has:
        those ended while Redis was down (the command failed, or went into a connection Redis
        had closed) came back with it, for channels nobody receives from."""
        async with self._lock:
            if channel not in self._subscribed_to:
                return
            self._ensure_redis()
            self._ensure_receiver()
            with contextlib.suppress(*COMMAND_FAILED):
                await self._pubsub.unsubscribe(channel)
            for key in (channel, channel.encode()):
                self._pubsub.channels.pop(key, None)
            self._subscribed_to.discard(channel)

    async def _do_receiving(self) -> None:
        """channels_redis's receive loop: messages as they come, and after a failure another
        try a second later, when redis-py reconnects and subscribes again."""
        down_since: float | None = None
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.1
                    )
                    if down_since is not None:
                        logger.info(
                            "channel layer: Redis reachable again after %.1f s, subscribed again",
                            time.monotonic() - down_since,
                        )
                        down_since = None
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except REDIS_UNREACHABLE as error:
                if down_since is None:
                    down_since = time.monotonic()
                    logger.warning(
                        "channel layer: Redis unreachable (%s: %s); live frames are not "
                        "delivered and new live connections are refused until it answers",
                        type(error).__name__,
                        error,
                    )
                await asyncio.sleep(1)
            except Exception:
                logger.exception("Unexpected exception in the channel layer's receive task")
                await asyncio.sleep(1)

    def _receive_message(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        members = layer.groups.get(name)
        if members is None:  # a message for one channel, or for a group left meanwhile
            super()._receive_message(message)
            return
        data = message["data"]

        def enqueue(channel: str) -> None:
            if channel in layer.channels:
                layer.channels[channel].put_nowait(data)

        # A copy of the members: a sink may make its consumer leave groups.
        layer.hand_over(list(members), lambda: layer.channel_layer.deserialize(data), enqueue)
