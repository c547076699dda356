"""Two machines: two server groups, each a uvicorn web process and a ``manage.py rundramatiq``
job worker with a local directory of its own (VAR_DIR, so MEDIA_ROOT too), sharing one
PostgreSQL database, one Redis and one SeaweedFS bucket, as a deployment on two hosts does.

A project is created, filled and started through node A, worked over HTTP through node B,
exported through B and downloaded through A (following the presigned redirect to the bucket);
every image is fetched through both. Nothing of it is on either node's disk."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import images
from tests.e2e.server import manage, server_env
from tests.plugins.services import Server
from tests.reliability.processes import JobWorker, WebServer, job_worker, running, web_server

pytestmark = pytest.mark.postgres

PASSWORD = "two-nodes-password-42"
IMAGES = 4
WORKERS = 2


class Node:
    """One machine's processes: the web server a client talks to, and its job worker."""

    def __init__(self, name: str, web: WebServer, jobs: JobWorker, var_dir: Path) -> None:
        self.name, self.web, self.jobs, self.var_dir = name, web, jobs, var_dir
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy from the environment between test and node

    def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Token {token}"} if token else {}
        kwargs.setdefault("allow_redirects", False)
        return self.http.request(method, self.web.url + path, headers=headers, timeout=30, **kwargs)


def _bucket(seaweedfs_server: Server) -> tuple[str, Any]:
    import boto3
    from botocore.config import Config

    keys = seaweedfs_server.extra
    client = boto3.client(
        "s3", endpoint_url=seaweedfs_server.url, aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"], region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )  # fmt: skip
    name = f"crowd-nodes-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name, client


def _keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _wait(what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return result


@pytest.fixture
def nodes(
    database_url: str, redis_server: Server, seaweedfs_server: Server, tmp_path: Path
) -> Iterator[tuple[Node, Node, str, Any]]:
    bucket, client = _bucket(seaweedfs_server)
    shared = {
        # What every machine of a deployment shares...
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"crowd-nodes-{uuid.uuid4().hex[:8]}",
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": seaweedfs_server.url,
        "AWS_ACCESS_KEY_ID": seaweedfs_server.extra["access_key"],
        "AWS_SECRET_ACCESS_KEY": seaweedfs_server.extra["secret_key"],
        "AWS_S3_REGION_NAME": "us-east-1",
        "SECRET_KEY": secrets.token_urlsafe(50),
    }
    envs = {}
    for name in ("a", "b"):
        var_dir = tmp_path / f"node-{name}"  # ...and what each keeps to itself
        envs[name] = server_env(**shared, VAR_DIR=str(var_dir))
    manage(envs["a"], "migrate", "--noinput")
    manage(envs["a"], "createuser", "boss", "--role", "manager", "--password", PASSWORD)
    for i in range(WORKERS):
        manage(envs["b"], "createuser", f"ann{i}", "--role", "worker", "--password", PASSWORD)
    with (
        running(job_worker(envs["a"])) as jobs_a,
        running(job_worker(envs["b"])) as jobs_b,
        web_server(envs["a"]) as web_a,
        web_server(envs["b"]) as web_b,
    ):
        jobs_a.wait_ready()
        jobs_b.wait_ready()
        yield (
            Node("A", web_a, jobs_a, Path(envs["a"]["VAR_DIR"])),
            Node("B", web_b, jobs_b, Path(envs["b"]["VAR_DIR"])),
            bucket,
            client,
        )


def _token(node: Node, username: str) -> str:
    response = node.call("POST", "/api/v1/auth/token/", json={"username": username,
                                                              "password": PASSWORD})  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _fetch_through(node: Node, path: str, token: str) -> bytes:
    """What a client of ``node`` gets for a file: the node's redirect, then the bucket."""
    redirect = node.call("GET", path, token)
    assert redirect.status_code == 302, (node.name, path, redirect.text)
    location = redirect.headers["Location"]
    assert "X-Amz-Signature=" in location
    assert not location.startswith(node.web.url)  # the bytes never pass through the node
    fetched = requests.get(location, timeout=30)
    assert fetched.status_code == 200, fetched.text
    return fetched.content


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_a_project_made_on_one_node_is_worked_exported_and_downloaded_on_the_other(
    nodes: tuple[Node, Node, str, Any],
) -> None:
    a, b, bucket, client = nodes
    for node in (a, b):
        health = node.call("GET", "/healthz").json()
        assert health["storage"]["ok"] is True, health
        assert health["database"]["vendor"] == "postgresql"

    # Node A: the manager creates the project, uploads the images and starts it.
    boss = _token(a, "boss")
    created = a.call(
        "POST", "/api/v1/projects/", boss,
        json={"name": "Two nodes", "kind": "bbox", "labels": ["car", "tree"],
              "min_overlap": WORKERS, "max_overlap": WORKERS, "gold_rate": 0,
              "tile_size": 0, "reward": "0.05"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    uploads = {f"street-{i}.jpg": images.jpeg(seed=100 + i) for i in range(IMAGES)}
    response = a.call(
        "POST", f"/api/v1/projects/{project}/images/", boss,
        files=[("files", (name, data, "image/jpeg")) for name, data in uploads.items()],
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["created"] == IMAGES

    def all_ready() -> list[dict[str, Any]] | None:
        listed = a.call("GET", f"/api/v1/projects/{project}/images/", boss).json()["results"]
        statuses = {i["status"] for i in listed}
        assert "failed" not in statuses, listed
        return listed if statuses == {"ready"} and len(listed) == IMAGES else None

    listed = _wait("the images processed by a job worker", all_ready)
    started = a.call("POST", f"/api/v1/projects/{project}/start/", boss)
    assert started.status_code == 200, started.text

    # Node B: the workers ask for tasks and answer until nothing is left; each task's image
    # comes from the bucket, through B's redirect.
    answered = 0
    for i in range(WORKERS):
        token = _token(b, f"ann{i}")
        while True:
            lease = b.call("POST", f"/api/v1/projects/{project}/assignments/next/", token)
            if lease.status_code == 204:
                break
            assert lease.status_code == 201, lease.text
            task = lease.json()["task"]
            image = _fetch_through(b, task["image_url"].removeprefix(b.web.url), token)
            assert hashlib.sha256(image).hexdigest() in {
                hashlib.sha256(d).hexdigest() for d in uploads.values()
            }
            box = {"label": "car", "bbox": [10 + i, 20, 80, 60]}
            submitted = b.call(
                "POST", f"/api/v1/assignments/{lease.json()['id']}/submit/", token,
                json={"annotations": [box]},
            )  # fmt: skip
            assert submitted.status_code == 200, submitted.text
            answered += 1
    assert answered == IMAGES * WORKERS

    def all_done() -> bool:
        progress = b.call("GET", f"/api/v1/projects/{project}/progress/", boss).json()
        return bool(progress["done"] == progress["tasks"] == IMAGES)

    _wait("every task decided by a decision job", all_done)

    # Node B: the dataset version, built by whichever job worker takes it.
    requested = b.call(
        "POST", f"/api/v1/projects/{project}/exports/", boss, json={"format": "coco"}
    )
    assert requested.status_code == 202, requested.text
    export_id = requested.json()["id"]

    def export_done() -> dict[str, Any] | None:
        export = b.call("GET", f"/api/v1/exports/{export_id}/", boss).json()
        assert export["status"] != "failed", export
        return export if export["status"] == "done" else None

    export = _wait("the export built", export_done)

    # Node A: the download, through A's redirect to the bucket.
    data = _fetch_through(a, f"/api/v1/exports/{export_id}/download/", boss)
    assert hashlib.sha256(data).hexdigest() == export["sha256"]
    assert len(data) == export["size_bytes"]
    coco_file = a.var_dir.parent / "downloaded.json"
    coco_file.write_bytes(data)
    from pycocotools.coco import COCO

    coco = COCO(str(coco_file))
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == sorted(uploads)
    assert len(coco.getAnnIds()) == IMAGES
    assert {coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]} == {"car"}
    assert all(ann["num_votes"] == WORKERS for ann in coco.dataset["annotations"])

    # Every image, and its thumbnail, through either node: the same bytes as uploaded.
    by_name = {i["name"]: i for i in listed}
    for name, original in uploads.items():
        image = by_name[name]
        for node in (a, b):
            assert _fetch_through(node, f"/api/v1/images/{image['id']}/file/", boss) == original
            thumbnail = _fetch_through(node, f"/api/v1/images/{image['id']}/thumbnail/", boss)
            assert thumbnail[:2] == b"\xff\xd8"

    # The files are in the shared bucket, and on neither node's disk.
    keys = _keys(client, bucket)
    assert len([k for k in keys if k.startswith(f"projects/{project}/images/")]) == IMAGES
    assert len([k for k in keys if k.startswith(f"projects/{project}/thumbs/")]) == IMAGES
    assert _keys(client, bucket, f"exports/{project}/") == [
        f"exports/{project}/{export_id}/{export['file_name']}"
    ]
    for node in (a, b):
        assert _files_under(node.var_dir / "media") == [], node.name
    assert json.loads(data)["info"]  # a whole COCO file, not a partial one
