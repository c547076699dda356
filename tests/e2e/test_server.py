"""The app as an operator runs it: real server processes, real HTTP and WebSocket clients."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.server import ROOT, live_server, manage, server_env
from tests.plugins.services import Server


def _ws_hello(url: str, token: str) -> dict:
    with connect(f"{url}/ws/worker/?token={token}", proxy=None, open_timeout=10) as ws:
        return json.loads(ws.recv(timeout=10))


def _walk_through(server) -> None:
    status, body = server.request("GET", "/healthz")
    assert status == 200, body
    status, body = server.request(
        "POST",
        "/api/v1/auth/register/",
        {"username": "e2e-worker", "password": "e2e-long-password", "email": "w@example.org"},
    )
    assert status == 201, body
    status, body = server.request(
        "POST", "/api/v1/auth/token/", {"username": "e2e-worker", "password": "e2e-long-password"}
    )
    assert status == 200, body
    token = body["token"]
    status, me = server.request("GET", "/api/v1/me/", token=token)
    assert (status, me["role"]) == (200, "worker")
    ws_url = server.url.replace("http://", "ws://")
    assert _ws_hello(ws_url, token)["type"] == "hello"
    with (
        pytest.raises(ConnectionClosed) as closed,
        connect(f"{ws_url}/ws/worker/?token=forged", proxy=None) as ws,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


def test_embedded_default_serves_http_and_websocket() -> None:
    env = server_env()
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    out = manage(env, "seed_demo")
    assert "manager" in out
    with live_server(env) as server:
        _walk_through(server)
        # Static files come from the middleware in front of the API's, on the event loop.
        with urllib.request.urlopen(f"{server.url}/static/crowd/redoc.css", timeout=10) as css:
            assert css.status == 200
            assert css.headers["Content-Type"].startswith("text/css")
            assert css.read() == (ROOT / "crowd/static/crowd/redoc.css").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{server.url}/static/crowd/none.css", timeout=10)
        assert missing.value.code == 404
        status, body = server.request(
            "POST", "/api/v1/auth/token/", {"username": "manager", "password": "demo-manager-pass"}
        )
        assert status == 200, body


@pytest.mark.postgres
def test_production_setup_on_postgres_and_redis_with_two_processes(redis_server: Server) -> None:
    """`make serve`: PostgreSQL + Redis + several ASGI processes, on a database of its own."""
    import os

    admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    name = f"crowd_e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = server_env(
            DATABASE_URL=admin_url.rsplit("/", 1)[0] + f"/{name}", REDIS_URL=redis_server.url
        )
        manage(env, "migrate", "--noinput")
        with live_server(env, workers=2) as server:
            _walk_through(server)
            for _ in range(3):
                _, body = server.request("GET", "/healthz")
            assert body["database"]["vendor"] == "postgresql"
            assert body["channel_layer"]["backend"] == "RedisBroadcastLayer"
            # The health check's channels leave no Redis subscription behind.
            assert redis.Redis.from_url(redis_server.url).pubsub_channels("*healthz*") == []
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
