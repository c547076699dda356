"""A project's ML backend: allowed hosts, the signed image URLs it fetches, the labelling
config it is given, and runs through ``predictions/run/`` against small real HTTP servers
that answer, time out, fail or talk nonsense."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from crowd.jobs import wait_for_jobs
from mlbackend.faces import target_of
from tasks import predictions
from tasks.ml_backend import image_signed_url
from tasks.models import Prediction, PredictionRun
from tests import images
from tests.factories import image_ready, project_create
from tests.tasks.test_projects import VALID

# Runs claim their row and store in transactions: the same on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases
ALLOWED = ["models.internal:9090", "127.0.0.1:9090", "[::1]:9090"]


# --- Allowed hosts ----------------------------------------------------------------------------


@pytest.fixture
def hosts(settings: Any) -> None:
    settings.ML_BACKEND_HOSTS = ALLOWED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://models.internal:9090",
        "http://models.internal:9090/ml/",
        "https://MODELS.internal:9090",
        "http://127.0.0.1:9090",
        "http://[::1]:9090/",
    ],
)
def test_a_backend_on_an_allowed_host_is_saved(api_as, manager, hosts, url) -> None:
    project = project_create(manager)
    body = {"ml_backend": {"url": url, "min_score": 0.3}, "prelabels": True}
    response = api_as(manager).patch(f"/api/v1/projects/{project.pk}/", body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["ml_backend"] == {"url": url, "min_score": 0.3}
    assert response.json()["prelabels"] is True
    project.refresh_from_db()
    assert (project.ml_backend_url, project.ml_backend_min_score, project.prelabels) == (
        url, 0.3, True,
    )  # fmt: skip
    cleared = api_as(manager).patch(
        f"/api/v1/projects/{project.pk}/", {"ml_backend": None}, format="json"
    )
    assert cleared.json()["ml_backend"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("spec", [{}, {"min_score": 0.5}, {"url": None}, {"url": ["x"]}])
def test_a_backend_without_a_url_is_a_400_naming_it(api_as, manager, hosts, spec) -> None:
    project = project_create(manager)
    for method in ("patch", "post"):
        url = f"/api/v1/projects/{project.pk}/" if method == "patch" else "/api/v1/projects/"
        body = {"ml_backend": spec} if method == "patch" else {**VALID, "ml_backend": spec}
        response = getattr(api_as(manager), method)(url, body, format="json")
        assert response.status_code == 400, response.content
        assert list(response.json()["errors"]["ml_backend"]) == ["url"]
    project.refresh_from_db()
    assert project.ml_backend_url == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://models.internal", "models.internal:80 is not an allowed"),
        ("http://models.internal:9091", "models.internal:9091 is not an allowed"),
        ("http://169.254.169.254:9090", "169.254.169.254:9090 is not an allowed"),
        ("http://models.internal.:9090", "is not an allowed"),
        ("http://localhost:9090", "localhost:9090 is not an allowed"),
        ("ftp://models.internal:9090", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("models.internal:9090", "http:// or https://"),
        ("http://evil.example@models.internal:9090", "user name or password"),
        ("http://models.internal:9090@evil.example", "user name or password"),
        ("http://user:pw@models.internal:9090", "user name or password"),
        ("http://models.internal:9090\\@evil.example", "backslashes"),
        ("http://models.internal:9090 /", "spaces"),
        ("http://models.inte\trnal:9090/", "control characters"),
        ("http://models.internal:99999", "port"),
        ("http://models.internal:9090/?next=http://evil", "no query"),
        ("http://models.internal:9090/#x", "no query"),
        ("http://:9090", "names no host"),
        ("http://mödels.internal:9090", "characters a host name cannot have"),
    ],
)
def test_any_other_backend_url_is_a_400_and_nothing_changes(
    api_as, manager, hosts, url, says
) -> None:
    project = project_create(manager)
    response = api_as(manager).patch(
        f"/api/v1/projects/{project.pk}/", {"ml_backend": {"url": url}}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "ml_backend_not_allowed"
    assert says in body["errors"]["ml_backend"]["url"][0]
    project.refresh_from_db()
    assert project.ml_backend_url == ""


@pytest.mark.django_db
def test_no_backend_is_allowed_by_default(api_as, manager) -> None:
    project = project_create(manager)
    response = api_as(manager).patch(
        f"/api/v1/projects/{project.pk}/",
        {"ml_backend": {"url": "http://127.0.0.1:9090"}},
        format="json",
    )
    assert response.status_code == 400
    assert "(ML_BACKEND_HOSTS: none)" in response.json()["errors"]["ml_backend"]["url"][0]


@pytest.mark.django_db
def test_a_project_may_be_created_with_a_backend(api_as, manager, hosts) -> None:
    body = {"name": "Faces", "kind": "bbox", "labels": ["face"],
            "ml_backend": {"url": "http://models.internal:9090"}}  # fmt: skip
    response = api_as(manager).post("/api/v1/projects/", body, format="json")
    assert response.status_code == 201
    assert response.json()["ml_backend"] == {
        "url": "http://models.internal:9090",
        "min_score": None,
    }
    body["ml_backend"] = {"url": "http://elsewhere:9090"}
    assert api_as(manager).post("/api/v1/projects/", body, format="json").status_code == 400


# --- Signed image URLs ------------------------------------------------------------------------


def stored_image(project, seed: int, data: bytes | None = None):
    image = image_ready(project, seed=seed)
    data = data or images.jpeg(image.width, image.height, seed=seed)
    image.file.name = default_storage.save(
        f"projects/{project.pk}/images/s{seed}.jpg", ContentFile(data)
    )
    image.save(update_fields=["file"])
    return image, data


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.mark.django_db
def test_a_signed_url_serves_the_image_without_credentials(manager, settings) -> None:
    settings.PUBLIC_URL = "https://crowd.example.org"
    project = project_create(manager)
    image, data = stored_image(project, seed=61)
    url = image_signed_url(image.pk)
    assert url.startswith(f"https://crowd.example.org/api/v1/images/{image.pk}/signed/?token=")
    anonymous = APIClient()
    response = anonymous.get(path_of(url))
    assert response.status_code == 200
    assert response.getvalue() == data
    assert response["Cache-Control"] == "private, no-store"
    # A wrong token in the Authorization header changes nothing: the link is the credential.
    anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert anonymous.get(path_of(url)).status_code == 200


@pytest.mark.django_db
def test_a_tampered_foreign_or_expired_link_is_refused(manager, settings) -> None:
    project = project_create(manager)
    a, _ = stored_image(project, seed=62)
    b, _ = stored_image(project, seed=63)
    token = parse_qs(urlsplit(image_signed_url(a.pk)).query)["token"][0]
    client = APIClient()

    def get(image_id: int, tok: str) -> Any:
        return client.get(f"/api/v1/images/{image_id}/signed/", {"token": tok})

    assert get(a.pk, token).status_code == 200
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert get(a.pk, flipped).status_code == 403
    assert get(a.pk, "").status_code == 403
    assert get(b.pk, token).json()["detail"] == "The link is for another image."
    assert get(b.pk, token).status_code == 403
    settings.ML_IMAGE_URL_SECONDS = 1
    time.sleep(2.1)  # TimestampSigner counts whole seconds
    expired = get(a.pk, token)
    assert (expired.status_code, expired.json()["detail"]) == (403, "The link has expired.")
    settings.ML_IMAGE_URL_SECONDS = 900
    fresh = parse_qs(urlsplit(image_signed_url(a.pk)).query)["token"][0]
    a.delete()
    assert get(a.pk, fresh).status_code == 404


# --- The labelling config ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "labels", "tag", "values"),
    [
        ("bbox", ["car", "tree & bush"], "RectangleLabels", ["car", "tree & bush"]),
        ("polygon", ["roof"], "PolygonLabels", ["roof"]),
        ("mask", ["road", "sky"], "BrushLabels", ["road", "sky"]),
        ("classification", ["cat", "dog"], "Choices", ["cat", "dog"]),
        ("keypoints", [{"name": "person", "keypoints": ["nose", "tail"]}], "KeyPointLabels",
         ["nose", "tail"]),
        ("keypoints", [{"name": "cat", "keypoints": ["nose"]}, {"name": "dog", "keypoints": ["nose"]}],
         "KeyPointLabels", ["cat:nose", "dog:nose"]),
    ],
)  # fmt: skip
def test_the_label_config_names_the_projects_labels(manager, kind, labels, tag, values) -> None:
    project = project_create(manager, kind=kind, labels=labels)
    root = ET.fromstring(predictions.project_label_config(project))
    assert root.tag == "View"
    image = root.find("Image")
    assert image is not None
    assert image.get("value") == "$image"
    control = root.find(tag)
    assert control is not None
    assert control.get("toName") == image.get("name")
    child = "Choice" if kind == "classification" else "Label"
    assert [el.get("value") for el in control.iter(child)] == values


@pytest.mark.django_db
def test_the_reference_backend_reads_our_bbox_config(manager) -> None:
    project = project_create(manager, kind="bbox", labels=["person", "Face"])
    target = target_of(predictions.project_label_config(project))
    assert (target.from_name, target.to_name, target.label, target.data_key) == (
        "label", "image", "Face", "image",
    )  # fmt: skip


# --- Runs against small real servers -----------------------------------------------------------


class FakeBackend:
    """A Label Studio ML backend whose /predict does what ``predict`` says; it records each
    call (method, path, body)."""

    def __init__(self, predict: Callable[[dict[str, Any], int], tuple[int, Any]]) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.predict = predict
        self.health_status = 200
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up waiting

            def do_GET(self) -> None:
                backend.calls.append(("GET", self.path, None))
                self.reply(backend.health_status, {"status": "UP", "model_version": "fake-3"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                backend.calls.append(("POST", self.path, body))
                if self.path == "/setup":
                    self.reply(200, {"model_version": "fake-3"})
                else:
                    n = sum(1 for c in backend.calls if c[1] == "/predict")
                    self.reply(*backend.predict(body, n))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _ in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def box_result(body: dict[str, Any], label: str = "car") -> dict[str, Any]:
    return {
        "results": [
            {
                "model_version": "fake-3",
                "score": 0.5,
                "result": [
                    {
                        "type": "rectanglelabels",
                        "from_name": "label",
                        "to_name": "image",
                        "original_width": 320,
                        "original_height": 240,
                        "score": 0.8,
                        "value": {
                            "x": 25,
                            "y": 50,
                            "width": 10,
                            "height": 20,
                            "rectanglelabels": [label],
                        },
                    }
                ],
            }
            for _ in body["tasks"]
        ]
    }


@pytest.fixture
def backend_factory() -> Iterator[Callable[..., FakeBackend]]:
    made: list[FakeBackend] = []

    def make(predict: Callable[[dict[str, Any], int], tuple[int, Any]]) -> FakeBackend:
        made.append(FakeBackend(predict))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def fast(settings: Any) -> Any:
    settings.PUBLIC_URL = "http://crowd.test"
    settings.ML_BACKEND_BATCH_SIZE = 2
    settings.ML_BACKEND_TIMEOUT_SECONDS = 0.5
    settings.ML_BACKEND_CONNECT_TIMEOUT_SECONDS = 0.5
    settings.ML_BACKEND_TRIES = 2
    settings.ML_BACKEND_BACKOFF_SECONDS = 0.05
    settings.ML_BACKEND_MAX_FAILED_BATCHES = 2
    return settings


def project_on(manager, backend: FakeBackend, settings: Any, images_count: int = 3):
    settings.ML_BACKEND_HOSTS = [f"127.0.0.1:{backend.port}"]
    project = project_create(manager, kind="bbox", labels=["car"], tile_size=0)
    for seed in range(images_count):
        image_ready(project, seed=100 + seed)
    project.ml_backend_url = backend.url
    project.save(update_fields=["ml_backend_url"])
    return project


def run_now(api_as, manager, project) -> dict[str, Any]:
    client = api_as(manager)
    response = client.post(f"/api/v1/projects/{project.pk}/predictions/run/")
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "queued"
    wait_for_jobs()
    run = client.get(f"/api/v1/projects/{project.pk}/predictions/runs/{response.json()['id']}/")
    assert run.status_code == 200
    return run.json()


@pytest.mark.django_db(transaction=True)
def test_a_run_sets_up_then_predicts_in_batches(api_as, manager, fast, backend_factory) -> None:
    backend = backend_factory(lambda body, n: (200, box_result(body)))
    project = project_on(manager, backend, fast)
    run = run_now(api_as, manager, project)
    assert (run["status"], run["model_version"], run["error"]) == ("done", "fake-3", None)
    assert (run["images_total"], run["images_done"], run["predicted"], run["failed"]) == (
        3,
        3,
        3,
        0,
    )
    assert backend.paths() == ["GET /health", "POST /setup", "POST /predict", "POST /predict"]
    setup, first = backend.calls[1][2], backend.calls[2][2]
    assert setup["schema"] == predictions.project_label_config(project)
    assert setup["hostname"] == "http://crowd.test"
    assert first["label_config"] == setup["schema"]
    assert len(first["tasks"]) == 2
    for task in first["tasks"]:
        assert task["data"]["image"].startswith(
            f"http://crowd.test/api/v1/images/{task['id']}/signed/?token="
        )
    rows = Prediction.objects.filter(project=project).order_by("image_id")
    assert [(p.model_version, p.source, p.run_id) for p in rows] == [
        ("fake-3", "backend", run["id"])
    ] * 3
    assert rows[0].annotations == [
        {"label": "car", "bbox": [80.0, 120.0, 32.0, 48.0], "score": 0.8}
    ]
    assert rows[0].score == 0.5
    progress = api_as(manager).get(f"/api/v1/projects/{project.pk}/progress/").json()
    assert progress["last_prediction_run"]["status"] == "done"
    # Again: every image has this version's prediction, so nothing is asked.
    again = run_now(api_as, manager, project)
    assert (again["status"], again["images_total"], again["predicted"]) == ("done", 0, 0)
    assert backend.paths()[4:] == ["GET /health", "POST /setup"]


@pytest.mark.django_db(transaction=True)
def test_a_500_is_retried_with_backoff(api_as, manager, fast, backend_factory) -> None:
    backend = backend_factory(
        lambda body, n: (
            (500, {"error": "CUDA out of memory"}) if n == 1 else (200, box_result(body))
        )
    )
    project = project_on(manager, backend, fast)
    run = run_now(api_as, manager, project)
    assert (run["status"], run["predicted"], run["failed"]) == ("done", 3, 0)
    assert backend.paths().count("POST /predict") == 3  # the first batch twice


@pytest.mark.django_db(transaction=True)
def test_a_backend_that_keeps_failing_stops_the_run(api_as, manager, fast, backend_factory) -> None:
    backend = backend_factory(lambda body, n: (500, {"error": "CUDA out of memory"}))
    project = project_on(manager, backend, fast, images_count=6)
    run = run_now(api_as, manager, project)
    assert run["status"] == "failed"
    assert "2 batches in a row failed" in run["error"]
    assert "answered 500" in run["error"]
    assert "CUDA out of memory" in run["error"]
    assert (run["images_done"], run["failed"], run["predicted"]) == (4, 4, 0)
    assert {e["image"] for e in run["errors"]} == set(
        project.images.order_by("pk").values_list("pk", flat=True)[:4]
    )
    assert backend.paths().count("POST /predict") == 4  # two tries of two batches
    assert Prediction.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_backend_that_times_out(api_as, manager, fast, backend_factory) -> None:
    def slow(body: dict[str, Any], n: int) -> tuple[int, Any]:
        time.sleep(1.5)
        return 200, box_result(body)

    backend = backend_factory(slow)
    project = project_on(manager, backend, fast, images_count=2)
    started = time.monotonic()
    run = run_now(api_as, manager, project)
    assert time.monotonic() - started < 5
    assert run["status"] == "done"
    assert (run["failed"], run["predicted"]) == (2, 0)
    assert all("timed out after 0.5 s" in e["error"] for e in run["errors"])
    assert all("after 2 tries" in e["error"] for e in run["errors"])


@pytest.mark.django_db(transaction=True)
def test_garbage_answers(api_as, manager, fast, backend_factory) -> None:
    def garbage(body: dict[str, Any], n: int) -> tuple[int, Any]:
        if n == 1:
            return 200, b"<html>502 Bad Gateway</html>"
        if n == 2:
            return 200, {"results": []}  # fewer results than tasks
        good = box_result(body)["results"][0]
        return 200, {"results": [
            good,
            {"result": "nope"},
            {"result": [{**good["result"][0], "value": {**good["result"][0]["value"], "rectanglelabels": ["bus"]}}]},
            {"result": None, "error": "could not fetch the image"},
        ]}  # fmt: skip

    fast.ML_BACKEND_BATCH_SIZE = 4
    fast.ML_BACKEND_MAX_FAILED_BATCHES = 3
    backend = backend_factory(garbage)
    project = project_on(manager, backend, fast, images_count=12)
    run = run_now(api_as, manager, project)
    assert run["status"] == "done", run
    assert (run["images_done"], run["predicted"], run["failed"]) == (12, 1, 11)
    messages = [e["error"] for e in run["errors"]]
    assert "not JSON" in messages[0]
    assert "answered 0 results for 4 tasks" in messages[4]
    assert 'not {"result": [...], ...}' in messages[8]
    assert "Unknown label 'bus'" in messages[9]
    assert "could not fetch the image" in messages[10]
    assert Prediction.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_unhealthy_backend_fails_the_run_at_once(api_as, manager, fast, backend_factory) -> None:
    backend = backend_factory(lambda body, n: (200, box_result(body)))
    backend.health_status = 503
    project = project_on(manager, backend, fast)
    run = run_now(api_as, manager, project)
    assert run["status"] == "failed"
    assert "GET /health answered 503" in run["error"]
    assert "POST /predict" not in backend.paths()


@pytest.mark.django_db
def test_a_run_is_refused_for_a_host_no_longer_allowed(
    api_as, manager, fast, backend_factory
) -> None:
    backend = backend_factory(lambda body, n: (200, box_result(body)))
    project = project_on(manager, backend, fast)
    fast.ML_BACKEND_HOSTS = ["127.0.0.1:1"]
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/predictions/run/")
    assert response.status_code == 400
    assert response.json()["code"] == "ml_backend_not_allowed"
    assert not PredictionRun.objects.exists()
    assert backend.calls == []


@pytest.mark.django_db(transaction=True)
def test_the_host_is_checked_again_when_the_run_starts(manager, fast, backend_factory) -> None:
    backend = backend_factory(lambda body, n: (200, box_result(body)))
    project = project_on(manager, backend, fast)
    run = PredictionRun.objects.create(project=project, backend_url=project.ml_backend_url)
    fast.ML_BACKEND_HOSTS = []
    done = predictions.prediction_run_execute(run_id=run.pk)
    assert done is not None
    assert done.status == "failed"
    assert "may no longer be called" in done.error
    assert backend.calls == []


@pytest.mark.django_db
def test_run_preconditions(api_as, manager, fast, backend_factory) -> None:
    project = project_create(manager, kind="bbox", labels=["car"])
    url = f"/api/v1/projects/{project.pk}/predictions/run/"
    client = api_as(manager)
    assert client.get(url).status_code == 404
    assert client.post(url).json()["code"] == "no_ml_backend"
    backend = backend_factory(lambda body, n: (200, box_result(body)))
    project = project_on(manager, backend, fast)
    url = f"/api/v1/projects/{project.pk}/predictions/run/"
    fast.PUBLIC_URL = ""
    response = client.post(url)
    assert (response.status_code, response.json()["code"]) == (409, "no_public_url")
    fast.PUBLIC_URL = "http://crowd.test"
    active = PredictionRun.objects.create(project=project, backend_url=backend.url)
    response = client.post(url)
    assert (response.status_code, response.json()["code"]) == (409, "prediction_run_active")
    assert response.json()["errors"] == {"run": active.pk}


@pytest.mark.django_db
def test_only_the_projects_managers_run_and_read_runs(api_as, manager, worker, fast) -> None:
    from tests.factories import ClientFactory, ManagerFactory

    project = project_create(manager, kind="bbox", labels=["car"])
    run = PredictionRun.objects.create(project=project, backend_url="http://x:1")
    for user, expected in (
        (worker, 403),
        (ClientFactory.create(), 403),
        (ManagerFactory.create(), 404),
    ):
        client = api_as(user)
        assert (
            client.post(f"/api/v1/projects/{project.pk}/predictions/run/").status_code == expected
        )
        assert client.get(f"/api/v1/projects/{project.pk}/predictions/run/").status_code == expected
        assert (
            client.get(f"/api/v1/projects/{project.pk}/predictions/runs/{run.pk}/").status_code
            == expected
        )
    assert PredictionRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
async def test_the_dashboard_hears_a_runs_progress(manager, fast, backend_factory) -> None:
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from crowd.asgi import application
    from tests.factories import token_for

    backend = backend_factory(lambda body, n: (200, box_result(body)))

    @database_sync_to_async
    def prepare() -> tuple[Any, str, int]:
        project = project_on(manager, backend, fast)
        run = PredictionRun.objects.create(project=project, backend_url=backend.url)
        return project, token_for(manager), run.pk

    project, token, run_id = await prepare()
    ws = WebsocketCommunicator(
        application,
        f"/ws/projects/{project.pk}/?token={token}",
        headers=[(b"origin", b"http://localhost")],
    )
    connected, _ = await ws.connect()
    assert connected
    await database_sync_to_async(predictions.prediction_run_execute)(run_id=run_id)
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["status"] != "done":
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == "prediction_run":
            frames.append(frame)
    assert frames[-1]["id"] == run_id
    assert (frames[-1]["predicted"], frames[-1]["images_total"]) == (3, 3)
    assert [f["images_done"] for f in frames if f["status"] == "running"][-1] == 3
    await ws.disconnect()


# --- Canceling a run ------------------------------------------------------------------------


def cancel(api_as, manager, project, run_id: int) -> Any:
    return api_as(manager).post(f"/api/v1/projects/{project.pk}/predictions/runs/{run_id}/cancel/")


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_canceled_never_starts(api_as, manager, fast, backend_factory) -> None:
    backend = backend_factory(lambda body, n: (200, box_result(body)))
    project = project_on(manager, backend, fast)
    queued = PredictionRun.objects.create(project=project, backend_url=backend.url)
    response = cancel(api_as, manager, project, queued.pk)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["error"]) == ("canceled", f"Canceled by {manager.username}.")
    assert body["finished_at"] is not None
    predictions.prediction_run_execute(run_id=queued.pk)  # its job comes, and leaves it
    assert backend.calls == []
    queued.refresh_from_db()
    assert (queued.status, queued.started_at, queued.attempts) == ("canceled", None, 0)
    # Not active: the next run may start.
    assert run_now(api_as, manager, project)["status"] == "done"


@pytest.mark.django_db(transaction=True)
def test_a_running_run_keeps_its_batch_and_stops_before_the_next(
    api_as, manager, fast, backend_factory
) -> None:
    from django.db import connection

    def predict(body: dict[str, Any], n: int) -> tuple[int, Any]:
        try:  # the manager cancels while the backend works on the first batch
            run = PredictionRun.objects.get(project__ml_backend_url=backend.url)
            predictions.prediction_run_cancel(project=run.project, run_id=run.pk, user=manager)
        finally:
            connection.close()  # this server thread's own
        return 200, box_result(body)

    backend = backend_factory(predict)
    project = project_on(manager, backend, fast)
    run = run_now(api_as, manager, project)
    assert (run["status"], run["error"]) == ("canceled", f"Canceled by {manager.username}.")
    assert (run["images_total"], run["images_done"], run["predicted"]) == (3, 2, 2)
    assert backend.paths() == ["GET /health", "POST /setup", "POST /predict"]
    assert Prediction.objects.filter(project=project).count() == 2  # what it stored stays
    stored = PredictionRun.objects.get(pk=run["id"])
    assert (stored.claim_token, stored.lease_expires_at) == ("", None)  # let go
    assert cancel(api_as, manager, project, run["id"]).json()["code"] == "prediction_run_finished"


@pytest.mark.django_db
def test_a_canceled_run_still_stopping_holds_off_the_next(api_as, manager, fast) -> None:
    from datetime import timedelta

    from django.utils import timezone

    project = project_create(manager, kind="bbox", labels=["car"])
    fast.ML_BACKEND_HOSTS = ["127.0.0.1:9"]
    project.ml_backend_url = "http://127.0.0.1:9"
    project.save(update_fields=["ml_backend_url"])
    stopping = PredictionRun.objects.create(
        project=project, backend_url=project.ml_backend_url, status="canceled",
        claim_token="a-job", lease_expires_at=timezone.now() + timedelta(minutes=1),
    )  # fmt: skip
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/predictions/run/")
    assert (response.status_code, response.json()["code"]) == (409, "prediction_run_active")
    assert "stopping" in response.json()["detail"]
    stopping.lease_expires_at = timezone.now() - timedelta(seconds=1)  # its job died
    stopping.save(update_fields=["lease_expires_at"])
    assert (
        api_as(manager).post(f"/api/v1/projects/{project.pk}/predictions/run/").status_code == 202
    )


@pytest.mark.django_db
def test_who_may_cancel_and_what(api_as, manager, worker, fast) -> None:
    from tests.factories import ClientFactory, ManagerFactory

    project = project_create(manager, kind="bbox", labels=["car"])
    other = project_create(manager, kind="bbox", labels=["car"])
    run = PredictionRun.objects.create(project=project, backend_url="http://x:1")
    for user, expected in (
        (worker, 403),
        (ClientFactory.create(), 403),
        (ManagerFactory.create(), 404),
    ):
        assert cancel(api_as, user, project, run.pk).status_code == expected
    assert cancel(api_as, manager, other, run.pk).status_code == 404  # not that project's
    for final in ("done", "failed"):
        PredictionRun.objects.filter(pk=run.pk).update(status=final)
        response = cancel(api_as, manager, project, run.pk)
        assert (response.status_code, response.json()["code"]) == (409, "prediction_run_finished")
    assert PredictionRun.objects.get(pk=run.pk).status == "failed"


@pytest.mark.django_db
def test_a_run_ending_after_a_cancel_stays_canceled(manager) -> None:
    project = project_create(manager, kind="bbox", labels=["car"])
    canceled = PredictionRun.objects.create(
        project=project, backend_url="x", status="canceled", error="Canceled by ann."
    )
    running = PredictionRun.objects.create(project=project, backend_url="x", status="running")
    for status, error in (("done", ""), ("failed", "The backend answered 500.")):
        PredictionRun.objects.update(**predictions._ending(status, error))
        kept = PredictionRun.objects.get(pk=canceled.pk)
        assert (kept.status, kept.error, kept.finished_at) == ("canceled", "Canceled by ann.", None)
        ended = PredictionRun.objects.get(pk=running.pk)
        assert (ended.status, ended.error) == (status, error)
        assert ended.finished_at is not None
