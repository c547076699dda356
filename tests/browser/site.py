"""The app served as `make demo` serves it (uvicorn, embedded default) for the page tests,
with a small HTTP client for the set-up the pages themselves are not under test for."""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.e2e.server import LiveServer, live_server, manage, server_env
from tests.images import corrupt_png, encode, scene
from tests.plugins.services import free_port

MANAGER = ("pages-manager", "Kestrel-orbit-4217")
CLIENT = ("pages-client", "Lantern-quill-7731")


@dataclass
class Site:
    server: LiveServer
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, username: str, password: str) -> str:
        if username not in self.tokens:
            status, body = self.server.request(
                "POST", "/api/v1/auth/token/", {"username": username, "password": password}
            )
            assert status == 200, body
            self.tokens[username] = body["token"]
        return self.tokens[username]

    def call(self, method: str, path: str, body: Any = None, *, as_: tuple[str, str]) -> Any:
        status, data = self.server.request(method, path, body, token=self.token(*as_))
        assert 200 <= status < 300, (method, path, status, data)
        return data

    def worker(self, name: str) -> tuple[str, str]:
        credentials = (name, f"pw-{uuid.uuid4().hex}")
        status, body = self.server.request(
            "POST",
            "/api/v1/auth/register/",
            {"username": name, "password": credentials[1], "email": f"{name}@example.org"},
        )
        assert status == 201, body
        return credentials

    def upload(self, project: int, files: dict[str, bytes]) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/api/v1/projects/{project}/images/",
            files=[("files", (name, io.BytesIO(data))) for name, data in files.items()],
            headers={"Authorization": f"Token {self.token(*MANAGER)}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def project(self, images: int = 3, **fields: Any) -> dict[str, Any]:
        """A started bbox project of ``images`` whole-image tasks (no gold, no tiles)."""
        data = {
            "name": f"Cars {uuid.uuid4().hex[:6]}",
            "kind": "bbox",
            "labels": [{"name": "car", "color": "#e6194b"}, {"name": "person", "color": "#3cb44b"}],
            "instructions": "Draw a tight box around every car and every person.",
            "min_overlap": 1,
            "max_overlap": 1,
            "gold_rate": 0,
            "tile_size": 0,
            "reward": "0.05",
            **fields,
        }
        project = self.call("POST", "/api/v1/projects/", data, as_=MANAGER)
        report = self.upload(
            project["id"], {f"scene{i}.jpg": encode(scene(640, 480, seed=i)) for i in range(images)}
        )
        assert report["created"] == images, report
        self.wait_ready(project["id"], images)
        return self.call("POST", f"/api/v1/projects/{project['id']}/start/", as_=MANAGER)

    def wait_ready(self, project: int, images: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            progress = self.call("GET", f"/api/v1/projects/{project}/progress/", as_=MANAGER)
            if progress["images"]["ready"] + progress["images"]["failed"] >= images:
                return
            time.sleep(0.2)
        raise AssertionError(f"images of project {project} not processed in {timeout} s")


def crowd(site: Site, project: int, workers: int, stop: threading.Event) -> list[threading.Thread]:
    """Workers answering through the HTTP API (one box each), until the project runs dry or
    ``stop`` is set: the traffic a live dashboard shows."""

    def work(name: str) -> None:
        credentials = site.worker(name)
        token = site.token(*credentials)
        while not stop.is_set():
            status, lease = site.server.request(
                "POST", f"/api/v1/projects/{project}/assignments/next/", token=token
            )
            if status == 204:
                return
            assert status == 201, lease
            time.sleep(0.3)
            status, body = site.server.request(
                "POST",
                f"/api/v1/assignments/{lease['id']}/submit/",
                {"annotations": [{"label": "car", "bbox": [40, 40, 120, 80]}]},
                token=token,
            )
            assert status == 200, body

    threads = [
        threading.Thread(target=work, args=(f"crowd-{uuid.uuid4().hex[:8]}",), daemon=True)
        for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    return threads


def corrupt_files() -> dict[str, bytes]:
    return {"broken.png": corrupt_png()}


def site_running(**overrides: str) -> Iterator[Site]:
    """The site on a database of its own, with ``overrides`` in its environment; its address
    is its ``PUBLIC_URL`` (what ML backends fetch images from)."""
    # Many accounts sign up and log in from one address within a minute here.
    # A database of its own: each module that serves the site creates the same accounts.
    var_dir = tempfile.mkdtemp(prefix="crowd-pages-var-")
    port = free_port()
    atexit.register(shutil.rmtree, var_dir, ignore_errors=True)
    env = server_env(
        VAR_DIR=var_dir,
        THROTTLE_REGISTER="1000/minute",
        THROTTLE_AUTH="1000/minute",
        THROTTLE_NEXT="1000/minute",
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        **overrides,
    )
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")
    manage(env, "createuser", MANAGER[0], "--role", "manager", "--password", MANAGER[1])
    manage(env, "createuser", CLIENT[0], "--role", "client", "--password", CLIENT[1])
    with live_server(env, port=port) as server:
        yield Site(server, env)
