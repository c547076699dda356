"""Mask datasets: COCO RLE, Pascal VOC segmentation PNGs and YOLO segments, each read back."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PilImage
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from qa.exports.formats import Label, Record, voc_colormap, write_coco, write_voc, write_yolo
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.mask_crowd import rle
from tests.qa.test_exports import build, crowd_work, real_file, unzip

W, H = 48, 32
LABELS = [Label("road", "#808080"), Label("car", "#ff0000")]


def box(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


ROAD = box(0, 20, 48, 12)
CAR = box(5, 10, 12, 14)  # overlaps the road on rows 20..23
TWO_PARTS = box(30, 2, 6, 6) | box(40, 2, 6, 6)


def records() -> list[Record]:
    return [
        Record(id=1, file_name="a.jpg", width=W, height=H, annotations=[
            {"label": "road", "rle": rle(ROAD), "score": 0.6, "num_votes": 3},
            {"label": "car", "rle": rle(CAR), "score": 0.9, "num_votes": 2},
        ]),
        Record(id=2, file_name="b.jpg", width=W, height=H, annotations=[
            {"label": "car", "rle": rle(TWO_PARTS), "score": 0.8, "num_votes": 3},
        ]),
        Record(id=3, file_name="c.jpg", width=W, height=H, annotations=[]),
    ]  # fmt: skip


def test_coco_carries_masks_as_rle_that_pycocotools_reads(tmp_path: Path) -> None:
    out = io.BytesIO()
    counts = write_coco(out, records(), kind="mask", labels=LABELS, description="streets")
    path = tmp_path / "coco.json"
    path.write_bytes(out.getvalue())
    coco = COCO(str(path))
    assert counts.annotations == 3
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    by_label = {coco.loadCats(a["category_id"])[0]["name"]: a for a in anns}
    assert np.array_equal(coco.annToMask(by_label["road"]), ROAD)
    assert np.array_equal(coco.annToMask(by_label["car"]), CAR)
    assert by_label["car"]["area"] == int(CAR.sum())
    assert by_label["car"]["bbox"] == [5, 10, 12, 14]
    assert (by_label["car"]["score"], by_label["car"]["num_votes"]) == (0.9, 2)
    assert by_label["car"]["iscrowd"] == 0
    assert isinstance(by_label["car"]["segmentation"]["counts"], str)
    (two,) = coco.loadAnns(coco.getAnnIds(imgIds=[2]))
    assert np.array_equal(coco.annToMask(two), TWO_PARTS)


def read_png(archive: zipfile.ZipFile, name: str) -> PilImage.Image:
    return PilImage.open(io.BytesIO(archive.read(name)))


def test_voc_writes_class_and_object_pngs_with_a_palette_and_labelmap() -> None:
    out = io.BytesIO()
    write_voc(out, records(), labels=LABELS, card=lambda c: "card", kind="mask")
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert {"SegmentationClass/a.png", "SegmentationObject/a.png", "labelmap.txt",
                "ImageSets/Segmentation/default.txt"} <= names  # fmt: skip
        labelmap = archive.read("labelmap.txt").decode().splitlines()
        assert labelmap[1:] == ["background:0,0,0::", "road:128,128,128::", "car:255,0,0::"]
        classes = read_png(archive, "SegmentationClass/a.png")
        assert classes.mode == "P"
        palette = classes.getpalette()
        assert palette is not None
        assert palette[:9] == [0, 0, 0, 128, 128, 128, 255, 0, 0]
        index = np.asarray(classes)
        # The car (0.9) is more confident than the road (0.6): it keeps the shared pixels.
        expected = np.where(CAR > 0, 2, np.where(ROAD > 0, 1, 0))
        assert np.array_equal(index, expected)
        objects = read_png(archive, "SegmentationObject/a.png")
        object_palette = objects.getpalette()
        assert object_palette is not None
        assert object_palette[:6] == [c for rgb in voc_colormap()[:2] for c in rgb]
        assert np.array_equal(np.asarray(objects), np.where(CAR > 0, 2, np.where(ROAD > 0, 1, 0)))
        xml = archive.read("Annotations/a.xml").decode()
        assert "<segmented>1</segmented>" in xml
        # The k-th object of the XML is index k of SegmentationObject.
        assert xml.index("<name>road</name>") < xml.index("<name>car</name>")
        assert "<xmin>5</xmin>" in xml
        assert not np.asarray(read_png(archive, "SegmentationClass/c.png")).any()
        two = np.asarray(read_png(archive, "SegmentationObject/b.png"))
        assert np.array_equal(two, TWO_PARTS)


def test_voc_segmentation_loads_in_datumaro(tmp_path: Path) -> None:
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    out = io.BytesIO()
    write_voc(out, records(), labels=LABELS, card=lambda c: "card", kind="mask")
    with zipfile.ZipFile(out) as archive:
        archive.extractall(tmp_path)
    dataset = Dataset.import_from(str(tmp_path), "voc_segmentation")
    names = [label.name for label in dataset.categories()[AnnotationType.label]]
    assert names == ["background", "road", "car"]
    masks = {
        item.id: sorted((names[a.label], int(a.image.sum())) for a in item.annotations)
        for item in dataset
    }
    # The road loses to the more confident car the 4 x 12 pixels they share.
    road = int(ROAD.sum()) - int((ROAD & CAR).sum())
    assert masks == {"a": [("car", int(CAR.sum())), ("road", road)],
                     "b": [("car", int(TWO_PARTS.sum()))], "c": []}  # fmt: skip


def rasterise(line: str) -> tuple[int, np.ndarray]:
    cls, *coords = line.split()
    points = [float(v) * (W if i % 2 == 0 else H) for i, v in enumerate(coords)]
    mask = coco_mask.decode(coco_mask.frPyObjects([points], H, W))[:, :, 0]
    return int(cls), mask


def test_yolo_segments_are_the_masks_outlines() -> None:
    out = io.BytesIO()
    write_yolo(out, records(), kind="mask", labels=LABELS, card=lambda c: "card")
    with zipfile.ZipFile(out) as archive:
        first = archive.read("labels/train/a.txt").decode().splitlines()
        two = archive.read("labels/train/b.txt").decode().splitlines()
        assert archive.read("labels/train/c.txt") == b""
    assert [rasterise(line)[0] for line in first] == [0, 1]
    for line, truth in zip(first, (ROAD, CAR), strict=True):
        _, mask = rasterise(line)
        assert np.array_equal(mask, truth)
    # A mask of two regions is two segments of its class.
    assert len(two) == 2
    union = np.zeros((H, W), dtype=np.uint8)
    for line in two:
        cls, mask = rasterise(line)
        assert cls == 1
        union |= mask
    assert np.array_equal(union, TWO_PARTS)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.mark.django_db
def test_a_mask_project_exports_in_each_format(api_as, manager, tmp_path) -> None:
    project = project_create(
        manager, kind="mask", labels=["road", "car"], gold_rate=0.0, min_overlap=2,
        max_overlap=2, agreement_threshold=0.1, name="Streets",
    )  # fmt: skip
    truth: dict[int, list[dict[str, Any]]] = {}
    for seed in range(2):
        image = image_ready(project, width=W, height=H, seed=seed)
        real_file(image, seed)
        truth[image.pk] = [{"label": "road", "rle": rle(ROAD)},
                           {"label": "car", "rle": rle(np.roll(CAR, 4 * seed, axis=1))}]  # fmt: skip
    from tasks.services import project_transition

    project = project_transition(project=project, action="start")
    crowd_work(project, [WorkerFactory.create() for _ in range(2)], lambda i: truth[i])

    _, data = build(api_as(manager), project, format="coco")
    path = tmp_path / "coco.json"
    path.write_bytes(data)
    coco = COCO(str(path))
    for image in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        got = {coco.loadCats(a["category_id"])[0]["name"]: coco.annToMask(a) for a in anns}
        want = {item["label"]: coco_mask.decode({**item["rle"], "counts": item["rle"]["counts"].encode()})
                for item in truth[image["id"]]}  # fmt: skip
        assert set(got) == set(want)
        for label, mask in want.items():
            assert np.array_equal(got[label], mask)

    _, data = build(api_as(manager), project, format="voc")
    root = unzip(data, tmp_path / "voc")
    assert len(list((root / "JPEGImages").iterdir())) == 2
    for png in (root / "SegmentationClass").glob("*.png"):
        index = np.asarray(PilImage.open(png))
        road_only = (ROAD > 0) & (index != 2)
        assert (index[road_only] == 1).all()
        assert (index[ROAD == 0] != 1).all()
        # The car keeps its pixels off the road, and the shared ones if it is more confident.
        shared = int((ROAD & CAR).sum())
        assert int(CAR.sum()) - shared <= int((index == 2).sum()) <= int(CAR.sum())

    _, data = build(api_as(manager), project, format="yolo")
    root = unzip(data, tmp_path / "yolo")
    lines = [
        line
        for p in (root / "labels" / "train").glob("*.txt")
        for line in p.read_text().splitlines()
    ]
    assert len(lines) == 4

    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "csv"}, format="json"
    )
    assert response.status_code == 400
