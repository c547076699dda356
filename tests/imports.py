"""Helpers of the import tests (predictions and gold): images named as files in a dataset, and
a JSON file posted in a form."""

from __future__ import annotations

import json
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from tasks.models import Image, Project
from tests.factories import image_ready

FILE_NAMES = ["street/a.jpg", "b.jpg", "c.png"]


def named_images(project: Project) -> list[Image]:
    """Three ready 400x200 images named as ``FILE_NAMES``, one in a folder."""
    out = []
    for seed, name in enumerate(FILE_NAMES):
        image = image_ready(project, width=400, height=200, seed=seed)
        image.name = name
        image.save(update_fields=["name"])
        out.append(image)
    return out


def json_file_post(client: Any, url: str, content: Any, *, name: str, **fields: Any) -> Any:
    """POST ``content`` (JSON-encoded unless bytes) to ``url`` as the form's ``file``."""
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    payload = {"file": SimpleUploadedFile(name, raw, "application/json"), **fields}
    return client.post(url, payload, format="multipart")


def coco_dataset(car: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    """A COCO dataset of two of ``FILE_NAMES`` (a.jpg matching street/a.jpg by its file
    name), its categories numbered unlike ours, and a car and a tree on a.jpg, each with the
    extra keys given (a score, iscrowd)."""
    return {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 400, "height": 200},
            {"id": 8, "file_name": "b.jpg", "width": 400, "height": 200},
        ],
        "categories": [{"id": 3, "name": "tree"}, {"id": 4, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 4, "bbox": [10, 10, 50, 20], **car},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [200, 50, 40, 100], **tree},
        ],
    }
