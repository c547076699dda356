"""A client generated from the server's own OpenAPI schema works a project end to end.

``openapi-python-client`` (a dev dependency; no network needed) writes a Python package from
``/api/schema/``; a manager and a worker then use only its functions and models: the manager
creates a bbox project, uploads images, starts it and downloads a COCO export, the worker
leases and answers every task. Each 2xx body must parse into a generated model, so an
operation whose schema leaves a body untyped fails here, as it would fail any client built the
same way. Operations are found by their contract path and method (operationIds are the
schema's to name); request models by the type of each function's ``body``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import httpx
import pytest
from pycocotools.coco import COCO

from tests.e2e.server import LiveServer, live_server, manage, server_env
from tests.images import jpeg

PACKAGE = "crowd_client"
PASSWORD = "generated-client-pass"
IMAGES = {f"street-{n}.jpg": (160 + 16 * n, 120) for n in range(3)}
# The generator's own post hooks (ruff) are left out: nothing to format in a throwaway package.
CONFIG = f"package_name_override: {PACKAGE}\nproject_name_override: {PACKAGE}\npost_hooks: []\n"


def generate(schema: dict[str, Any], workdir: Path) -> tuple[ModuleType, list[str]]:
    """The generated package, imported, and the generator's warnings about the schema."""
    (workdir / "schema.json").write_text(json.dumps(schema))
    (workdir / "config.yaml").write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", "schema.json",
         "--config", "config.yaml", "--meta", "none", "--output-path", PACKAGE],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    found = re.findall(r"^WARNING .*?(?=^WARNING |^If you believe|\Z)", output, re.M | re.S)
    importlib.invalidate_caches()
    return importlib.import_module(PACKAGE), [w.strip() for w in found]


@pytest.fixture
def generated_import_path(tmp_path: Path) -> Iterator[Path]:
    """A directory importable for this test only: the generated package goes when it ends."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class Api:
    """The generated package's operations by method and path, as the contract names them."""

    def __init__(self, package: ModuleType) -> None:
        self.package = package
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.endpoints: dict[tuple[str, str], ModuleType] = {}
        root = Path(package.__file__ or "").parent / "api"
        for source in sorted(root.glob("*/*.py")):
            found = re.search(r'"method": "(\w+)",\s*"url": "([^"]+)"', source.read_text())
            if found:
                name = f"{PACKAGE}.api.{source.parent.name}.{source.stem}"
                self.endpoints[(found[1].upper(), found[2])] = importlib.import_module(name)

    def endpoint(self, method: str, path: str) -> ModuleType:
        assert (method, path) in self.endpoints, f"no generated function for {method} {path}"
        return self.endpoints[(method, path)]

    def body(self, method: str, path: str, model: str) -> Any:
        """The generated model ``model``, which the operation's ``body`` must take."""
        cls = getattr(self.models, model)
        hint = typing.get_type_hints(self.endpoint(method, path).sync_detailed)["body"]
        assert cls in (typing.get_args(hint) or (hint,)), f"{method} {path}: body is {hint}"
        return cls

    def call(
        self, status: int, model: str | None, method: str, path: str, client: Any, **kwargs: Any
    ) -> Any:
        """Call the operation: it must answer ``status`` with a body the generated client
        parses into the generated model ``model`` (None: no body)."""
        response = self.endpoint(method, path).sync_detailed(client=client, **kwargs)
        self.content: bytes = response.content
        answered = (response.status_code, response.content[:300])
        assert response.status_code == status, (method, path, answered)
        if model is None:
            assert not response.content, (method, path, answered)
            return None
        assert isinstance(response.parsed, getattr(self.models, model)), (
            f"{method} {path} {status}: the generated client parsed {response.parsed!r} from "
            f"{response.content[:300]!r}"
        )
        return response.parsed


def is_model(value: object) -> bool:
    return attrs.has(type(value)) and type(value).__module__.startswith(f"{PACKAGE}.models.")


def fetch_schema(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/schema/", params={"format": "json"}, timeout=30)
    assert response.status_code == 200, response.text[:500]
    schema: dict[str, Any] = response.json()
    return schema


def test_generated_client_works_a_bbox_project(generated_import_path: Path) -> None:
    env = server_env(VAR_DIR=str(generated_import_path / "var"))
    manage(env, "migrate", "--noinput")
    manage(env, "createuser", "boss", "--role", "manager", "--password", PASSWORD)

    with live_server(env) as server:
        package, found = generate(fetch_schema(server), generated_import_path)
        # The generator reads JSON, octet-stream and text bodies only: the image files (their
        # real types, image/*) are the one thing it leaves out. Anything else is a defect.
        assert len(found) == 3, found
        for warning in found:
            assert "Unsupported content_type image/*" in warning, warning
            assert re.search(r"/api/v1/images/\{image_id\}/(file|thumbnail|signed)/", warning), (
                warning
            )
        api = Api(package)
        models = api.models
        anonymous = package.Client(base_url=server.url, raise_on_unexpected_status=True)

        def token_client(username: str) -> Any:
            path = "/api/v1/auth/token/"
            credentials = api.body("POST", path, "CredentialsInRequest")
            body = credentials(username=username, password=PASSWORD)
            token = api.call(200, "TokenOut", "POST", path, anonymous, body=body).token
            assert isinstance(token, str)
            assert token
            return package.AuthenticatedClient(
                base_url=server.url, token=token, prefix="Token", raise_on_unexpected_status=True
            )

        # --- the manager sets the project up ---------------------------------------------------
        manager = token_client("boss")
        path = "/api/v1/projects/"
        project = api.call(
            201, "ProjectManagerOut", "POST", path, manager,
            body=api.body("POST", path, "ProjectInRequest").from_dict(
                {"name": "Street boxes", "kind": "bbox", "labels": ["car", "tree"],
                 "min_overlap": 1, "max_overlap": 1, "gold_rate": 0, "tile_size": 0}
            ),
        )  # fmt: skip
        assert isinstance(project.id, int)
        assert (project.state, project.kind) == ("draft", "bbox")
        assert [label.name for label in project.labels] == ["car", "tree"]
        assert all(isinstance(label, models.LabelOut) for label in project.labels)
        project_id = project.id

        path = "/api/v1/projects/{project_id}/images/"
        files = [
            package.types.File(
                payload=io.BytesIO(jpeg(w, h, seed=i)), file_name=name, mime_type="image/jpeg"
            )
            for i, (name, (w, h)) in enumerate(IMAGES.items())
        ]
        uploaded = api.call(
            201, "UploadOut", "POST", path, manager, project_id=project_id,
            body=api.body("POST", path, "ImageUploadInRequest")(files=files),
        )  # fmt: skip
        assert (uploaded.created, uploaded.duplicates, uploaded.rejected) == (len(IMAGES), 0, [])

        images = api.call(200, "PaginatedImageList", "GET", path, manager, project_id=project_id)
        assert all(isinstance(row, models.ImageOut) for row in images.results)
        image_names = {row.id: row.name for row in images.results}
        assert sorted(image_names.values()) == sorted(IMAGES)

        path = "/api/v1/projects/{project_id}/start/"
        started = api.call(200, "ProjectManagerOut", "POST", path, manager, project_id=project_id)
        assert (started.id, started.state) == (project_id, "active")

        page = api.call(200, "PaginatedProjectList", "GET", "/api/v1/projects/", manager)
        assert (page.count, page.next_, page.previous) == (1, None, None)
        assert all(isinstance(row, models.ProjectManagerOut) for row in page.results)
        assert [row.id for row in page.results] == [project_id]

        # --- a worker answers every task -------------------------------------------------------
        path = "/api/v1/auth/register/"
        user = api.call(
            201, "UserOut", "POST", path, anonymous,
            body=api.body("POST", path, "RegisterInRequest")(
                username="walker", password=PASSWORD, email="walker@example.org"
            ),
        )  # fmt: skip
        assert (user.username, user.role) == ("walker", "worker")
        worker = token_client("walker")
        me = api.call(200, "MeOut", "GET", "/api/v1/me/", worker)
        assert (me.id, me.username, me.role) == (user.id, "walker", "worker")
        assert isinstance(me.balance, models.MoneyOut)

        next_path = "/api/v1/projects/{project_id}/assignments/next/"
        submit_path = "/api/v1/assignments/{assignment_id}/submit/"
        submit_in = api.body("POST", submit_path, "SubmitInRequest")
        submitted: dict[str, list[float]] = {}
        for _ in IMAGES:
            lease = api.call(201, "LeaseOut", "POST", next_path, worker, project_id=project_id)
            task = lease.task
            assert isinstance(task, models.LeasedTaskOut)
            assert isinstance(lease.expires_at, datetime)
            assert (lease.kind, [label.name for label in lease.labels]) == ("bbox", ["car", "tree"])
            assert task.image_url.startswith("/")
            x, y, w, h = task.region
            assert (x, y, w, h) == (0, 0, task.width, task.height)
            box = [x + w / 4, y + h / 4, w / 2, h / 2]
            result = api.call(
                200, "SubmitNextOut", "POST", submit_path, worker, assignment_id=lease.id,
                body=submit_in(annotations=[models.BoxItem(label="car", bbox=box)]),
            )  # fmt: skip
            assert (result.id, result.status, result.clipped) == (lease.id, "submitted", 0)
            submitted[image_names[task.image]] = box
        assert len(submitted) == len(IMAGES)
        api.call(204, None, "POST", next_path, worker, project_id=project_id)

        path = "/api/v1/me/assignments/"
        history = api.call(200, "PaginatedAssignmentHistoryList", "GET", path, worker)
        assert history.count == len(IMAGES)
        assert all(isinstance(row, models.AssignmentHistoryOut) for row in history.results)
        assert {(row.project, row.status) for row in history.results} == {(project_id, "submitted")}

        # --- the manager takes the dataset -----------------------------------------------------
        path = "/api/v1/projects/{project_id}/exports/"
        export_in = api.body("POST", path, "ExportInRequest")
        queued = api.call(
            202, "ExportOut", "POST", path, manager, project_id=project_id,
            body=export_in(format_=models.FormatEnum.COCO),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            path = "/api/v1/exports/{export_id}/"
            export = api.call(200, "ExportOut", "GET", path, manager, export_id=queued.id)
            if export.status in ("done", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (export.status, export.format_) == ("done", "coco"), export.error

        path = "/api/v1/exports/{export_id}/download/"
        coco = api.call(
            200, "ExportsDownloadRetrieveResponse200", "GET", path, manager, export_id=queued.id
        )
        names = {image.id: image.file_name for image in coco.images}
        assert sorted(names.values()) == sorted(IMAGES)
        categories = {category.id: category.name for category in coco.categories}
        boxes = {
            names[a.image_id]: (categories[a.category_id], a.bbox, a.num_votes)
            for a in coco.annotations
        }
        assert boxes == {name: ("car", pytest.approx(box), 1) for name, box in submitted.items()}
        # The file itself is standard COCO, as pycocotools reads it.
        dataset = generated_import_path / "coco.json"
        dataset.write_bytes(api.content)
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = COCO(str(dataset))
        assert (len(loaded.getImgIds()), len(loaded.getAnnIds())) == (len(IMAGES), len(IMAGES))
