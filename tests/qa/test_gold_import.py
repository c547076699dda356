"""Importing a manager's labelled images as gold in bulk: our JSON, COCO (dataset and results
list) and Label Studio tasks, read by the predictions' readers and checked as one gold answer
is; strict imports are all or nothing; who may import; imported gold scores workers as gold
set one image at a time does."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pycocotools import mask as coco_mask

from qa.models import GoldAnswer, GoldResult, WorkerScore
from qa.services import gold_set
from tasks.models import Image, ImageStatus, Task
from tasks.services import project_client_add, project_transition
from tests import imports
from tests.factories import ClientFactory, ManagerFactory, image_ready, project_create
from tests.imports import json_file_post, named_images
from tests.qa.helpers import answer, gold_draw

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

CAR = {"label": "car", "bbox": [10, 20, 30, 40]}


@pytest.fixture
def project(manager):
    return project_create(manager, kind="bbox", labels=["car", "tree"], tile_size=0)


@pytest.fixture
def pics(project) -> list[Image]:
    return named_images(project)


def url(project) -> str:
    return f"/api/v1/projects/{project.pk}/gold/file/"


def post_body(client, project, body: Any):
    return client.post(f"/api/v1/projects/{project.pk}/gold/bulk/", body, format="json")


def post_file(client, project, content: Any, **fields: Any):
    return json_file_post(client, url(project), content, name="gold.json", **fields)


def gold(project) -> dict[int, list[dict[str, Any]]]:
    return {
        g.image_id: g.annotations
        for g in GoldAnswer.objects.filter(project=project).order_by("image_id")
    }


def gold_tasks(project) -> set[int]:
    return set(Task.objects.filter(project=project, is_gold=True).values_list("image", flat=True))


# --- Our JSON ---------------------------------------------------------------------------------


def test_our_json_by_id_and_file_name_makes_the_images_gold(api_as, manager, project, pics) -> None:
    a, b, _ = pics
    body = {"gold": [
        {"image": a.pk, "annotations": [CAR, {"label": "tree", "bbox": [100, 20, 30, 40]}]},
        {"file_name": "b.jpg", "annotations": []},  # nothing to mark on it
    ]}  # fmt: skip
    response = post_body(api_as(manager), project, body)
    assert response.status_code == 201, response.json()
    assert response.json() == {"created": 2, "replaced": 0, "rejected": []}
    assert gold(project) == {
        a.pk: [
            {"label": "car", "bbox": [10.0, 20.0, 30.0, 40.0]},
            {"label": "tree", "bbox": [100.0, 20.0, 30.0, 40.0]},
        ],
        b.pk: [],
    }
    assert gold_tasks(project) == {a.pk, b.pk}
    assert GoldAnswer.objects.get(image=a).created_by == manager
    # The gold list shows them as it shows gold set one by one.
    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/gold/").json()
    assert [g["image"] for g in listed["results"]] == [a.pk, b.pk]


def test_our_format_as_a_file_ignores_scores(api_as, manager, project, pics) -> None:
    content = {"gold": [{"image": pics[2].pk, "annotations": [{**CAR, "score": "very sure"}]}]}
    response = post_file(api_as(manager), project, content)
    assert response.status_code == 201, response.json()
    assert gold(project) == {pics[2].pk: [{"label": "car", "bbox": [10.0, 20.0, 30.0, 40.0]}]}


def test_reimporting_replaces_gold_as_the_single_endpoint_does(
    api_as, manager, project, pics
) -> None:
    a, b, _ = pics
    client = api_as(manager)
    single = client.post(
        f"/api/v1/projects/{project.pk}/gold/", {"image": a.pk, "annotations": [CAR]}, format="json"
    )
    assert single.status_code == 201
    before = GoldAnswer.objects.get(image=a)
    body = {"gold": [{"image": a.pk, "annotations": []}, {"image": b.pk, "annotations": [CAR]}]}
    response = post_body(client, project, body)
    assert response.status_code == 201, response.json()
    assert response.json() == {"created": 1, "replaced": 1, "rejected": []}
    assert gold(project)[a.pk] == []
    after = GoldAnswer.objects.get(image=a)
    assert (after.pk, after.created_at) == (before.pk, before.created_at)
    assert after.updated_at > before.updated_at
    assert GoldAnswer.objects.filter(project=project).count() == 2
    again = post_body(client, project, body)
    assert again.json() == {"created": 0, "replaced": 2, "rejected": []}


# --- COCO -------------------------------------------------------------------------------------


def coco_dataset() -> dict[str, Any]:
    return imports.coco_dataset({"iscrowd": 0}, {"score": 2})  # a score is ignored


def test_a_coco_dataset_matches_images_by_file_name(api_as, manager, project, pics) -> None:
    a, b, _ = pics
    response = post_file(api_as(manager), project, coco_dataset())
    assert response.status_code == 201, response.json()
    assert response.json()["created"] == 2
    assert gold(project) == {
        a.pk: [
            {"label": "car", "bbox": [10.0, 10.0, 50.0, 20.0]},
            {"label": "tree", "bbox": [200.0, 50.0, 40.0, 100.0]},  # its score is not read
        ],
        b.pk: [],  # listed without annotations: nothing to mark on it
    }


def test_a_coco_results_list_uses_our_ids(api_as, manager, project, pics) -> None:
    a, _, c = pics
    results = [
        {"image_id": a.pk, "category_id": 1, "bbox": [1, 2, 3, 4]},
        {"image_id": c.pk, "category_id": 2, "bbox": [5, 6, 7, 8], "score": 0.2},
    ]
    response = post_file(api_as(manager), project, results, format="coco")
    assert response.status_code == 201, response.json()
    assert gold(project) == {
        a.pk: [{"label": "car", "bbox": [1.0, 2.0, 3.0, 4.0]}],
        c.pk: [{"label": "tree", "bbox": [5.0, 6.0, 7.0, 8.0]}],
    }


def test_coco_masks_are_checked_against_the_image_size(api_as, manager) -> None:
    masks = project_create(manager, kind="mask", labels=["road"], tile_size=0)
    image = image_ready(masks, width=20, height=10, seed=22)
    grid = np.zeros((10, 20), dtype=np.uint8, order="F")
    grid[2:6, 3:9] = 1
    counts = coco_mask.encode(grid)["counts"].decode("ascii")
    results = [{"image_id": image.pk, "category_id": 1,
                "segmentation": {"size": [10, 20], "counts": counts}}]  # fmt: skip
    response = post_file(api_as(manager), masks, results)
    assert response.status_code == 201, response.json()
    assert gold(masks) == {
        image.pk: [{"label": "road", "rle": {"size": [10, 20], "counts": counts}}]
    }

    other = image_ready(masks, width=40, height=10, seed=23)
    results[0]["image_id"] = other.pk  # the mask is of a 20-pixel-wide image
    response = post_file(api_as(manager), masks, results)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["[0].annotations[0].rle.size"]
    assert other.pk not in gold(masks)


# --- Label Studio -----------------------------------------------------------------------------


def ls_region(label: str = "car", width: int = 400, height: int = 200) -> dict[str, Any]:
    return {
        "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {"x": 10, "y": 25, "width": 50, "height": 50, "rotation": 0,
                  "rectanglelabels": [label]},
    }  # fmt: skip


def ls_export() -> list[dict[str, Any]]:
    """Label Studio's JSON export: each task's people's annotations (and a model's
    predictions, which are not gold)."""
    return [
        {"id": 1, "data": {"image": "/data/upload/3/0a1b2c3d-b.jpg"},
         "annotations": [
             {"id": 10, "was_cancelled": True, "result": [ls_region("tree")]},
             {"id": 11, "completed_by": 1, "result": [ls_region()]},
         ],
         "predictions": [{"model_version": "m", "result": [ls_region("tree")]}]},
        {"id": 2, "data": {"image": "s3://bucket/photos/c.png"},
         "annotations": [{"id": 12, "result": []}]},
    ]  # fmt: skip


def test_label_studio_annotations_convert_percent_to_pixels(api_as, manager, project, pics) -> None:
    _, b, c = pics
    response = post_file(api_as(manager), project, ls_export())
    assert response.status_code == 201, response.json()
    assert gold(project) == {
        b.pk: [{"label": "car", "bbox": [40.0, 50.0, 200.0, 100.0]}],
        c.pk: [],
    }


def test_label_studio_tasks_without_one_annotation_are_refused(
    api_as, manager, project, pics
) -> None:
    tasks = ls_export()
    tasks[0]["annotations"][0]["was_cancelled"] = False  # two people's answers: which is gold?
    tasks[1]["annotations"] = []  # only the model's, or nobody's
    tasks[1]["predictions"] = [{"model_version": "m", "result": []}]
    response = post_file(api_as(manager), project, tasks)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "has 2 annotations" in errors["tasks[0].annotations"][0]
    assert "no annotation" in errors["tasks[1].annotations"][0]
    assert gold(project) == {}


def test_label_studio_regions_of_another_picture_are_refused(
    api_as, manager, project, pics
) -> None:
    tasks = ls_export()[:1]
    tasks[0]["annotations"][1]["result"] = [ls_region(width=200, height=400)]
    response = post_file(api_as(manager), project, tasks)
    assert response.status_code == 400
    message = response.json()["errors"]["tasks[0].annotations[1].result[0]"][0]
    assert "another picture" in message


# --- Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "file"),
        (b"\xff\xfe\x00", "file"),
        (json.dumps({"something": "else"}).encode(), "format"),
        (json.dumps([1, 2, 3]).encode(), "format"),
        # A predictions file is not a gold file: a model's guesses are not truth.
        (json.dumps({"model_version": "v", "predictions": []}).encode(), "format"),
        (json.dumps({"gold": {"image": 1}}).encode(), "gold"),
        (json.dumps({"images": [{"id": 1}], "annotations": []}).encode(), "images[0]"),
        (json.dumps([{"data": {}}]).encode(), "tasks[0].data.image"),
    ],
)
def test_unreadable_files_are_400s(api_as, manager, project, pics, raw, field) -> None:
    response = post_file(api_as(manager), project, raw)
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_gold_file"
    assert field in response.json()["errors"]
    assert gold(project) == {}


@pytest.mark.parametrize(
    "body",
    [[], {"gold": "all"}, {"gold": [{"image": "x", "annotations": []}]}, {"gold": [7]}],
)
def test_wrong_json_bodies_are_400s(api_as, manager, project, pics, body) -> None:
    response = post_body(api_as(manager), project, body)
    assert response.status_code == 400, response.json()
    assert gold(project) == {}


BAD_ITEMS = [
    ({"image": 0, "annotations": []}, "gold[1].image", "No image 0"),
    ({"file_name": "elsewhere.jpg", "annotations": []}, "gold[1]", "No image named"),
    ({"file_name": "b.jpg", "annotations": [{"label": "bus", "bbox": [1, 1, 5, 5]}]},
     "gold[1].annotations[0].label", "bus"),
    ({"file_name": "b.jpg", "annotations": [{"label": "car", "bbox": [300, 10, 500, 5]}]},
     "gold[1].annotations[0].bbox", ""),
    ({"file_name": "b.jpg", "annotations": [{"label": "car", "points": [[1, 1]]}]},
     "gold[1].annotations[0]", ""),
    ({"file_name": "b.jpg", "annotations": {"label": "car"}}, "gold[1].annotations", "list"),
    ({"file_name": "street/a.jpg", "annotations": []}, "gold[1]", "given at gold[0] too"),
]  # fmt: skip


@pytest.mark.parametrize(("item", "where", "said"), BAD_ITEMS)
def test_strict_one_bad_item_is_a_400_naming_it_and_nothing_is_stored(
    api_as, manager, project, pics, item, where, said
) -> None:
    a = pics[0]
    body = {"gold": [{"image": a.pk, "annotations": [CAR]}, item]}
    response = post_body(api_as(manager), project, body)
    assert response.status_code == 400, response.json()
    error = response.json()
    assert error["code"] == "invalid_gold"
    assert [k for k in error["errors"] if k.startswith(where)] == list(error["errors"])
    assert said in " ".join(m for ms in error["errors"].values() for m in ms)
    assert "nothing was stored" in error["detail"]
    assert gold(project) == {}
    assert gold_tasks(project) == set()


def test_strict_keeps_the_earlier_gold_untouched(api_as, manager, project, pics) -> None:
    a, b, _ = pics
    gold_set(project=project, image_id=a.pk, annotations=[CAR], user=manager)
    body = {"gold": [
        {"image": a.pk, "annotations": []},
        {"image": b.pk, "annotations": [{"label": "bus", "bbox": [1, 1, 5, 5]}]},
    ], "strict": True}  # fmt: skip
    assert post_body(api_as(manager), project, body).status_code == 400
    assert gold(project) == {a.pk: [{"label": "car", "bbox": [10.0, 20.0, 30.0, 40.0]}]}


def test_not_strict_stores_the_valid_ones_and_lists_the_others(
    api_as, manager, project, pics
) -> None:
    a, b, c = pics
    content = {"gold": [
        {"image": a.pk, "annotations": [CAR]},
        {"image": b.pk, "annotations": [{"label": "bus", "bbox": [1, 1, 5, 5]}]},
        {"file_name": "nowhere.png", "annotations": []},
        {"image": c.pk, "annotations": []},
    ]}  # fmt: skip
    response = post_file(api_as(manager), project, content, strict="false")
    assert response.status_code == 201, response.json()
    report = response.json()
    assert (report["created"], report["replaced"]) == (2, 0)
    assert [(r["index"], r["item"]) for r in report["rejected"]] == [(1, "gold[1]"), (2, "gold[2]")]
    assert "bus" in report["rejected"][0]["error"]
    assert "nowhere.png" in report["rejected"][1]["error"]
    assert set(gold(project)) == {a.pk, c.pk}
    assert gold_tasks(project) == {a.pk, c.pk}
    as_body = post_body(api_as(manager), project, {**content, "strict": False})
    assert as_body.status_code == 201
    assert as_body.json()["replaced"] == 2
    assert post_file(api_as(manager), project, content, strict="maybe").status_code == 400


def test_an_image_not_ready_or_of_another_project_cannot_be_gold(
    api_as, manager, project, pics
) -> None:
    pending = pics[1]
    Image.objects.filter(pk=pending.pk).update(status=ImageStatus.PENDING)
    theirs = image_ready(project_create(manager, kind="bbox", labels=["car"]), seed=50)
    body = {"gold": [
        {"image": pending.pk, "annotations": []},
        {"image": theirs.pk, "annotations": []},
    ]}  # fmt: skip
    response = post_body(api_as(manager), project, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "gold can be set once it is ready" in errors["gold[0]"][0]
    assert errors["gold[1].image"] == [f"No image {theirs.pk} in this project."]
    assert GoldAnswer.objects.count() == 0


def test_a_file_past_the_limit_is_a_413(api_as, manager, project, pics, settings) -> None:
    settings.MAX_PREDICTIONS_BYTES = 1000
    content = {"gold": [{"image": pics[0].pk, "annotations": []}] * 100}
    response = post_file(api_as(manager), project, content)
    assert response.status_code == 413
    assert gold(project) == {}


def test_a_json_body_past_the_request_limit_is_a_413(
    api_as, manager, project, pics, settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = {"gold": [{"image": pics[0].pk, "annotations": [CAR] * 400}]}
    assert post_body(api_as(manager), project, body).status_code == 413


def test_a_form_without_a_file_or_with_an_unknown_format_is_a_400(
    api_as, manager, project, pics
) -> None:
    missing = api_as(manager).post(url(project), {"strict": "true"}, format="multipart")
    assert missing.status_code == 400
    assert "file" in missing.json()["errors"]
    unknown = post_file(api_as(manager), project, {"gold": []}, format="yolo")
    assert unknown.status_code == 400
    assert "format" in unknown.json()["errors"]


def test_each_route_reads_its_own_body_type(api_as, manager, project, pics) -> None:
    body = {"gold": [{"image": pics[0].pk, "annotations": []}]}
    assert api_as(manager).post(url(project), body, format="json").status_code == 415
    payload = {"file": SimpleUploadedFile("g.json", json.dumps(body).encode())}
    bulk = f"/api/v1/projects/{project.pk}/gold/bulk/"
    assert api_as(manager).post(bulk, payload, format="multipart").status_code == 415
    assert gold(project) == {}


# --- Who may ----------------------------------------------------------------------------------


def test_only_the_projects_managers_import(api_as, project, pics, worker) -> None:
    body = {"gold": [{"image": pics[0].pk, "annotations": []}]}
    outsider, client = ManagerFactory.create(), ClientFactory.create()
    project_client_add(project=project, username=client.username)
    for user, expected in ((worker, 403), (client, 403), (outsider, 404)):
        assert post_body(api_as(user), project, body).status_code == expected
        assert post_file(api_as(user), project, body).status_code == expected
    assert GoldAnswer.objects.count() == 0


# --- Scoring ----------------------------------------------------------------------------------


LABELS = ["cat", "dog", "bird", "fish"]


def scored_worker(manager, worker, api_as, *, bulk: bool) -> tuple[int, int, list[bool]]:
    """A worker answers four gold images (two right, two wrong) of a project whose gold was
    imported in bulk, or set one image at a time: their gold record."""
    project = project_create(
        manager, kind="classification", labels=LABELS, gold_rate=0.2, min_overlap=1,
        max_overlap=1,
    )  # fmt: skip
    truth: dict[int, str] = {}
    for i in range(4):
        image = image_ready(project, seed=i)
        truth[image.pk] = LABELS[i]
    items: list[dict[str, Any]] = [
        {"image": pk, "annotations": [{"label": label}]} for pk, label in truth.items()
    ]
    if bulk:
        response = post_file(api_as(manager), project, {"gold": items})
        assert response.status_code == 201, response.json()
    else:
        for item in items:
            gold_set(
                project=project, image_id=item["image"], annotations=item["annotations"],
                user=manager,
            )  # fmt: skip
    project = project_transition(project=project, action="start")

    def half_right(assignment):
        image_id = assignment.task.image_id
        return [{"label": truth[image_id] if LABELS.index(truth[image_id]) % 2 else "fish"}]

    for _ in range(4):
        assert answer(project, worker, half_right, rand=gold_draw) is not None
    row = WorkerScore.objects.get(project=project, worker=worker)
    results = {
        r.assignment.task.image_id: r.passed
        for r in GoldResult.objects.filter(worker=worker, assignment__task__project=project)
    }
    return row.gold_seen, row.gold_passed, [results[pk] for pk in sorted(truth)]


def test_imported_gold_scores_workers_as_single_gold_does(api_as, manager, worker) -> None:
    bulk = scored_worker(manager, worker, api_as, bulk=True)
    single = scored_worker(manager, worker, api_as, bulk=False)
    # fish is right on the last image and "fish" replaces the answer on the even ones.
    assert bulk == single == (4, 2, [False, True, False, True])
