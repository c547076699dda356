"""Mask answers: COCO compressed RLE of the full image, checked item by item."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from qa.models import GoldAnswer
from tasks.annotations import (
    MAX_MASKS,
    AnnotationError,
    Schema,
    rle_runs,
    validate_annotations,
)
from tasks.models import Project, Task
from tests.factories import image_ready, project_create

W, H = 40, 30


def rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def square(x: int, y: int, side: int, width: int = W, height: int = H) -> dict:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y : y + side, x : x + side] = 1
    return rle(mask)


def check(payload: object, mode: str = "instance") -> list[dict]:
    schema = Schema(kind="mask", keypoints={"road": [], "car": []}, mask_mode=mode)
    return validate_annotations(payload, schema=schema, width=W, height=H)


def errors_of(payload: object, mode: str = "instance") -> dict[str, list[str]]:
    with pytest.raises(AnnotationError) as caught:
        check(payload, mode)
    return caught.value.errors


class TestRleRuns:
    @pytest.mark.parametrize("seed", range(5))
    def test_reads_back_what_pycocotools_writes(self, seed: int) -> None:
        mask = np.random.default_rng(seed).random((H, W)) > 0.6
        runs = rle_runs(rle(mask)["counts"])
        assert runs is not None
        assert sum(runs) == W * H
        # Column-major runs alternating background and mask.
        flat = mask.T.reshape(-1)
        assert sum(runs[1::2]) == int(flat.sum())
        decoded = np.repeat(np.arange(len(runs)) % 2, runs)
        assert np.array_equal(decoded, flat.astype(int))

    @pytest.mark.parametrize("counts", ["1Y", "1\x7f", "ab cd", "P"])
    def test_refuses_what_is_not_an_rle_string(self, counts: str) -> None:
        assert rle_runs(counts) is None


class TestMaskAnswers:
    def test_valid_masks_are_kept_as_given(self) -> None:
        items = [{"label": "road", "rle": square(0, 0, 10), "extra": 1},
                 {"label": "car", "rle": square(5, 5, 10)}]  # fmt: skip
        out = check(items)
        assert out == [{"label": "road", "rle": square(0, 0, 10)},
                       {"label": "car", "rle": square(5, 5, 10)}]  # fmt: skip
        assert check([]) == []

    @pytest.mark.parametrize(
        ("item", "where", "words"),
        [
            ({"label": "bus", "rle": square(0, 0, 3)}, "annotations[0].label", "Unknown"),
            ({"label": "road"}, "annotations[0].rle", "size"),
            ({"label": "road", "rle": {"size": [H, W]}}, "annotations[0].rle", "counts"),
            ({"label": "road", "rle": {**square(0, 0, 3), "x": 1}}, "annotations[0].rle", "size"),
            ({"label": "road", "rle": square(0, 0, 3, width=W + 1)}, "annotations[0].rle.size", "the image is 30x40"),
            ({"label": "road", "rle": square(0, 0, 3, width=H, height=W)}, "annotations[0].rle.size", "height x width"),
            ({"label": "road", "rle": {"size": [H, "40"], "counts": "0"}}, "annotations[0].rle.size", "whole pixels"),
            ({"label": "road", "rle": {"size": [H, W], "counts": [0, 5]}}, "annotations[0].rle.counts", "string"),
            ({"label": "road", "rle": {"size": [H, W], "counts": "not rle!"}}, "annotations[0].rle.counts", "not a COCO"),
            ({"label": "road", "rle": {"size": [H, W], "counts": square(0, 0, 3, width=W - 1)["counts"]}}, "annotations[0].rle.counts", "pixels"),
            ({"label": "road", "rle": rle(np.zeros((H, W)))}, "annotations[0].rle", "empty"),
        ],
    )  # fmt: skip
    def test_each_problem_is_named_where_it_is(self, item: dict, where: str, words: str) -> None:
        errors = errors_of([{"label": "car", "rle": square(1, 1, 2)}, item])
        where = where.replace("[0]", "[1]")
        assert where in errors, errors
        assert any(words in message for message in errors[where]), errors
        assert not any(k.startswith("annotations[0]") for k in errors)

    def test_the_number_of_masks_is_capped(self) -> None:
        errors = errors_of([{"label": "car", "rle": square(0, 0, 2)}] * (MAX_MASKS + 1))
        assert f"At most {MAX_MASKS} masks" in errors["annotations"][0]

    def test_instance_masks_may_overlap_semantic_ones_may_not(self) -> None:
        items = [{"label": "road", "rle": square(0, 0, 10)},
                 {"label": "car", "rle": square(20, 20, 5)},
                 {"label": "car", "rle": square(8, 8, 4)}]  # fmt: skip
        assert len(check(items)) == 3
        errors = errors_of(items, mode="semantic")
        assert list(errors) == ["annotations[2].rle"]
        # Pixels 8..9 x 8..9 lie in both squares.
        assert "overlaps annotations[0] on 4 pixels" in errors["annotations[2].rle"][0]
        assert len(check(items[:2], mode="semantic")) == 2


@pytest.mark.django_db
@pytest.mark.both_databases
def test_a_mask_project_is_created_and_its_mode_checked(api_as, manager) -> None:
    body = {"name": "Streets", "kind": "mask", "labels": ["road", "car"], "mask_mode": "semantic"}
    response = api_as(manager).post("/api/v1/projects/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["mask_mode"] == "semantic"
    assert Project.objects.get(pk=response.json()["id"]).mask_mode == "semantic"
    response = api_as(manager).post(
        "/api/v1/projects/", {**body, "mask_mode": "panoptic"}, format="json"
    )
    assert response.status_code == 400
    assert "mask_mode" in response.json()["errors"]
    plain = {k: v for k, v in body.items() if k != "mask_mode"}
    response = api_as(manager).post("/api/v1/projects/", plain, format="json")
    assert response.json()["mask_mode"] == "instance"


@pytest.mark.django_db
@pytest.mark.both_databases
def test_mask_projects_tile_and_fix_their_mode_once_they_have_tasks(api_as, manager) -> None:
    project = project_create(manager, kind="mask", labels=["road"], tile_size=256, tile_overlap=64)
    image = image_ready(project, width=600, height=400)
    assert Task.objects.filter(image=image).count() == 6  # three columns, two rows
    response = api_as(manager).patch(
        f"/api/v1/projects/{project.pk}/", {"mask_mode": "semantic"}, format="json"
    )
    assert response.status_code == 409, response.json()
    project.refresh_from_db()
    assert project.mask_mode == "instance"


@pytest.mark.django_db
@pytest.mark.both_databases
def test_a_bad_gold_mask_is_a_400_naming_the_item_and_stores_nothing(api_as, manager) -> None:
    project = project_create(manager, kind="mask", labels=["road", "car"], mask_mode="semantic")
    image = image_ready(project, width=W, height=H)
    good = {"label": "road", "rle": square(0, 0, 10)}
    url = f"/api/v1/projects/{project.pk}/gold/"
    for items, where in [
        ([good, {"label": "car", "rle": square(5, 5, 10)}], "annotations[1].rle"),
        ([good, {"label": "car", "rle": square(0, 0, 3, width=W * 2)}], "annotations[1].rle.size"),
    ]:
        response = api_as(manager).post(
            url, {"image": image.pk, "annotations": items}, format="json"
        )
        assert response.status_code == 400, response.json()
        assert where in response.json()["errors"], response.json()
    assert not GoldAnswer.objects.exists()
    response = api_as(manager).post(url, {"image": image.pk, "annotations": [good]}, format="json")
    assert response.status_code == 201, response.json()
    assert GoldAnswer.objects.get().annotations == [good]


@pytest.mark.django_db
@pytest.mark.both_databases
def test_a_bad_mask_answer_is_a_400_and_the_lease_stays_open(api_as, manager, worker) -> None:
    from tasks import routing
    from tasks.models import Assignment, AssignmentStatus
    from tasks.services import project_transition

    project = project_create(
        manager, kind="mask", labels=["road", "car"], mask_mode="semantic", gold_rate=0.0
    )
    image_ready(project, width=W, height=H)
    project = project_transition(project=project, action="start")
    lease = routing.assignment_next(project=project, worker=worker, rand=lambda: 1.0)
    assert lease is not None
    url = f"/api/v1/assignments/{lease.pk}/submit/"
    overlapping = [
        {"label": "road", "rle": square(0, 0, 10)},
        {"label": "car", "rle": square(9, 9, 5)},
    ]
    response = api_as(worker).post(url, {"annotations": overlapping}, format="json")
    assert response.status_code == 400, response.json()
    assert (
        "overlaps annotations[0] on 1 pixel;" in response.json()["errors"]["annotations[1].rle"][0]
    )
    assert Assignment.objects.get().status == AssignmentStatus.LEASED
    assert Task.objects.get().answers == 0
    good = [overlapping[0], {"label": "car", "rle": square(20, 10, 5)}]
    response = api_as(worker).post(url, {"annotations": good}, format="json")
    assert response.status_code == 200, response.json()
    assert Assignment.objects.get().answer == good


@pytest.mark.django_db
def test_a_lease_tells_the_workspace_the_mask_mode(api_as, manager, worker) -> None:
    from tasks.services import project_transition

    for mode in ("semantic", "instance"):
        project = project_create(
            manager, kind="mask", labels=["road", "car"], mask_mode=mode, gold_rate=0.0
        )
        image_ready(project, width=W, height=H)
        project_transition(project=project, action="start")
        response = api_as(worker).post(f"/api/v1/projects/{project.pk}/assignments/next/")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert (body["kind"], body["mask_mode"]) == ("mask", mode)
        assert body["task"]["region"] == [0, 0, W, H]  # smaller than a tile: the whole image
