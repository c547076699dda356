"""Importing a model's predictions: our JSON, COCO (dataset and results list) and Label Studio
tasks; bad files store nothing; who may import and list."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pycocotools import mask as coco_mask

from crowd.json_stream import Parsed
from tasks import prediction_formats
from tasks.models import Image, Prediction
from tasks.prediction_formats import LabelSpec, read_coco
from tests import imports
from tests.factories import ClientFactory, ManagerFactory, image_ready, project_create
from tests.imports import json_file_post, named_images

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


@pytest.fixture
def project(manager):
    return project_create(manager, kind="bbox", labels=["car", "tree"], tile_size=0)


@pytest.fixture
def pics(project) -> list[Image]:
    return named_images(project)


def url(project) -> str:
    return f"/api/v1/projects/{project.pk}/predictions/"


def post_file(client, project, content: Any, **fields: Any):
    return json_file_post(client, f"{url(project)}file/", content, name="preds.json", **fields)


def stored(project) -> list[tuple[int, str, list[dict[str, Any]], float | None]]:
    return [
        (p.image_id, p.model_version, p.annotations, p.score)
        for p in Prediction.objects.filter(project=project).order_by("image_id", "model_version")
    ]


# --- Our JSON ---------------------------------------------------------------------------------


def test_our_json_is_stored_with_scores_and_listed(api_as, manager, project, pics) -> None:
    a, b, _ = pics
    body = {
        "model_version": "yolo-v8n-2026-11",
        "predictions": [
            {"image": a.pk, "score": 0.7, "annotations": [
                {"label": "car", "bbox": [10, 20, 30, 40], "score": 0.91},
                {"label": "tree", "bbox": [100, 20, 30, 40]},  # takes the image's 0.7
            ]},
            {"image": b.pk, "annotations": []},  # the model saw nothing
        ],
    }  # fmt: skip
    client = api_as(manager)
    response = client.post(url(project), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json() == {"created": 2, "rejected": []}
    assert stored(project) == [
        (a.pk, "yolo-v8n-2026-11", [
            {"label": "car", "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.91},
            {"label": "tree", "bbox": [100.0, 20.0, 30.0, 40.0], "score": 0.7},
        ], 0.7),
        (b.pk, "yolo-v8n-2026-11", [], None),
    ]  # fmt: skip
    listed = client.get(url(project)).json()
    assert listed["count"] == 2
    assert [r["image"] for r in listed["results"]] == [a.pk, b.pk]
    assert listed["results"][0]["annotations"][0]["score"] == 0.91
    only_b = client.get(url(project), {"image": b.pk}).json()
    assert [r["image"] for r in only_b["results"]] == [b.pk]
    other = client.get(url(project), {"model_version": "other"}).json()
    assert other["count"] == 0
    assert client.get(url(project), {"image": "x"}).status_code == 400


def test_our_json_may_name_images_by_file_name(api_as, manager, project, pics) -> None:
    body = {"model_version": "v1", "predictions": [
        {"file_name": "a.jpg", "annotations": []},  # the last part of street/a.jpg
        {"file_name": "nowhere.jpg", "annotations": []},
    ], "strict": False}  # fmt: skip
    response = api_as(manager).post(url(project), body, format="json")
    assert response.status_code == 201, response.json()
    assert [r["item"] for r in response.json()["rejected"]] == ["predictions[1]"]
    assert stored(project) == [(pics[0].pk, "v1", [], None)]


def test_a_reimport_of_the_same_image_and_version_replaces_it(
    api_as, manager, project, pics
) -> None:
    a = pics[0]
    client = api_as(manager)

    def send(version: str, box: list[int]) -> None:
        body = {"model_version": version, "predictions": [
            {"image": a.pk, "annotations": [{"label": "car", "bbox": box, "score": 0.5}]}]}  # fmt: skip
        assert client.post(url(project), body, format="json").status_code == 201

    send("v1", [1, 1, 10, 10])
    send("v1", [2, 2, 20, 20])
    send("v2", [3, 3, 30, 30])
    assert [(v, ann[0]["bbox"]) for _, v, ann, _ in stored(project)] == [
        ("v1", [2.0, 2.0, 20.0, 20.0]),
        ("v2", [3.0, 3.0, 30.0, 30.0]),
    ]


BAD_ITEMS = [
    ({"label": "bus", "bbox": [1, 1, 5, 5], "score": 0.5}, "predictions[1].annotations[0].label"),
    ({"label": "car", "bbox": [1, 1, 5], "score": 0.5}, "predictions[1].annotations[0].bbox"),
    ({"label": "car", "bbox": [1, 1, 5, 5], "score": 1.5}, "predictions[1].annotations[0].score"),
    (
        {"label": "car", "bbox": [1, 1, 5, 5], "score": "high"},
        "predictions[1].annotations[0].score",
    ),
    (
        {"label": "car", "bbox": [300, 1, 500, 5], "score": 0.5},
        "predictions[1].annotations[0].bbox",
    ),
]


@pytest.mark.parametrize(("item", "where"), BAD_ITEMS)
def test_one_bad_item_is_a_400_naming_it_and_nothing_is_stored(
    api_as, manager, project, pics, item, where
) -> None:
    a, b, _ = pics
    body = {"model_version": "v1", "predictions": [
        {"image": a.pk, "annotations": [{"label": "car", "bbox": [1, 1, 5, 5], "score": 0.5}]},
        {"image": b.pk, "annotations": [item]},
    ]}  # fmt: skip
    response = api_as(manager).post(url(project), body, format="json")
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid_predictions"
    assert list(error["errors"]) == [where]
    assert "nothing was stored" in error["detail"]
    assert stored(project) == []


def test_not_strict_stores_the_valid_ones_and_lists_the_others(
    api_as, manager, project, pics
) -> None:
    a, _, c = pics
    body = {"model_version": "v1", "strict": False, "predictions": [
        {"image": a.pk, "annotations": [{"label": "car", "bbox": [1, 1, 5, 5], "score": 0.5}]},
        {"image": 999_999, "annotations": []},
        {"image": c.pk, "annotations": [{"label": "bus", "bbox": [1, 1, 5, 5]}]},
    ]}  # fmt: skip
    response = api_as(manager).post(url(project), body, format="json")
    assert response.status_code == 201, response.json()
    out = response.json()
    assert out["created"] == 1
    assert [(r["index"], r["item"]) for r in out["rejected"]] == [
        (1, "predictions[1]"), (2, "predictions[2]"),
    ]  # fmt: skip
    assert "No image 999999" in out["rejected"][0]["error"]
    assert "Unknown label 'bus'" in out["rejected"][1]["error"]
    assert [row[0] for row in stored(project)] == [a.pk]


def test_an_image_of_another_project_is_unknown_here(api_as, manager, project, pics) -> None:
    other = project_create(manager, kind="bbox", labels=["car"])
    theirs = image_ready(other, seed=50)
    body = {"model_version": "v1", "predictions": [{"image": theirs.pk, "annotations": []}]}
    response = api_as(manager).post(url(project), body, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["predictions[0].image"]
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"predictions": []},  # no model version
        {"model_version": "v1", "predictions": {"image": 1}},
        {"model_version": "", "predictions": []},
        {"model_version": "v1", "predictions": ["not an object"]},
    ],
)
def test_wrong_structures_are_400s(api_as, manager, project, pics, body) -> None:
    response = api_as(manager).post(url(project), body, format="json")
    assert response.status_code == 400, response.json()
    assert stored(project) == []


def test_a_json_body_past_the_request_limit_is_a_413(
    api_as, manager, project, pics, settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = {"model_version": "v1", "predictions": [
        {"image": pics[0].pk, "annotations": [{"label": "car", "bbox": [1, 1, 5, 5], "score": 0.5}] * 300}
    ]}  # fmt: skip
    response = api_as(manager).post(url(project), body, format="json")
    assert response.status_code == 413


def test_a_file_past_the_predictions_limit_is_a_413(
    api_as, manager, project, pics, settings
) -> None:
    settings.MAX_PREDICTIONS_BYTES = 1000
    content = {
        "model_version": "v1",
        "predictions": [{"image": pics[0].pk, "annotations": []}] * 100,
    }
    response = post_file(api_as(manager), project, content)
    assert response.status_code == 413
    assert stored(project) == []


# --- Files: ours, COCO, Label Studio -----------------------------------------------------------


def test_our_format_as_a_file(api_as, manager, project, pics) -> None:
    content = {"model_version": "v3", "predictions": [{"image": pics[2].pk, "annotations": []}]}
    response = post_file(api_as(manager), project, content)
    assert response.status_code == 201, response.json()
    assert stored(project) == [(pics[2].pk, "v3", [], None)]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "file"),
        (b"\xff\xfe\x00", "file"),
        (json.dumps({"something": "else"}).encode(), "format"),
        (json.dumps([1, 2, 3]).encode(), "format"),
    ],
)
def test_unreadable_files_are_400s(api_as, manager, project, pics, raw, field) -> None:
    response = post_file(api_as(manager), project, raw)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_predictions_file"
    assert field in response.json()["errors"]
    assert stored(project) == []


def _three(pics: list[Image], version: str = "v1") -> dict[str, Any]:
    def car() -> dict[str, Any]:
        return {"label": "car", "bbox": [10, 10, 50, 40], "score": 0.9}

    return {
        "model_version": version,
        "predictions": [{"image": pic.pk, "annotations": [car()]} for pic in pics],
    }


@pytest.mark.parametrize("strict", ["true", "false"])
def test_a_file_broken_part_way_stores_nothing(
    api_as, manager, project, pics, monkeypatch, strict
) -> None:
    # A file is read, checked and stored a batch at a time, in one transaction: batches
    # stored before the parser finds the file cut short are undone.
    from tasks import predictions

    monkeypatch.setattr(predictions, "IMPORT_BATCH", 1)
    raw = json.dumps(_three(pics)).encode()
    cut = raw[: raw.rindex(b'{"image"')]  # the third item and the closing brackets lost
    response = post_file(api_as(manager), project, cut, strict=strict)
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_predictions_file"
    assert "Not JSON" in response.json()["errors"]["file"][0]
    assert stored(project) == []


def test_a_strict_file_with_a_bad_item_in_a_later_batch_stores_nothing(
    api_as, manager, project, pics, monkeypatch
) -> None:
    from tasks import predictions

    monkeypatch.setattr(predictions, "IMPORT_BATCH", 1)
    content = _three(pics)
    content["predictions"][2]["annotations"][0]["label"] = "boat"
    response = post_file(api_as(manager), project, content)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_predictions"
    assert list(response.json()["errors"]) == ["predictions[2].annotations[0].label"]
    assert "1 of the 3 predictions" in response.json()["detail"]
    assert stored(project) == []
    # Not strict: the first two are stored, the third listed.
    response = post_file(api_as(manager), project, content, strict="false")
    assert response.status_code == 201
    assert response.json()["created"] == 2
    assert [r["item"] for r in response.json()["rejected"]] == ["predictions[2]"]
    assert [image for image, *_ in stored(project)] == [pics[0].pk, pics[1].pk]


def test_the_model_version_may_follow_the_predictions(api_as, manager, project, pics) -> None:
    # A file is walked, not parsed whole: the version is looked up wherever it is.
    content = _three(pics, "late")
    raw = json.dumps({"predictions": content["predictions"], "model_version": "late"})
    response = post_file(api_as(manager), project, raw.encode())
    assert response.status_code == 201, response.json()
    assert {version for _, version, _, _ in stored(project)} == {"late"}


def coco_dataset(pics: list[Image]) -> dict[str, Any]:
    return imports.coco_dataset({"score": 0.8}, {"score": 0.4})


def test_a_coco_dataset_matches_images_by_file_name(api_as, manager, project, pics) -> None:
    a, b, _ = pics
    response = post_file(api_as(manager), project, coco_dataset(pics), model_version="det-1")
    assert response.status_code == 201, response.json()
    assert stored(project) == [
        (a.pk, "det-1", [
            {"label": "car", "bbox": [10.0, 10.0, 50.0, 20.0], "score": 0.8},
            {"label": "tree", "bbox": [200.0, 50.0, 40.0, 100.0], "score": 0.4},
        ], None),
        (b.pk, "det-1", [], None),  # listed without detections: the model found nothing
    ]  # fmt: skip


def test_a_coco_dataset_needs_a_model_version(api_as, manager, project, pics) -> None:
    response = post_file(api_as(manager), project, coco_dataset(pics))
    assert response.status_code == 400
    assert "model_version" in response.json()["errors"]


def test_a_coco_dataset_with_an_unknown_image_stores_nothing(
    api_as, manager, project, pics
) -> None:
    data = coco_dataset(pics)
    data["images"].append({"id": 9, "file_name": "elsewhere.jpg"})
    response = post_file(api_as(manager), project, data, model_version="det-1")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "images[2]": ["No image named 'elsewhere.jpg' in this project."]
    }
    assert stored(project) == []
    lenient = post_file(api_as(manager), project, data, model_version="det-1", strict="false")
    assert lenient.status_code == 201
    assert lenient.json()["created"] == 2
    assert lenient.json()["rejected"][0]["item"] == "images[2]"


def test_a_coco_annotation_of_an_image_not_listed_is_a_400(api_as, manager, project, pics) -> None:
    data = coco_dataset(pics)
    data["annotations"][1]["image_id"] = 99
    response = post_file(api_as(manager), project, data, model_version="det-1")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["annotations[1]"]
    assert stored(project) == []


def test_a_coco_results_list_uses_our_ids(api_as, manager, project, pics) -> None:
    a, _, c = pics
    results = [
        {"image_id": a.pk, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": c.pk, "category_id": 2, "bbox": [5, 6, 7, 8], "score": 0.2},
        {"image_id": a.pk, "category_id": 2, "bbox": [9, 9, 9, 9], "score": 0.3},
    ]
    response = post_file(api_as(manager), project, results, model_version="det-2", format="coco")
    assert response.status_code == 201, response.json()
    assert stored(project) == [
        (a.pk, "det-2", [
            {"label": "car", "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9},
            {"label": "tree", "bbox": [9.0, 9.0, 9.0, 9.0], "score": 0.3},
        ], None),
        (c.pk, "det-2", [{"label": "tree", "bbox": [5.0, 6.0, 7.0, 8.0], "score": 0.2}], None),
    ]  # fmt: skip
    results[1]["category_id"] = 3
    bad = post_file(api_as(manager), project, results, model_version="det-3", format="coco")
    assert bad.status_code == 400
    assert list(bad.json()["errors"]) == ["[1].category_id"]


class _Counted(Parsed):
    """A parsed document that counts the elements its walks hand out."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.walked = 0

    def elements(self, key: str | None) -> Iterator[Any]:
        for element in super().elements(key):
            self.walked += 1
            yield element


def test_a_coco_file_hands_each_image_over_after_its_last_annotation() -> None:
    box = {"category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.5}
    source = _Counted([{**box, "image_id": i} for i in (1, 1, 2, 2, 2, 3)])
    reader = read_coco(source, "m", kind="bbox", labels=[LabelSpec("car")])
    assert source.walked == 6  # the first walk, before any image is handed over
    # (image, its objects, how far the second walk had gone when it was handed over)
    got = [(c.image_id, len(c.items), source.walked - 6) for c in reader]
    assert got == [(1, 2, 2), (2, 3, 5), (3, 1, 6)]

    dataset = {
        "images": [{"id": k, "file_name": f"{k}.jpg"} for k in ("a", "b", "c")],
        "categories": [{"id": 7, "name": "car"}],
        "annotations": [{**box, "category_id": 7, "image_id": k} for k in ("b", "a", "a")],
    }
    source = _Counted(dataset)
    reader = read_coco(source, "m", kind="bbox", labels=[LabelSpec("car")])
    walked = source.walked
    named = [(c.file_name, len(c.items), source.walked - walked) for c in reader]
    assert named == [("b.jpg", 1, 1), ("a.jpg", 2, 3), ("c.jpg", 0, 3)]  # unannotated last


def test_a_shuffled_coco_file_read_through_its_spill_file_is_read_the_same(monkeypatch) -> None:
    """Annotations waiting for their image's last one go to a temporary file past
    ``HELD_IN_MEMORY``: read through it, every image has the same objects in the file's
    order and the same refusals at the same places, whatever the values (a huge integer, a
    number read as infinity, a mask's counts)."""
    rng = random.Random(5)
    results: list[dict[str, Any]] = []
    for j in range(300):
        ann = {"image_id": rng.randrange(1, 40), "category_id": rng.choice([1, 2, 9]),
               "bbox": [j, rng.random() * 50, 10**30 if j == 7 else 5, float("inf")],
               "score": rng.random(), "segmentation": {"size": [4, 4], "counts": f"c{j}"}}  # fmt: skip
        results.append(ann)

    def read(held: int) -> list[tuple[Any, ...]]:
        monkeypatch.setattr(prediction_formats, "HELD_IN_MEMORY", held)
        reader = read_coco(Parsed(results), "m", kind="bbox", labels=[LabelSpec("car"), LabelSpec("tree")])  # fmt: skip
        return [(c.image_id, c.index, c.where, c.items, c.errors) for c in reader]

    in_memory, spilled, half = read(10**6), read(0), read(150)
    assert spilled == in_memory
    assert half == in_memory
    assert sum(len(items) for _, _, _, items, _ in in_memory) == sum(
        r["category_id"] != 9 for r in results
    )
    assert any(errors for *_, errors in in_memory)  # category 9 is refused where it stands
    first = next(items for image, _, _, items, _ in in_memory if image == results[7]["image_id"])
    assert [10**30, float("inf")] in [item["bbox"][2:] for item in first]


@pytest.mark.parametrize(
    ("section", "index", "key", "value"),
    [
        ("annotations", 0, "category_id", [1]),
        ("annotations", 1, "image_id", {"id": 1}),
        ("images", 0, "id", [1]),
        ("categories", 1, "id", {"id": 4}),
    ],
)
def test_coco_ids_that_are_lists_or_objects_are_400s(
    api_as, manager, project, pics, section, index, key, value
) -> None:
    data = coco_dataset(pics)
    data[section][index][key] = value
    response = post_file(api_as(manager), project, data, model_version="det-1")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [f"{section}[{index}]"]
    assert stored(project) == []


def test_coco_segmentations_in_polygon_and_mask_projects(api_as, manager) -> None:
    polygons = project_create(manager, kind="polygon", labels=["roof"], tile_size=0)
    image = image_ready(polygons, width=100, height=80, seed=21)
    data = {
        "images": [{"id": 1, "file_name": image.name}],
        "categories": [{"id": 1, "name": "roof"}],
        "annotations": [{"image_id": 1, "category_id": 1, "score": 0.6, "segmentation": [
            [0, 0, 2, 0, 2, 2], [10, 10, 50, 10, 50, 40, 10, 40]]}],  # the larger part is kept
    }  # fmt: skip
    response = post_file(api_as(manager), polygons, data, model_version="seg-1")
    assert response.status_code == 201, response.json()
    assert stored(polygons)[0][2] == [
        {"label": "roof", "points": [[10.0, 10.0], [50.0, 10.0], [50.0, 40.0], [10.0, 40.0]],
         "score": 0.6}
    ]  # fmt: skip

    masks = project_create(manager, kind="mask", labels=["road"], tile_size=0)
    image = image_ready(masks, width=20, height=10, seed=22)
    import numpy as np

    grid = np.zeros((10, 20), dtype=np.uint8, order="F")
    grid[2:6, 3:9] = 1
    rle = coco_mask.encode(grid)
    counts = rle["counts"].decode("ascii")
    results = [{"image_id": image.pk, "category_id": 1, "score": 0.75,
                "segmentation": {"size": [10, 20], "counts": counts}}]  # fmt: skip
    response = post_file(api_as(manager), masks, results, model_version="seg-2")
    assert response.status_code == 201, response.json()
    assert stored(masks)[0][2] == [
        {"label": "road", "rle": {"size": [10, 20], "counts": counts}, "score": 0.75}
    ]


def ls_tasks(width: int = 400, height: int = 200) -> list[dict[str, Any]]:
    region = {
        "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {"x": 10, "y": 25, "width": 50, "height": 50, "rotation": 0,
                  "rectanglelabels": ["car"]},
        "score": 0.66,
    }  # fmt: skip
    return [
        {"id": 1, "data": {"image": "/data/upload/3/0a1b2c3d-b.jpg"},
         "predictions": [{"model_version": "ls-1", "score": 0.5, "result": [region]}]},
        {"id": 2, "data": {"image": "s3://bucket/photos/c.png"},
         "predictions": [{"result": []}]},  # version from the request
    ]  # fmt: skip


def test_label_studio_tasks_convert_percent_to_pixels(api_as, manager, project, pics) -> None:
    _, b, c = pics
    response = post_file(api_as(manager), project, ls_tasks(), model_version="fallback")
    assert response.status_code == 201, response.json()
    assert stored(project) == [
        (b.pk, "ls-1", [{"label": "car", "bbox": [40.0, 50.0, 200.0, 100.0], "score": 0.66}], 0.5),
        (c.pk, "fallback", [], None),
    ]


def test_label_studio_turned_boxes_become_the_upright_box_around_them(
    api_as, manager, project, pics
) -> None:
    tasks = ls_tasks()
    region = tasks[0]["predictions"][0]["result"][0]
    # 20 x 20 pixels at (100, 100), turned 45 degrees clockwise about that corner.
    region["value"].update(x=25, y=50, width=5, height=10, rotation=45)
    half = 20 * math.sqrt(0.5)
    response = post_file(api_as(manager), project, tasks, model_version="x")
    assert response.status_code == 201, response.json()
    (item,) = stored(project)[0][2]
    assert item["bbox"] == pytest.approx([100 - half, 100, 2 * half, 2 * half], abs=1e-6)
    # A full turn is no turn; a rotation that is not a number is the region's fault.
    region["value"]["rotation"] = 360
    tasks[0]["predictions"][0]["model_version"] = "y"
    tasks[1]["predictions"][0]["result"] = [
        {**region, "value": {**region["value"], "rotation": "45deg"}}
    ]
    response = post_file(api_as(manager), project, tasks, model_version="y")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["tasks[1].predictions[0].result[0].value.rotation"]
    tasks[1]["predictions"][0]["result"] = []
    response = post_file(api_as(manager), project, tasks, model_version="y")
    assert response.status_code == 201, response.json()
    assert [p[2] for p in stored(project) if p[1] == "y"] == [
        [{"label": "car", "bbox": pytest.approx([100, 100, 20, 20]), "score": 0.66}],
        [],
    ]


def test_label_studio_regions_of_another_picture_or_kind_are_refused(
    api_as, manager, project, pics
) -> None:
    tasks = ls_tasks(width=200, height=400)  # the model saw the image turned on its side
    tasks[1]["predictions"][0]["result"] = [
        {
            "type": "polygonlabels",
            "value": {"points": [[1, 1], [5, 1], [5, 5]], "polygonlabels": ["car"]},
        }
    ]
    response = post_file(api_as(manager), project, tasks, model_version="x")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "the model saw another picture" in errors["tasks[0].predictions[0].result[0]"][0]
    assert "reads rectanglelabels regions" in errors["tasks[1].predictions[0].result[0].type"][0]
    assert stored(project) == []


def test_label_studio_polygons_keypoints_and_choices(api_as, manager) -> None:
    polygons = project_create(manager, kind="polygon", labels=["roof"], tile_size=0)
    image = image_ready(polygons, width=200, height=100, seed=31)
    tasks = [{"data": {"image": f"http://x/{image.name}"}, "predictions": [{"model_version": "p", "result": [
        {"type": "polygonlabels", "score": 0.4, "value": {"points": [[10, 10], [50, 10], [50, 50]], "polygonlabels": ["roof"]}}]}]}]  # fmt: skip
    assert post_file(api_as(manager), polygons, tasks).status_code == 201
    assert stored(polygons)[0][2] == [
        {"label": "roof", "points": [[20.0, 10.0], [100.0, 10.0], [100.0, 50.0]], "score": 0.4}
    ]

    poses = project_create(manager, kind="keypoints", labels=[{"name": "person", "keypoints": ["nose", "tail"]}], tile_size=0)  # fmt: skip
    image = image_ready(poses, width=200, height=100, seed=32)
    tasks = [{"data": {"image": image.name}, "predictions": [{"model_version": "k", "result": [
        {"type": "keypointlabels", "score": 0.9, "parentID": "p1", "value": {"x": 50, "y": 50, "width": 1, "keypointlabels": ["nose"]}},
        {"type": "keypointlabels", "score": 0.8, "parentID": "p2", "value": {"x": 10, "y": 20, "width": 1, "keypointlabels": ["tail"]}},
    ]}]}]  # fmt: skip
    response = post_file(api_as(manager), poses, tasks)
    assert response.status_code == 201, response.json()
    assert stored(poses)[0][2] == [
        {"label": "person", "keypoints": [[100.0, 50.0, 2], [0.0, 0.0, 0]], "score": 0.9},
        {"label": "person", "keypoints": [[0.0, 0.0, 0], [20.0, 20.0, 2]], "score": 0.8},
    ]

    classes = project_create(manager, kind="classification", labels=["cat", "dog"])
    image = image_ready(classes, seed=33)
    tasks = [{"data": {"image": image.name}, "predictions": [{"model_version": "c", "score": 0.7, "result": [
        {"type": "choices", "value": {"choices": ["dog"]}}]}]}]  # fmt: skip
    assert post_file(api_as(manager), classes, tasks).status_code == 201
    assert stored(classes)[0][2] == [{"label": "dog", "score": 0.7}]


# --- Who may ----------------------------------------------------------------------------------


def test_only_the_projects_managers_import_and_list(api_as, project, pics, worker) -> None:
    body = {"model_version": "v1", "predictions": [{"image": pics[0].pk, "annotations": []}]}
    outsider, client = ManagerFactory.create(), ClientFactory.create()
    from tasks.services import project_client_add

    project_client_add(project=project, username=client.username)
    for user, expected in ((worker, 403), (client, 403), (outsider, 404)):
        assert api_as(user).post(url(project), body, format="json").status_code == expected
        assert post_file(api_as(user), project, body).status_code == expected
        assert api_as(user).get(url(project)).status_code == expected
    assert Prediction.objects.count() == 0


def test_a_file_goes_to_the_file_route(api_as, manager, project, pics) -> None:
    payload = {"file": SimpleUploadedFile("p.json", b'{"model_version": "v", "predictions": []}')}
    response = api_as(manager).post(url(project), payload, format="multipart")
    assert response.status_code == 415
    missing = api_as(manager).post(f"{url(project)}file/", {"strict": "true"}, format="multipart")
    assert missing.status_code == 400
    assert "file" in missing.json()["errors"]
