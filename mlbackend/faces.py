"""A face detector served as a Label Studio ML backend.

The model is OpenCV's frontal-face Haar cascade, a file shipped inside the
``opencv-python-headless`` wheel (``cv2.data.haarcascades``): nothing is downloaded at run
time. It answers ``rectanglelabels`` regions, in percent of the image, with the first label of
the config's ``RectangleLabels`` named "face" (any case), else its first label.

Protocol (what Label Studio and this project's server call):

- ``GET /health`` -> ``{"status": "UP", "model_class", "model_version"}``
- ``POST /setup`` ``{"project", "schema", ...}`` -> ``{"model_version"}``; 400 when the
  config has no ``RectangleLabels`` control over an ``Image``
- ``POST /predict`` ``{"tasks": [{"id", "data": {"image": URL}}], "label_config", ...}`` ->
  ``{"results": [{"result": [...], "score", "model_version"}]}``, one per task, in order. An
  image that cannot be fetched or decoded gets ``{"result": null, "error": "..."}`` instead
  of an empty result, which would claim it has no face.

Scores: the cascade gives no probability. Each box's score is its final-stage weight
squashed by a logistic (``1 / (1 + exp(-weight))``): higher means more face-like, and it is
not calibrated. Run with ``python -m mlbackend --port 9090`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

logger = logging.getLogger("mlbackend")

CASCADE = "haarcascade_frontalface_default.xml"
MODEL_CLASS = "HaarCascadeFaceDetector"
MODEL_VERSION = f"opencv-{cv2.__version__}-{CASCADE.removesuffix('.xml')}"
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_CONFIG_CHARS = 1024 * 1024


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    """Where the answer goes in the config: the control's name, its image's, the label, and
    the task data key the image URL is under."""

    from_name: str
    to_name: str
    label: str
    data_key: str


def target_of(config: Any) -> Target:
    if not isinstance(config, str) or not config.strip():
        raise BadRequest("Give the labelling config (label_config or schema).")
    if len(config) > MAX_CONFIG_CHARS or "<!DOCTYPE" in config or "<!ENTITY" in config:
        raise BadRequest("The labelling config is too large or declares entities.")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise BadRequest(f"The labelling config is not XML: {exc}") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter("Image")}
    for control in root.iter("RectangleLabels"):
        to_name = control.get("toName", "")
        labels = [el.get("value", "") for el in control.iter("Label") if el.get("value")]
        if to_name in images and labels:
            label = next((v for v in labels if v.casefold() == "face"), labels[0])
            return Target(
                from_name=control.get("name", "label"),
                to_name=to_name,
                label=label,
                data_key=(images[to_name] or "$image").lstrip("$"),
            )
    raise BadRequest("This backend answers boxes: the config has no RectangleLabels with labels.")


class FaceDetector:
    def __init__(self, *, fetch_timeout: float, max_image_bytes: int) -> None:
        # The cascade's XML ships in the wheel: cv2.data.haarcascades is its folder.
        folder = cv2.data.haarcascades  # type: ignore[attr-defined]
        self.cascade = cv2.CascadeClassifier(folder + CASCADE)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV's {CASCADE} could not be loaded")
        self.fetch_timeout, self.max_image_bytes = fetch_timeout, max_image_bytes
        # A CascadeClassifier is not safe to share between threads while it runs.
        self.lock = threading.Lock()

    def fetch(self, url: Any) -> np.ndarray:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise BadRequest("The task's image is not an http(s) URL.")
        try:
            with urllib.request.urlopen(url, timeout=self.fetch_timeout) as response:
                data = response.read(self.max_image_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise BadRequest(f"Fetching the image answered {exc.code}.") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise BadRequest(f"The image could not be fetched: {exc}") from None
        if len(data) > self.max_image_bytes:
            raise BadRequest(f"The image is larger than {self.max_image_bytes:,} bytes.")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise BadRequest("The image could not be decoded.")
        return image

    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        side = max(24, min(gray.shape[:2]) // 20)
        with self.lock:
            boxes, _, weights = self.cascade.detectMultiScale3(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side),
                outputRejectLevels=True,
            )  # fmt: skip
        out = []
        for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True):
            out.append((int(x), int(y), int(w), int(h), 1.0 / (1.0 + math.exp(-float(weight)))))
        return out

    def predict_task(self, task: Any, target: Target) -> dict[str, Any]:
        try:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict):
                raise BadRequest('A task is {"id", "data": {"image": URL}}.')
            image = self.fetch(data.get(target.data_key))
        except BadRequest as exc:
            return {"result": None, "error": str(exc), "model_version": MODEL_VERSION}
        height, width = image.shape[:2]
        regions = []
        for i, (x, y, w, h, score) in enumerate(self.detect(image)):
            regions.append(
                {
                    "id": f"face{i}",
                    "from_name": target.from_name,
                    "to_name": target.to_name,
                    "type": "rectanglelabels",
                    "original_width": width,
                    "original_height": height,
                    "image_rotation": 0,
                    "value": {
                        "x": 100.0 * x / width,
                        "y": 100.0 * y / height,
                        "width": 100.0 * w / width,
                        "height": 100.0 * h / height,
                        "rotation": 0,
                        "rectanglelabels": [target.label],
                    },
                    "score": score,
                }
            )
        overall = max((r["score"] for r in regions), default=0.0)
        return {"result": regions, "score": overall, "model_version": MODEL_VERSION}


class Handler(BaseHTTPRequestHandler):
    server_version = "crowd-face-backend"
    detector: FaceDetector  # set on the class made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise BadRequest(f"The request is larger than {MAX_BODY_BYTES:,} bytes.")
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise BadRequest("The request is not JSON.") from None

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", ""):
            self._send(
                200, {"status": "UP", "model_class": MODEL_CLASS, "model_version": MODEL_VERSION}
            )
        else:
            self._send(404, {"error": "Not found."})

    def do_POST(self) -> None:
        path = self.path.rstrip("/")
        try:
            body = self._body()
            if not isinstance(body, dict):
                raise BadRequest("The request is a JSON object.")
            if path == "/setup":
                target_of(body.get("schema"))
                self._send(200, {"model_version": MODEL_VERSION})
            elif path == "/predict":
                target = target_of(body.get("label_config"))
                tasks = body.get("tasks")
                if not isinstance(tasks, list):
                    raise BadRequest("Give the tasks as a list.")
                results = [self.detector.predict_task(task, target) for task in tasks]
                self._send(200, {"results": results})
            else:
                self._send(404, {"error": "Not found."})
        except BadRequest as exc:
            self._send(400, {"error": str(exc)})


def make_server(
    host: str, port: int, *, fetch_timeout: float = 20.0, max_image_bytes: int = 50 << 20
) -> ThreadingHTTPServer:
    handler = type(
        "BoundHandler",
        (Handler,),
        {"detector": FaceDetector(fetch_timeout=fetch_timeout, max_image_bytes=max_image_bytes)},
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crowd-face-backend",
        description="OpenCV's Haar cascade face detector as a Label Studio ML backend.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090, help="0: any free port")
    parser.add_argument("--fetch-timeout", type=float, default=20.0, help="seconds per image")
    parser.add_argument("--max-image-bytes", type=int, default=50 << 20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = make_server(
        args.host, args.port, fetch_timeout=args.fetch_timeout,
        max_image_bytes=args.max_image_bytes,
    )  # fmt: skip
    port = server.server_address[1]
    # The line a supervisor (or a test) waits for; with --port 0 it tells the port taken.
    print(f"listening on http://{args.host}:{port} model_version={MODEL_VERSION}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
