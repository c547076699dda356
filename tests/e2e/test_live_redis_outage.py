"""Redis down under the production set-up (PostgreSQL + Redis, a real uvicorn server): the
database is the source of truth, so a worker still gets work, and a new live connection is
told to come back later instead of failing its handshake.

The server runs the periodic sweep (``LEASE_SWEEP_SECONDS``), so a worker's first ``next`` also
asks the cache whether a sweep is scheduled; the outage starts before that first call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.server import LiveServer, frames_until, live_server, manage, server_env, ws_connect
from tests.plugins.services import RestartableRedis

pytestmark = pytest.mark.postgres

NEXT_RATE = 3  # THROTTLE_NEXT of the server: 3 a minute per worker
# A request while Redis is down answers within this.
DOWN_REQUEST_SECONDS = 2.0
# Once Redis is back, the server uses it again within this.
BACK_SECONDS = 10.0
# RFC 6455's "Try Again Later": the server cannot take the connection now.
TRY_AGAIN_LATER = 1013

SEED = """
import json
from rest_framework.authtoken.models import Token
from crowd.services import user_create
tokens = {}
for name, role in (("boss", "manager"), ("ann", "worker")):
    user = user_create(username=name, password="redis-outage-password-42", role=role)
    tokens[name] = Token.objects.create(user=user).key
print(json.dumps(tokens))
"""

# Ready images with one task each, without the image-processing jobs (no job worker runs).
ADD_TASKS = """
from tasks.models import Image, ImageStatus, Project, Task
project = Project.objects.get(pk={project})
images = Image.objects.bulk_create(
    Image(project=project, name=f"{{i}}.jpg", file=f"x/{{i}}.jpg", sha256=f"{{i:064x}}",
          format="JPEG", width=640, height=480, size_bytes=1, status=ImageStatus.READY)
    for i in range(4)
)
Task.objects.bulk_create(
    Task(project=project, image=image, width=640, height=480, required_overlap=1)
    for image in images
)
"""


@dataclass
class Site:
    server: LiveServer
    tokens: dict[str, str]
    project: int


@pytest.fixture
def site(database_url: str, restartable_redis: RestartableRedis, tmp_path: Path) -> Iterator[Site]:
    env = server_env(
        DATABASE_URL=database_url,
        REDIS_URL=restartable_redis.url,
        REDIS_PREFIX=f"crowd-outage-{uuid.uuid4().hex[:8]}",
        VAR_DIR=str(tmp_path / "var"),
        THROTTLE_NEXT=f"{NEXT_RATE}/minute",
        LEASE_SWEEP_SECONDS="30",
    )
    manage(env, "migrate", "--noinput")
    tokens = json.loads(manage(env, "shell", "-c", SEED).strip().splitlines()[-1])
    with live_server(env) as server:
        status, project = server.request(
            "POST", "/api/v1/projects/",
            {"name": "Cars", "kind": "bbox", "labels": ["car"], "min_overlap": 1,
             "max_overlap": 1, "gold_rate": 0, "tile_size": 0},
            token=tokens["boss"],
        )  # fmt: skip
        assert status == 201, project
        manage(env, "shell", "-c", ADD_TASKS.format(project=project["id"]))
        status, body = server.request(
            "POST", f"/api/v1/projects/{project['id']}/start/", token=tokens["boss"]
        )
        assert status == 200, body
        yield Site(server, tokens, project["id"])
        log = server.log.read_text(errors="replace")
    assert server.process.returncode is not None  # stopped by live_server, not crashed before
    # Nothing unhandled, and no request failed on the server's side.
    assert "Exception in ASGI application" not in log, log[-5000:]
    assert "Internal Server Error" not in log, log[-5000:]


def _timed_request(server: LiveServer, path: str, token: str) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = server.request("POST", path, token=token)
    return status, time.monotonic() - started


def test_next_gives_a_lease_while_redis_is_down_and_is_throttled_once_it_is_back(
    site: Site, restartable_redis: RestartableRedis
) -> None:
    path = f"/api/v1/projects/{site.project}/assignments/next/"
    ann = site.tokens["ann"]
    restartable_redis.kill()

    # Redis down: the worker gets a lease (their first call also checks the sweep's schedule
    # in the cache), and the same lease on every call after; the throttle does not count.
    calls = [_timed_request(site.server, path, ann) for _ in range(NEXT_RATE + 2)]
    assert [status for status, _ in calls] == [201] * (NEXT_RATE + 2)
    assert max(took for _, took in calls) < DOWN_REQUEST_SECONDS, calls

    restartable_redis.start_again()
    # Redis back: the counter counts again (from zero: Redis came back empty), and a worker
    # over the rate gets a 429.
    deadline = time.monotonic() + BACK_SECONDS
    statuses: list[int] = []
    while not statuses or statuses[-1] != 429:
        assert time.monotonic() < deadline, f"no 429 within {BACK_SECONDS} s: {statuses}"
        statuses.append(site.server.request("POST", path, token=ann)[0])
        time.sleep(0.05)
    assert set(statuses[:-1]) == {201}

    log = site.server.log.read_text(errors="replace")
    # One warning for the outage, not one per request.
    assert log.count("Redis cache unreachable") == 1, log[-5000:]
    assert "Redis cache reachable again" in log, log[-5000:]


def _closed_before_snapshot(server: LiveServer, url: str) -> int | None:
    """The close code of a connection closed before its snapshot; None if it got one."""
    with ws_connect(server, url) as ws:
        try:
            frames_until(ws, lambda f: f["type"] == "queue", timeout=DOWN_REQUEST_SECONDS)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else 1006
    return None


def test_a_websocket_connection_while_redis_is_down_is_told_to_try_again_later(
    site: Site, restartable_redis: RestartableRedis
) -> None:
    url = f"/ws/worker/?token={site.tokens['ann']}"
    with ws_connect(site.server, url) as before:
        frames_until(before, lambda f: f["type"] == "queue")

    restartable_redis.kill()
    for _ in range(3):
        try:
            ws = ws_connect(site.server, url)
        except InvalidStatus as err:
            pytest.fail(f"handshake refused: {err.response.status_code}")
        with ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DOWN_REQUEST_SECONDS)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == TRY_AGAIN_LATER

    restartable_redis.start_again()
    # Once Redis is back, a connection is taken again and gets its snapshot.
    deadline = time.monotonic() + BACK_SECONDS
    while (code := _closed_before_snapshot(site.server, url)) is not None:
        assert code == TRY_AGAIN_LATER
        assert time.monotonic() < deadline, f"connections still refused after {BACK_SECONDS} s"
        time.sleep(0.2)
