"""Live events across ASGI processes: two uvicorn servers on one PostgreSQL database and one
Redis. Clients listen on process A while the work happens over HTTP on process B, so every
frame they receive has crossed the Redis channel layer."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.server import (
    LiveServer,
    frames_until,
    live_server,
    manage,
    server_env,
    ws_connect,
)
from tests.plugins.services import Server

pytestmark = pytest.mark.postgres

PASSWORD = "cross-process-password-42"
BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]
TASKS = 5

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


def _token(server: LiveServer, username: str) -> str:
    status, body = server.request(
        "POST", "/api/v1/auth/token/", {"username": username, "password": PASSWORD}
    )
    assert status == 200, body
    return str(body["token"])


def test_events_cross_processes_through_redis(
    database_url: str, redis_server: Server, tmp_path: Path
) -> None:
    env = server_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url,
        # Groups are named after database ids: a prefix of its own keeps other tests' frames out.
        REDIS_PREFIX=f"crowd-live-{uuid.uuid4().hex[:8]}",
        VAR_DIR=str(tmp_path / "var"),
    )
    manage(env, "migrate", "--noinput")
    for username, role in (("boss", "manager"), ("ann", "worker"), ("bob", "worker")):
        manage(env, "createuser", username, "--role", role, "--password", PASSWORD)

    with live_server(env) as a, live_server(env) as b:
        manager, ann, bob = (_token(b, name) for name in ("boss", "ann", "bob"))
        status, project = b.request(
            "POST",
            "/api/v1/projects/",
            {"name": "Cars", "kind": "bbox", "labels": ["car", "tree"], "min_overlap": 1,
             "max_overlap": 1, "gold_rate": 0, "tile_size": 0},
            token=manager,
        )  # fmt: skip
        assert status == 201, project
        project_id = project["id"]
        manage(env, "shell", "-c", ADD_TASKS.format(project=project_id, tasks=TASKS))
        status, body = b.request("POST", f"/api/v1/projects/{project_id}/start/", token=manager)
        assert status == 200, body

        # A worker may not listen to a project's dashboard feed.
        with (
            pytest.raises(ConnectionClosed) as refused,
            ws_connect(a, f"/ws/projects/{project_id}/?token={ann}") as ws,
        ):
            ws.recv(timeout=10)
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == 4403

        with (
            ws_connect(a, f"/ws/projects/{project_id}/?token={manager}") as dashboard,
            ws_connect(a, f"/ws/worker/?token={ann}") as ann_ws,
            ws_connect(a, f"/ws/worker/?token={bob}") as bob_ws,
        ):
            # The snapshots come after the groups are joined: once they arrive, A listens.
            first = frames_until(dashboard, lambda f: f["type"] == "progress")[-1]
            assert (first["project"], first["assignments_submitted"]) == (project_id, 0)
            for ws in (ann_ws, bob_ws):
                hello = frames_until(ws, lambda f: f["type"] == "hello")
                assert hello[-1]["type"] == "hello"

            status, lease = b.request(
                "POST", f"/api/v1/projects/{project_id}/assignments/next/", token=ann
            )
            assert status == 201, lease
            status, body = b.request(
                "POST", f"/api/v1/assignments/{lease['id']}/submit/", {"annotations": BOX},
                token=ann,
            )  # fmt: skip
            assert (status, body["status"]) == (200, "submitted"), body

            progress = frames_until(
                dashboard,
                lambda f: f["type"] == "progress" and f.get("assignments_submitted") == 1,
            )[-1]
            assert progress["project"] == project_id
            assert isinstance(progress["at"], float)
            assert progress["at"] <= time.time()

            granted = frames_until(
                ann_ws, lambda f: f["type"] == "lease" and f.get("assignment") == lease["id"]
            )[-1]
            assert granted["project"] == project_id
            assert isinstance(granted["at"], float)

            # The other worker hears that there is less work, never of ann's lease.
            seen = frames_until(
                bob_ws,
                lambda f: (
                    f["type"] == "queue"
                    and f["project"] == project_id
                    and "at" in f
                    and f["available"] == TASKS - 1
                ),
            )
            assert not [f for f in seen if f["type"] == "lease"], seen
