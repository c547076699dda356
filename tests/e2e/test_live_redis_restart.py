"""Redis restarting under connected WebSocket clients: two uvicorn servers on one PostgreSQL
database and one Redis, which the test kills and starts again (empty) on the same port while
clients stay connected to both servers.

While Redis is down the servers go on serving what does not need it, and a change's frames
(which cannot go out) hold up no request. Once Redis is back and the servers have subscribed
again, the frames of new changes reach the clients that stayed connected, with figures that
take in the changes made while Redis was down; a client that connects again gets a snapshot
with the figures the HTTP API reports.

Changes before the restart go through server B, changes while Redis is down through A, and
the change after it through B again: B's publishing connection is then one Redis closed, as
in a deployment where some processes had nothing to send during the outage.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from websockets.sync.client import ClientConnection

from tests.e2e.server import (
    LiveServer,
    frames_until,
    live_server,
    manage,
    server_env,
    ws_connect,
)
from tests.plugins.services import RestartableRedis

pytestmark = pytest.mark.postgres

PASSWORD = "redis-restart-password-42"
BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]
TASKS = 8
# A request while Redis is down answers within this (a publish must not hold it up).
DOWN_REQUEST_SECONDS = 2.0
# The servers subscribe again within this of Redis being back.
RESUBSCRIBE_SECONDS = 10.0
# A frame of a change reaches the clients within this.
FRAME_SECONDS = 10.0

SEED = """
import json
from rest_framework.authtoken.models import Token
from crowd.services import user_create
tokens = {{}}
for name, role in (("boss", "manager"), ("ann", "worker"), ("bob", "worker"), ("cy", "worker")):
    user = user_create(username=name, password="{password}", role=role)
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
    for i in range({tasks})
)
Task.objects.bulk_create(
    Task(project=project, image=image, width=640, height=480, required_overlap=1)
    for image in images
)
"""

T = TypeVar("T")


def _within(seconds: float, call: Callable[[], T]) -> T:
    started = time.monotonic()
    result = call()
    took = time.monotonic() - started
    assert took < seconds, f"took {took:.2f} s"
    return result


def _ok(
    server: LiveServer, method: str, path: str, token: str, status: int = 200, within: float = 10.0
) -> Any:
    answer, body = _within(within, lambda: server.request(method, path, token=token))
    assert answer == status, body
    return body


def _progress_figures(frame: dict[str, Any], http: dict[str, Any]) -> dict[str, Any]:
    """The frame's values of the fields ``/progress/`` has (the frame adds type, project, at)."""
    return {key: frame.get(key) for key in http}


def _group_subscribers(url: str, prefix: str, groups: list[str]) -> list[int]:
    """Processes subscribed to each group (channels_redis names a group's Redis channel
    ``<prefix>__group__<group>``)."""
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return [int(n) for _, n in client.pubsub_numsub(*(f"{prefix}__group__{g}" for g in groups))]
    finally:
        client.close()


def _pong(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "ping"}))
    assert frames_until(ws, lambda f: f["type"] == "pong", timeout=DOWN_REQUEST_SECONDS)


@dataclass
class Deployment:
    a: LiveServer
    b: LiveServer
    env: dict[str, str]
    tokens: dict[str, str]


@pytest.fixture
def deployment(
    database_url: str, restartable_redis: RestartableRedis, tmp_path: Path
) -> Iterator[Deployment]:
    """Two servers on the test's database and Redis, and tokens of a manager and three workers."""
    prefix = f"crowd-restart-{uuid.uuid4().hex[:8]}"
    env = server_env(
        DATABASE_URL=database_url,
        REDIS_URL=restartable_redis.url,
        REDIS_PREFIX=prefix,
        VAR_DIR=str(tmp_path / "var"),
    )
    manage(env, "migrate", "--noinput")
    seeded = manage(env, "shell", "-c", SEED.format(password=PASSWORD))
    tokens = json.loads(seeded.strip().splitlines()[-1])
    with live_server(env) as a, live_server(env) as b:
        yield Deployment(a, b, env, tokens)


def test_live_frames_resume_after_redis_restarts(
    deployment: Deployment, restartable_redis: RestartableRedis
) -> None:
    a, b = deployment.a, deployment.b
    boss, ann, bob, cy = (deployment.tokens[name] for name in ("boss", "ann", "bob", "cy"))
    status, project = b.request(
        "POST", "/api/v1/projects/",
        {"name": "Cars", "kind": "bbox", "labels": ["car", "tree"], "min_overlap": 1,
         "max_overlap": 1, "gold_rate": 0, "tile_size": 0},
        token=boss,
    )  # fmt: skip
    assert status == 201, project
    pid = project["id"]
    manage(deployment.env, "shell", "-c", ADD_TASKS.format(project=pid, tasks=TASKS))
    _ok(b, "POST", f"/api/v1/projects/{pid}/start/", boss)

    with ExitStack() as stack:
        dashboards = [
            stack.enter_context(ws_connect(server, f"/ws/projects/{pid}/?token={boss}"))
            for server in (a, b)
        ]
        # Bob has the worker page open twice, once on each server.
        bob_tabs = [
            stack.enter_context(ws_connect(server, f"/ws/worker/?token={bob}")) for server in (a, b)
        ]
        for ws in dashboards:
            frames_until(ws, lambda f: f["type"] == "progress")
        for ws in bob_tabs:
            frames_until(ws, lambda f: f["type"] == "queue" and f["project"] == pid)

        # Before the restart: two leases through B, heard on both servers.
        ann_lease = _ok(b, "POST", f"/api/v1/projects/{pid}/assignments/next/", ann, 201)
        cy_lease = _ok(b, "POST", f"/api/v1/projects/{pid}/assignments/next/", cy, 201)
        for ws in dashboards:
            frames_until(ws, lambda f: f["type"] == "progress" and f["in_progress"] == 2)
        for ws in bob_tabs:
            frames_until(ws, lambda f: f["type"] == "queue" and f["available"] == TASKS - 2)

        restartable_redis.kill()

        # Redis down: requests that do not need it answer, at once, through A.
        done = _within(
            DOWN_REQUEST_SECONDS,
            lambda: a.request(
                "POST", f"/api/v1/assignments/{ann_lease['id']}/submit/", {"annotations": BOX},
                token=ann,
            ),
        )  # fmt: skip
        assert done == (200, {"id": ann_lease["id"], "status": "submitted", "clipped": 0})
        _ok(
            a,
            "POST",
            f"/api/v1/assignments/{cy_lease['id']}/skip/",
            cy,
            within=DOWN_REQUEST_SECONDS,
        )
        progress = _ok(
            a, "GET", f"/api/v1/projects/{pid}/progress/", boss, within=DOWN_REQUEST_SECONDS
        )
        assert (progress["done"], progress["in_progress"]) == (1, 0)
        worker_view = _ok(b, "GET", f"/api/v1/projects/{pid}/", bob, within=DOWN_REQUEST_SECONDS)
        assert worker_view["available"] == TASKS - 1
        # The health check says what is wrong, without waiting on Redis.
        status, health = _within(DOWN_REQUEST_SECONDS, lambda: a.request("GET", "/healthz"))
        assert status == 503, health
        assert health["database"]["ok"] is True
        assert health["channel_layer"]["ok"] is False
        # The clients are still connected, and the servers still answer them.
        for ws in [*dashboards, *bob_tabs]:
            _pong(ws)

        restartable_redis.start_again()
        back = time.time()

        # Both servers subscribe again to the groups their clients are in.
        groups = [f"project.{pid}", f"project.{pid}.workers", "workers"]
        deadline = time.monotonic() + RESUBSCRIBE_SECONDS
        prefix = deployment.env["REDIS_PREFIX"]
        while (subscribers := _group_subscribers(restartable_redis.url, prefix, groups)) != [2] * 3:
            assert time.monotonic() < deadline, (
                f"not subscribed again within {RESUBSCRIBE_SECONDS} s: {subscribers}"
            )
            time.sleep(0.05)

        # A change through B, the first frames B sends since Redis came back: they reach every
        # client that stayed connected, with figures that take in the changes made meanwhile.
        bob_lease = _ok(b, "POST", f"/api/v1/projects/{pid}/assignments/next/", bob, 201)
        progress = _ok(b, "GET", f"/api/v1/projects/{pid}/progress/", boss)
        assert (progress["done"], progress["in_progress"], progress["open"]) == (1, 1, TASKS - 2)
        available = _ok(b, "GET", f"/api/v1/projects/{pid}/", bob)["available"]
        assert available == TASKS - 2
        for ws in dashboards:
            frame = frames_until(
                ws,
                lambda f: f["type"] == "progress" and _progress_figures(f, progress) == progress,
                timeout=FRAME_SECONDS,
            )[-1]
            assert frame["at"] >= back
        for ws in bob_tabs:
            # Bob's lease, and the work left for him (from another thread: in either order).
            awaited = {"lease", "queue"}

            def heard(frame: dict[str, Any], awaited: set[str] = awaited) -> bool:
                if frame["type"] == "lease" and frame["assignment"] == bob_lease["id"]:
                    awaited.discard("lease")
                if frame["type"] == "queue" and frame.get("at", 0) >= back:
                    assert frame["available"] == available, frame
                    awaited.discard("queue")
                return not awaited

            frames_until(ws, heard, timeout=FRAME_SECONDS)

        # A client that connects again gets the figures the HTTP API reports.
        with (
            ws_connect(b, f"/ws/projects/{pid}/?token={boss}") as dashboard,
            ws_connect(a, f"/ws/worker/?token={bob}") as worker,
        ):
            snapshot = frames_until(dashboard, lambda f: f["type"] == "progress")[-1]
            assert _progress_figures(snapshot, progress) == progress
            hello = frames_until(worker, lambda f: f["type"] == "lease")
            queue = [f for f in hello if f["type"] == "queue" and f["project"] == pid]
            assert [f["available"] for f in queue] == [available]
            assert hello[-1]["assignment"] == bob_lease["id"]

    # Nothing crashed: both servers still run, and neither logged an unhandled exception.
    for server in (a, b):
        assert server.process.poll() is None, "a server process died"
        log = server.log.read_text(errors="replace")
        assert "Exception in ASGI application" not in log, log[-5000:]
