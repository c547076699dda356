"""WebSocket authentication (session cookie, ``?token=`` or an ``Authorization`` header) and
the base consumer every live channel builds on."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.authtoken.models import Token

from crowd.layers import LayerUnavailable, drive
from crowd.live import remember_loop

logger = logging.getLogger(__name__)

# Close codes, in the 4000-4999 range applications own; modelled on the HTTP statuses.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# RFC 6455's "Try Again Later": the channel layer cannot reach Redis, so the connection could
# not join its groups; a client connects again after a pause (and gets a fresh snapshot).
CLOSE_TRY_AGAIN_LATER = 1013


@database_sync_to_async
def _user_for_token(key: str) -> Any:
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


def _token_from_scope(scope: dict[str, Any]) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "token" and key:
                return key.strip()
    return None


class TokenAuthMiddleware(BaseMiddleware):
    """A token, when given, decides who the connection is; a bad token is anonymous (and the
    consumer closes it), never a fall-back to the session."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = _token_from_scope(scope)
        if key is not None:
            scope = dict(scope, user=await _user_for_token(key))
        return await super().__call__(scope, receive, send)


def auth_stack(inner: Any) -> Any:
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


class BrowserOriginValidator(OriginValidator):
    """Refuses a handshake whose Origin is not one of ALLOWED_HOSTS.

    Browsers always send Origin on a WebSocket handshake, so this stops another site's page
    from riding a worker's session cookie. Scripts send none and authenticate with a token,
    which a foreign page cannot read, so a missing Origin is let through.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or bool(self.validate_origin(parsed_origin))


def origin_checked(inner: Any) -> Any:
    return BrowserOriginValidator(inner, list(settings.ALLOWED_HOSTS))


class _Refusals:
    """New connections refused because the channel layer cannot reach Redis: logged once
    when they start and once when a connection is taken again, not once per attempt."""

    since: float | None = None

    @classmethod
    def refused(cls, error: LayerUnavailable) -> None:
        if cls.since is None:
            cls.since = time.monotonic()
            logger.warning("new live connections refused with 1013 (try again later): %s", error)

    @classmethod
    def taken(cls) -> None:
        if cls.since is not None:
            logger.info("live connections taken again after %.1f s", time.monotonic() - cls.since)
            cls.since = None


async def _try_again_later(receive: Any, send: Any) -> None:
    """Answer a handshake with an accept and a close with 1013 (as 4401/4403 are sent: a
    refused handshake carries no reason), then wait for the client to go."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client went before its handshake was read
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
    while message["type"] != "websocket.disconnect":
        message = await receive()


class AuthenticatedConsumer(AsyncJsonWebsocketConsumer):
    """Accepts only authenticated users of the given roles; forwards group events as JSON.

    Refused connections are accepted and then closed with 4401/4403 so that the client sees
    why (a handshake refusal carries no reason), and with 1013 (try again later) when the
    channel layer cannot reach Redis: the database is up, but the live events cannot flow.
    Subclasses set ``roles`` and implement ``groups_for`` and ``snapshot``.
    """

    roles: tuple[str, ...] = ()
    # Group messages not yet handled, when handling them in order means waiting; None when
    # idle (see ``_deliver``).
    _backlog: deque[dict[str, Any]] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' consumer, which makes its channel in the layer before it reads the
        handshake: when the layer cannot reach Redis for that, the handshake is answered here
        with 1013 instead of failing as a 500 with an unhandled exception. (Once it has its
        channel, ``connect`` refuses by itself when joining its groups fails.)"""
        try:
            await super().__call__(scope, receive, send)
        except LayerUnavailable as error:
            if hasattr(self, "channel_name"):
                raise
            _Refusals.refused(error)
            await _try_again_later(receive, send)

    async def connect(self) -> None:
        remember_loop()
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if self.roles and user.role not in self.roles:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        allowed_groups = await self.groups_for(user)
        if allowed_groups is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        attach = getattr(self.channel_layer, "attach", None)
        if attach is not None:  # the embedded layer: group messages by a direct call
            self._backlog = deque()  # held until the snapshot is out
            attach(self.channel_name, self._deliver)
        self.joined: list[str] = []
        try:
            for group in allowed_groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.joined.append(group)
        except LayerUnavailable as error:
            # ``disconnect`` leaves the groups joined so far once the client has gone.
            _Refusals.refused(error)
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        _Refusals.taken()
        for event in await self.snapshot(user):
            await self.send_json(event)
        # Events that came while the snapshot was read follow it, in order.
        self._pump()

    def _deliver(self, message: dict[str, Any]) -> None:
        """A group message from the embedded layer, handled at once unless an earlier one is
        still on its way (its handler waiting on the database, or on a full socket buffer):
        then after it, so a client sees events in the order they were sent."""
        if self._backlog is not None:
            self._backlog.append(message)
            return
        self._backlog = deque([message])
        self._pump()

    def _pump(self) -> None:
        while self._backlog:
            if not drive(self.dispatch(self._backlog.popleft()), then=self._pump):
                return  # resumed by ``then`` when that one is done
        self._backlog = None

    async def disconnect(self, code: int) -> None:
        detach = getattr(self.channel_layer, "detach", None)
        if detach is not None:
            detach(self.channel_name)
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its hop to the sync thread (``aclose_old_connections``)
        before every message: a frame fanned out to a thousand clients made a thousand hops,
        one at a time. Database work here goes through ``database_sync_to_async``, which
        closes stale connections on its own thread."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def live_event(self, message: dict[str, Any]) -> None:
        """Group messages of type ``live.event`` carry one event, encoded once by the sender
        (``text``) for all the members of a group."""
        if "text" in message:
            await self.send(text_data=message["text"])
        else:
            await self.send_json(message["event"])

    async def groups_for(self, user: Any) -> list[str] | None:
        """The groups this user joins, or None to refuse the connection."""
        return []

    async def snapshot(self, user: Any) -> list[dict[str, Any]]:
        """Events sent right after connecting, before any update."""
        return []
