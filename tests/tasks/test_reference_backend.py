"""The reference ML backend as a real process (``python -m mlbackend``): spoken to through the
Label Studio protocol directly, and run end to end through ``predictions/run/`` on uploaded
photographs, fetching them from this server's signed URLs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from crowd.jobs import wait_for_jobs
from tasks.models import Image, ImageStatus, Prediction
from tests import images
from tests.factories import project_create

skimage_data = pytest.importorskip("skimage.data")

ROOT = Path(__file__).resolve().parents[2]
# Where the astronaut's face is in scikit-image's astronaut.png (512x512), by eye: the box
# from her hairline to her chin and ear to ear.
FACE = (170, 55, 110, 120)


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlbackend", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.split()[2]
    finally:
        process.terminate()
        process.wait(timeout=10)


def call(url: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def astronaut_png() -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(skimage_data.astronaut()).save(out, "PNG")
    return out.getvalue()


def iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


CONFIG = (
    '<View><Image name="img" value="$photo"/><RectangleLabels name="box" toName="img">'
    '<Label value="hat"/><Label value="face"/></RectangleLabels></View>'
)


def test_the_protocol_spoken_directly(backend: str) -> None:
    status, health = call(backend, "/health")
    assert status == 200
    assert health["status"] == "UP"
    assert health["model_version"].startswith("opencv-")
    status, setup = call(backend, "/setup", {"project": "1", "schema": CONFIG})
    assert (status, setup) == (200, {"model_version": health["model_version"]})
    status, refused = call(backend, "/setup", {"project": "1", "schema": "<View><Choices/></View>"})
    assert status == 400
    assert "RectangleLabels" in refused["error"]
    status, answer = call(
        backend,
        "/predict",
        {"tasks": [{"id": 1, "data": {"photo": f"{backend}/missing.jpg"}},
                   {"id": 2, "data": {"photo": "file:///etc/passwd"}}],
         "label_config": CONFIG},
    )  # fmt: skip
    assert status == 200
    first, second = answer["results"]
    assert first["result"] is None
    assert "answered 404" in first["error"]
    assert "not an http(s) URL" in second["error"]


@pytest.mark.django_db(transaction=True)
def test_faces_predicted_end_to_end(api_as, manager, backend, live_server, settings) -> None:
    port = backend.rsplit(":", 1)[1]
    settings.ML_BACKEND_HOSTS = [f"127.0.0.1:{port}"]
    settings.PUBLIC_URL = live_server.url
    project = project_create(manager, kind="bbox", labels=["face"], tile_size=0)
    client = api_as(manager)
    uploaded = client.post(
        f"/api/v1/projects/{project.pk}/images/",
        {"files": [SimpleUploadedFile("astronaut.png", astronaut_png()),
                   SimpleUploadedFile("shapes.jpg", images.jpeg(640, 480, seed=5))]},
        format="multipart",
    )  # fmt: skip
    assert uploaded.status_code == 201, uploaded.json()
    wait_for_jobs()
    assert set(Image.objects.values_list("status", flat=True)) == {ImageStatus.READY}
    patched = client.patch(
        f"/api/v1/projects/{project.pk}/", {"ml_backend": {"url": backend}}, format="json"
    )
    assert patched.status_code == 200, patched.json()

    started = time.monotonic()
    queued = client.post(f"/api/v1/projects/{project.pk}/predictions/run/")
    assert queued.status_code == 202
    wait_for_jobs(timeout=120)
    run = client.get(f"/api/v1/projects/{project.pk}/predictions/run/").json()
    assert run["status"] == "done", run
    assert (run["images_total"], run["predicted"], run["failed"]) == (2, 2, 0)
    assert run["model_version"].startswith("opencv-")
    assert time.monotonic() - started < 60

    astronaut = Image.objects.get(name="astronaut.png")
    shapes = Image.objects.get(name="shapes.jpg")
    listed = client.get(f"/api/v1/projects/{project.pk}/predictions/", {"image": astronaut.pk})
    (prediction,) = listed.json()["results"]
    assert prediction["model_version"] == run["model_version"]
    assert prediction["source"] == "backend"
    (face,) = prediction["annotations"]
    assert face["label"] == "face"
    assert 0.5 < face["score"] <= 1
    assert iou(face["bbox"], FACE) > 0.5, face["bbox"]
    assert Prediction.objects.get(image=shapes).annotations == []

    # Nothing new to predict: the second run asks for no image.
    client.post(f"/api/v1/projects/{project.pk}/predictions/run/")
    wait_for_jobs(timeout=60)
    again = client.get(f"/api/v1/projects/{project.pk}/predictions/run/").json()
    assert (again["status"], again["images_total"], again["predicted"]) == ("done", 0, 0)
    assert Prediction.objects.count() == 2
