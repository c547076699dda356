from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from crowd.asgi import application
from crowd.live import publish, user_group
from crowd.ws import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from tests.factories import ManagerFactory, WorkerFactory, token_for

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")


@database_sync_to_async
def make_user(factory):
    user = factory.create()
    return user, token_for(user)


@database_sync_to_async
def session_cookie_for(user) -> bytes:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "crowd.backends.CaseInsensitiveModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return f"{settings.SESSION_COOKIE_NAME}={store.session_key}".encode()


async def connect(path: str, headers=()) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_token_in_query_gets_the_snapshot() -> None:
    worker, token = await make_user(WorkerFactory)
    ws = await connect(f"/ws/worker/?token={token}")
    hello = await ws.receive_json_from()
    assert hello == {"type": "hello", "user": {"id": worker.pk, "username": worker.username}}
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


async def test_token_in_authorization_header() -> None:
    worker, token = await make_user(WorkerFactory)
    ws = await connect("/ws/worker/", headers=[(b"authorization", f"Token {token}".encode())])
    assert (await ws.receive_json_from())["user"]["id"] == worker.pk
    await ws.disconnect()


async def test_session_cookie() -> None:
    worker, _ = await make_user(WorkerFactory)
    cookie = await session_cookie_for(worker)
    ws = await connect("/ws/worker/", headers=[(b"cookie", cookie)])
    assert (await ws.receive_json_from())["user"]["id"] == worker.pk
    await ws.disconnect()


@pytest.mark.parametrize("query", ["", "?token=forged"])
async def test_unauthenticated_is_closed_with_4401(query: str) -> None:
    ws = await connect(f"/ws/worker/{query}")
    assert await ws.receive_output() == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_a_manager_on_the_worker_channel_is_closed_with_4403() -> None:
    _, token = await make_user(ManagerFactory)
    ws = await connect(f"/ws/worker/?token={token}")
    assert await ws.receive_output() == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}


async def test_a_script_without_origin_may_connect_with_a_token() -> None:
    worker, token = await make_user(WorkerFactory)
    communicator = WebsocketCommunicator(application, f"/ws/worker/?token={token}")
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["user"]["id"] == worker.pk
    await communicator.disconnect()


async def test_a_foreign_origin_is_refused() -> None:
    _, token = await make_user(WorkerFactory)
    communicator = WebsocketCommunicator(
        application, f"/ws/worker/?token={token}", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_an_event_published_in_a_transaction_arrives_after_commit() -> None:
    worker, token = await make_user(WorkerFactory)
    ws = await connect(f"/ws/worker/?token={token}")
    await ws.receive_json_from()

    @database_sync_to_async
    def publish_then_roll_back_then_commit() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                publish(user_group(worker.pk), {"type": "balance", "amount": "rolled back"})
                raise RuntimeError
        except RuntimeError:
            pass
        with transaction.atomic():
            publish(user_group(worker.pk), {"type": "balance", "amount": "1.00"})

    await publish_then_roll_back_then_commit()
    event = await ws.receive_json_from()
    assert event.pop("at") <= time.time()
    assert event == {"type": "balance", "amount": "1.00"}
    assert await ws.receive_nothing()
    await ws.disconnect()


def test_tokens_in_urls_never_reach_the_server_logs(caplog) -> None:
    import logging

    import crowd.asgi  # noqa: F401  (installs the filter)

    logger = logging.getLogger("uvicorn.error")
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws/worker/?token=abc123&x=1")
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/ws/?a=1&TOKEN=zz9", "1.1", 200
        )
    text = caplog.text
    assert "abc123" not in text
    assert "zz9" not in text
    assert "/ws/worker/?token=[redacted]&x=1" in text
