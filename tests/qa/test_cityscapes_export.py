"""Cityscapes datasets of mask projects: gtFine labelIds and instanceIds PNGs, read back with
Pillow and with Datumaro's Cityscapes importer, and the export through the API."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PilImage

from qa.exports.formats import Record, write_cityscapes
from qa.models import ConsensusResult
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.mask_crowd import rle
from tests.qa.test_exports import build, crowd_work, real_file, unzip
from tests.qa.test_mask_exports import CAR, LABELS, ROAD, TWO_PARTS, H, W, box, records

GT = "gtFine/train/default"


def write(records_: list[Record], **options: Any) -> zipfile.ZipFile:
    out = io.BytesIO()
    write_cityscapes(out, records_, labels=LABELS, card=lambda c: "card", **options)
    return zipfile.ZipFile(out)


def png(archive: zipfile.ZipFile, name: str) -> PilImage.Image:
    return PilImage.open(io.BytesIO(archive.read(name)))


def test_label_and_instance_ids_as_cityscapes_codes_them() -> None:
    archive = write(records())
    names = set(archive.namelist())
    for image in ("a", "b", "c"):
        for suffix in ("labelIds", "instanceIds", "labelTrainIds", "color"):
            assert f"{GT}/{image}_gtFine_{suffix}.png" in names
    assert {"label_colors.txt", "dataset_meta.json", "README.md",
            "leftImg8bit/train/default/"} <= names  # fmt: skip

    label_ids = png(archive, f"{GT}/a_gtFine_labelIds.png")
    assert label_ids.mode == "L"
    # road is label 1, car label 2; the more confident car (0.9) keeps the pixels it shares
    # with the road (0.6).
    expected = np.where(CAR > 0, 2, np.where(ROAD > 0, 1, 0))
    assert np.array_equal(np.asarray(label_ids), expected)
    train_ids = np.asarray(png(archive, f"{GT}/a_gtFine_labelTrainIds.png"))
    assert np.array_equal(train_ids, expected)

    instance_ids = png(archive, f"{GT}/a_gtFine_instanceIds.png")
    assert instance_ids.mode in ("I;16", "I")  # 16-bit greyscale, as Cityscapes ships
    values = np.asarray(instance_ids).astype(np.int64)
    assert np.array_equal(values, np.where(CAR > 0, 2000, np.where(ROAD > 0, 1000, 0)))
    # One mask of two regions is one instance.
    two = np.asarray(png(archive, f"{GT}/b_gtFine_instanceIds.png")).astype(np.int64)
    assert np.array_equal(two, TWO_PARTS.astype(np.int64) * 2000)
    assert not np.asarray(png(archive, f"{GT}/c_gtFine_labelIds.png")).any()

    color = png(archive, f"{GT}/a_gtFine_color.png").convert("RGB")
    assert np.asarray(color)[CAR > 0].tolist()[0] == [255, 0, 0]
    assert np.asarray(color)[(ROAD > 0) & (CAR == 0)].tolist()[0] == [128, 128, 128]
    assert archive.read("label_colors.txt").decode().splitlines() == [
        "0 0 0 background", "128 128 128 road", "255 0 0 car",
    ]  # fmt: skip
    meta = json.loads(archive.read("dataset_meta.json"))
    assert meta["label_map"] == {"0": "background", "1": "road", "2": "car"}
    assert meta["segmentation_colors"] == [[0, 0, 0], [128, 128, 128], [255, 0, 0]]


def test_instances_of_a_class_are_numbered_from_zero_in_order() -> None:
    cars = [box(0, 0, 4, 4), box(10, 0, 4, 4), box(20, 0, 4, 4)]
    record = Record(id=1, file_name="many.png", width=W, height=H, annotations=[
        {"label": "car", "rle": rle(m), "score": 0.9} for m in cars
    ] + [{"label": "road", "rle": rle(ROAD), "score": 0.5}])  # fmt: skip
    values = np.asarray(png(write([record]), f"{GT}/many_gtFine_instanceIds.png")).astype(int)
    for n, mask in enumerate(cars):
        assert (values[mask > 0] == 2000 + n).all()
    assert (values[ROAD > 0] == 1000).all()
    assert set(np.unique(values).tolist()) == {0, 1000, 2000, 2001, 2002}


def test_past_a_thousand_objects_of_a_class_the_rest_are_a_group() -> None:
    width, height = 50, 21  # 1,050 pixels, one object each
    items = []
    for k in range(1001):
        mask = np.zeros((height, width), dtype=np.uint8)
        mask.flat[k] = 1
        items.append({"label": "car", "rle": rle(mask), "score": 0.5})
    record = Record(id=1, file_name="crowd.png", width=width, height=height, annotations=items)
    values = np.asarray(png(write([record]), f"{GT}/crowd_gtFine_instanceIds.png")).astype(int)
    flat = values.reshape(-1, order="C")
    assert flat[0] == 2000
    assert flat[999] == 2999
    assert flat[1000] == 2  # Cityscapes' mark for objects of a class not told apart
    assert (flat[1001:] == 0).all()


def test_semantic_masks_carry_class_ids_as_instance_ids() -> None:
    archive = write(records(), instances=False)
    values = np.asarray(png(archive, f"{GT}/a_gtFine_instanceIds.png")).astype(np.int64)
    assert np.array_equal(values, np.where(CAR > 0, 2, np.where(ROAD > 0, 1, 0)))


def test_subsets_and_images_go_where_cityscapes_puts_them() -> None:
    shipped = [
        Record(id=r.id, file_name=r.file_name, width=W, height=H, annotations=r.annotations,
               subset=subset, open=lambda: io.BytesIO(b"jpeg bytes"))
        for r, subset in zip(records(), ("train", "val", "val"), strict=True)
    ]  # fmt: skip
    names = set(write(shipped).namelist())
    assert "gtFine/train/default/a_gtFine_labelIds.png" in names
    assert "gtFine/val/default/b_gtFine_instanceIds.png" in names
    assert "leftImg8bit/val/default/c_leftImg8bit.jpg" in names
    assert "leftImg8bit/train/default/a_leftImg8bit.jpg" in names


def test_loads_in_datumaro_with_our_labels_and_masks(tmp_path: Path) -> None:
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    picture = io.BytesIO()
    PilImage.new("RGB", (W, H), (90, 90, 90)).save(picture, format="PNG")
    shipped = [
        Record(id=r.id, file_name=r.file_name.replace(".jpg", ".png"), width=W, height=H,
               annotations=r.annotations, open=lambda: io.BytesIO(picture.getvalue()))
        for r in records()
    ]  # fmt: skip
    write(shipped).extractall(tmp_path)
    # Found by its layout: gtFine instance PNGs beside leftImg8bit images.
    assert Dataset.detect(str(tmp_path)) == "cityscapes"
    dataset = Dataset.import_from(str(tmp_path), "cityscapes")
    names = [label.name for label in dataset.categories()[AnnotationType.label]]
    assert names == ["background", "road", "car"]
    colors = dataset.categories()[AnnotationType.mask].colormap
    assert (colors[1], colors[2]) == ((128, 128, 128), (255, 0, 0))
    masks = {
        item.id: {names[a.label]: np.asarray(a.image, dtype=bool) for a in item.annotations}
        for item in dataset
    }
    assert set(masks) == {"default/a", "default/b", "default/c"}
    assert all(item.media is not None and item.media.size == (H, W) for item in dataset)
    assert set(masks["default/a"]) == {"road", "car"}
    assert np.array_equal(masks["default/a"]["car"], CAR > 0)
    assert np.array_equal(masks["default/a"]["road"], (ROAD > 0) & (CAR == 0))
    assert np.array_equal(masks["default/b"]["car"], TWO_PARTS > 0)
    assert masks["default/c"] == {}


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def decoded(item: dict[str, Any]) -> np.ndarray:
    from qa.exports.formats import decode_mask

    return decode_mask(item["rle"]) > 0


@pytest.mark.django_db
@pytest.mark.both_databases
def test_a_mask_project_exports_as_cityscapes(api_as, manager, tmp_path) -> None:
    project = project_create(
        manager, kind="mask", labels=["road", "car"], gold_rate=0.0, min_overlap=2,
        max_overlap=2, agreement_threshold=0.1, name="Streets",
    )  # fmt: skip
    truth: dict[int, list[dict[str, Any]]] = {}
    for seed in range(3):
        image = image_ready(project, width=W, height=H, seed=seed)
        real_file(image, seed)
        truth[image.pk] = [
            {"label": "road", "rle": rle(ROAD)},
            {"label": "car", "rle": rle(np.roll(CAR, 4 * seed, axis=1))},
            {"label": "car", "rle": rle(box(36, 2, 8, 6))},
        ]
    from tasks.services import project_transition

    project = project_transition(project=project, action="start")
    crowd_work(project, [WorkerFactory.create() for _ in range(2)], lambda i: truth[i])

    export, data = build(api_as(manager), project, format="cityscapes")
    assert export.format == "cityscapes"
    assert export.file_name.endswith("-cityscapes.zip")
    root = unzip(data, tmp_path / "cityscapes")
    results = ConsensusResult.objects.filter(run=export.consensus_run).select_related("image")
    assert results.count() == 3
    for result in results:
        stem = result.image.name.rsplit(".", 1)[0]
        assert (root / "leftImg8bit/train/default" / f"{stem}_leftImg8bit.jpg").is_file()
        labels = np.asarray(PilImage.open(root / GT / f"{stem}_gtFine_labelIds.png"))
        instances = np.asarray(PilImage.open(root / GT / f"{stem}_gtFine_instanceIds.png"))
        instances = instances.astype(np.int64)
        merged = result.annotations
        assert len(merged) == 3
        # Against the merged masks themselves: every object's pixels that no other object
        # covers carry its class, and its own instance id, one per object of the class.
        seen: dict[int, set[int]] = {}
        for k, item in enumerate(merged):
            cls = ["road", "car"].index(item["label"]) + 1
            mine = decoded(item)
            others = np.zeros_like(mine)
            for j, other in enumerate(merged):
                if j != k:
                    others |= decoded(other)
            alone = mine & ~others
            assert alone.any()
            assert (labels[alone] == cls).all()
            ids = set(np.unique(instances[alone]).tolist())
            assert len(ids) == 1
            (instance,) = ids
            assert instance // 1000 == cls
            seen.setdefault(cls, set()).add(instance)
        assert seen == {1: {1000}, 2: {2000, 2001}}
        covered = np.zeros((H, W), dtype=bool)
        for item in merged:
            covered |= decoded(item)
        assert (labels[~covered] == 0).all()
        assert (instances[~covered] == 0).all()

    from datumaro.components.dataset import Dataset

    dataset = Dataset.import_from(str(root), "cityscapes")
    assert len(dataset) == 3
    assert all(len(item.annotations) == 2 for item in dataset)  # road and car, as classes


@pytest.mark.django_db
def test_cityscapes_is_for_mask_projects_only(api_as, manager) -> None:
    project = project_create(manager, kind="bbox", labels=["car"])
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "cityscapes"}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"]
    assert body["detail"]
    assert body["errors"]["format"] == [
        "A bbox project cannot be exported as cityscapes (Cityscapes is for mask projects)."
    ]
    assert not project.exports.exists()


@pytest.mark.django_db
def test_instance_ids_hold_at_most_64_classes(api_as, manager) -> None:
    labels = [f"class{i}" for i in range(65)]
    project = project_create(manager, kind="mask", labels=labels)
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "cityscapes"}, format="json"
    )
    assert response.status_code == 400
    assert "at most 64 classes" in response.json()["errors"]["format"][0]
    semantic = project_create(manager, kind="mask", labels=labels, mask_mode="semantic",
                              name="Semantic")  # fmt: skip
    response = api_as(manager).post(
        f"/api/v1/projects/{semantic.pk}/exports/", {"format": "cityscapes"}, format="json"
    )
    assert response.status_code == 202
