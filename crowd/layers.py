"""The embedded default's channel layer: Channels' in-memory layer, made to scale with the
number of connected clients.

The stock layer walks every channel and every group membership on each ``receive`` and
``group_send`` to drop expired messages: with a thousand connected clients, one frame sent to
all of them costs a million steps. Here that clean-up runs at most once a second, and a group
send copies the message once and puts it on each member's queue directly instead of one task
and one deep copy per member. Consumers treat messages as read-only, so sharing the copy is
safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from copy import deepcopy
from typing import Any

from channels.layers import InMemoryChannelLayer

CLEAN_EVERY_SECONDS = 1.0


class EmbeddedChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < CLEAN_EVERY_SECONDS:
            return
        self._cleaned_at = now
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = list(self.groups.get(group, {}))
        if not members:
            return
        item = (time.time() + self.expiry, deepcopy(message))
        for channel in members:
            queue = self.channels.setdefault(
                channel, asyncio.Queue(maxsize=self.get_capacity(channel))
            )
            # A full queue drops the frame for that member, as the stock layer does.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(item)
