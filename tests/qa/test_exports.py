"""Dataset exports: every format loaded by a real reader (pycocotools, Datumaro), versions,
determinism, options and who may export."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from crowd.jobs import wait_for_jobs
from qa.exports.build import export_build
from qa.models import ConsensusResult, ConsensusRun, DatasetExport
from qa.services import gold_set
from tasks import routing
from tasks.models import Image, Project
from tasks.services import project_client_add, project_transition
from tests.factories import (
    ClientFactory,
    ManagerFactory,
    WorkerFactory,
    image_ready,
    project_create,
)
from tests.images import encode, scene
from tests.qa.helpers import no_gold

LABELS = ["car", "tree"]
W, H = 320, 240


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def truth_boxes(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    boxes = []
    for i in range(rng.randint(1, 3)):
        x, y = 10 + 100 * i, rng.randint(10, 100)
        boxes.append({"label": rng.choice(LABELS), "bbox": [x, y, rng.randint(20, 80), 60]})
    return boxes


def real_file(image: Image, seed: int) -> None:
    """Give the test image real JPEG bytes where its record says they are."""
    if default_storage.exists(image.file.name):
        default_storage.delete(image.file.name)
    image.file.name = default_storage.save(
        image.file.name, ContentFile(encode(scene(image.width, image.height, seed)))
    )
    image.save(update_fields=["file"])


def crowd_work(project: Project, workers: list, answer_for) -> None:
    """Every worker answers every task they are offered, with ``answer_for(image_id)``."""
    for worker in workers:
        while lease := routing.assignment_next(project=project, worker=worker, rand=no_gold):
            routing.assignment_submit(
                assignment_id=lease.pk, worker=worker, annotations=answer_for(lease.task.image_id)
            )


def bbox_project(manager, *, images: int = 6, workers: int = 3, **settings: Any):
    options: dict[str, Any] = {
        "kind": "bbox", "labels": LABELS, "gold_rate": 0.0, "min_overlap": workers, "max_overlap": workers,
        "agreement_threshold": 0.1, "name": "Street scenes",
    }  # fmt: skip
    options.update(settings)
    project = project_create(manager, **options)
    truth = {}
    for seed in range(images):
        image = image_ready(project, width=W, height=H, seed=seed)
        real_file(image, seed)
        truth[image.pk] = truth_boxes(seed)
    project = project_transition(project=project, action="start")
    crowd_work(project, [WorkerFactory.create() for _ in range(workers)], lambda i: truth[i])
    return project, truth


def build(api_client, project: Project, **body: Any) -> tuple[DatasetExport, bytes]:
    response = api_client.post(f"/api/v1/projects/{project.pk}/exports/", body, format="json")
    assert response.status_code == 202, response.content
    assert set(response.json()) >= {"id", "status"}
    export = export_build(export_id=response.json()["id"])
    assert export is not None
    assert export.status == "done", export.error
    download = api_client.get(f"/api/v1/exports/{export.pk}/download/")
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert download["ETag"] == f'"{export.sha256}"'
    return export, data


def unzip(data: bytes, target: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(target)
    return target


def truth_coco(truth: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    annotations: list[dict[str, Any]] = []
    for image_id, boxes in truth.items():
        for box in boxes:
            x, y, w, h = box["bbox"]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, "area": w * h,
                 "category_id": LABELS.index(box["label"]) + 1, "bbox": [x, y, w, h]}
            )  # fmt: skip
    return {
        "images": [{"id": i, "width": W, "height": H, "file_name": f"{i}.jpg"} for i in truth],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(LABELS)],
        "annotations": annotations,
    }


# --- COCO --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.both_databases
def test_coco_of_perfect_workers_scores_ap_one_against_the_truth(api_as, manager, tmp_path) -> None:
    project, truth = bbox_project(manager)
    export, data = build(api_as(manager), project, format="coco")
    assert export.file_name.endswith(".json")
    (tmp_path / "export.json").write_bytes(data)
    (tmp_path / "truth.json").write_text(json.dumps(truth_coco(truth)))
    dataset = COCO(str(tmp_path / "export.json"))
    assert len(dataset.getImgIds()) == len(truth)
    assert len(dataset.getAnnIds()) == sum(len(b) for b in truth.values())
    assert [c["name"] for c in dataset.loadCats(dataset.getCatIds())] == LABELS
    for ann in dataset.loadAnns(dataset.getAnnIds()):
        assert ann["score"] > 0.999  # the posterior that it is real, three of three marked it
        assert ann["num_votes"] == 3
        assert ann["iscrowd"] == 0
        assert ann["area"] == ann["bbox"][2] * ann["bbox"][3]
    gt = COCO(str(tmp_path / "truth.json"))
    detections = gt.loadRes(dataset.loadAnns(dataset.getAnnIds()))
    evaluation = COCOeval(gt, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP at IoU .50:.95
    assert export.counts["annotations"] == sum(len(b) for b in truth.values())
    assert "## Quality" in export.card
    assert "Workers: 3 answered" in export.card


@pytest.mark.django_db
def test_versions_are_numbered_and_the_same_inputs_give_the_same_bytes(api_as, manager) -> None:
    project, _ = bbox_project(manager, images=3)
    api = api_as(manager)
    first, data1 = build(api, project, format="coco")
    second, data2 = build(api, project, format="coco")
    assert (first.version, second.version) == (1, 2)
    assert data1 == data2
    assert first.sha256 == second.sha256
    assert first.consensus_run_id != second.consensus_run_id  # each computed its own
    _yolo1, zip1 = build(api, project, format="yolo")
    yolo2, zip2 = build(api, project, format="yolo")
    assert zip1 == zip2
    assert yolo2.version == 4
    listed = api.get(f"/api/v1/projects/{project.pk}/exports/").json()
    assert listed["count"] == 4
    assert [e["version"] for e in listed["results"]] == [4, 3, 2, 1]
    detail = api.get(f"/api/v1/exports/{first.pk}/").json()
    assert detail["sha256"] == first.sha256
    assert detail["download_url"].endswith(f"/api/v1/exports/{first.pk}/download/")
    assert detail["card"].startswith("# Street scenes: dataset card")
    # A download can be revalidated by its hash.
    again = api.get(f"/api/v1/exports/{first.pk}/download/", HTTP_IF_NONE_MATCH=f'"{first.sha256}"')
    assert again.status_code == 304


@pytest.mark.django_db
def test_coco_with_images_loads_in_datumaro(api_as, manager, tmp_path) -> None:
    from datumaro.components.dataset import Dataset

    project, truth = bbox_project(manager, images=4)
    _, data = build(api_as(manager), project, format="coco", include_images=True)
    root = unzip(data, tmp_path / "coco")
    assert (root / "README.md").exists()
    dataset = Dataset.import_from(str(root), "coco_instances")
    assert len(dataset) == len(truth)
    boxes = [a for item in dataset for a in item.annotations if a.type.name == "bbox"]
    assert len(boxes) == sum(len(b) for b in truth.values())
    for item in dataset:
        assert item.media.data is not None
        assert item.media.data.shape[:2] == (H, W)


# --- YOLO and VOC ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_yolo_split_is_stratified_and_loads_in_datumaro(api_as, manager, tmp_path) -> None:
    from datumaro.components.dataset import Dataset

    project, truth = bbox_project(manager, images=10, workers=2)
    export, data = build(
        api_as(manager), project, format="yolo",
        split={"train": 0.6, "val": 0.2, "test": 0.2, "seed": 7},
    )  # fmt: skip
    root = unzip(data, tmp_path / "yolo")
    yaml_text = (root / "data.yaml").read_text()
    assert "train: images/train" in yaml_text
    assert '0: "car"' in yaml_text
    assert sum(export.counts["per_subset"].values()) == 10
    assert export.counts["per_subset"]["train"] == 6
    dataset = Dataset.import_from(str(root), "yolo")
    assert len(dataset) == 10
    assert sorted({item.subset for item in dataset}) == ["test", "train", "val"]
    boxes = [a for item in dataset for a in item.annotations if a.type.name == "bbox"]
    assert len(boxes) == sum(len(b) for b in truth.values())
    # Coordinates come back (Datumaro scales the normalised ones by the image size).
    image = next(iter(truth))
    line = (root / "labels").glob(f"*/img{list(truth).index(image)}.txt")
    cls, xc, _yc, _w, _h = next(line).read_text().splitlines()[0].split()
    x, _y, bw, _bh = truth[image][0]["bbox"]
    assert float(xc) == pytest.approx((x + bw / 2) / W, abs=1e-6)
    assert int(cls) == LABELS.index(truth[image][0]["label"])
    # The same seed gives the same split, another seed another.
    _, same = build(api_as(manager), project, format="yolo",
                    split={"train": 0.6, "val": 0.2, "test": 0.2, "seed": 7})  # fmt: skip
    assert same == data


@pytest.mark.django_db
def test_voc_loads_in_datumaro(api_as, manager, tmp_path) -> None:
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    project, truth = bbox_project(manager, images=4)
    export, data = build(api_as(manager), project, format="voc")
    assert export.options["include_images"] is True
    root = unzip(data, tmp_path / "voc")
    dataset = Dataset.import_from(str(root), "voc_detection")
    assert len(dataset) == 4
    names = dataset.categories()[AnnotationType.label]
    got = sorted(
        (names[a.label].name, round(a.x), round(a.y), round(a.w), round(a.h))
        for item in dataset
        for a in item.annotations
        if a.type.name == "bbox"
    )
    want = sorted((b["label"], *b["bbox"]) for boxes in truth.values() for b in boxes)
    assert got == want


# --- Classification: COCO, CSV, raw ------------------------------------------------------------


def classification_crowd(manager, client=None):
    project = project_create(
        manager, kind="classification", labels=["cat", "dog"], gold_rate=0.0, min_overlap=3,
        max_overlap=3, agreement_threshold=0.5, name="Pets",
    )  # fmt: skip
    truth = {}
    for seed in range(4):
        image = image_ready(project, seed=seed)
        truth[image.pk] = ["cat", "dog"][seed % 2]
    gold_image = image_ready(project, seed=99)
    gold_set(project=project, image_id=gold_image.pk, annotations=[{"label": "dog"}], user=manager)
    project = project_transition(project=project, action="start")
    workers = [WorkerFactory.create() for _ in range(3)]
    # The third worker says "cat" to everything.
    for i, worker in enumerate(workers):
        crowd_work(
            project, [worker], lambda image, i=i: [{"label": "cat" if i == 2 else truth[image]}]
        )
    if client is not None:
        project_client_add(project=project, username=client.username)
    return project, truth, workers


@pytest.mark.django_db
def test_classification_exports_as_coco_csv_and_raw(api_as, manager, client_user, tmp_path) -> None:
    project, truth, workers = classification_crowd(manager, client_user)
    api = api_as(client_user)  # the project's client exports too
    _, data = build(api, project, format="coco")
    (tmp_path / "c.json").write_bytes(data)
    dataset = COCO(str(tmp_path / "c.json"))
    images = {i["id"]: i for i in dataset.loadImgs(dataset.getImgIds())}
    assert len(images) == 5  # four answered and the gold one
    for image_id, label in truth.items():
        assert images[image_id]["label"] == label
        assert 0 < images[image_id]["score"] <= 1
        assert images[image_id]["num_votes"] == 3
    cats = {c["id"]: c["name"] for c in dataset.loadCats(dataset.getCatIds())}
    by_image = {
        a["image_id"]: cats[a["category_id"]] for a in dataset.loadAnns(dataset.getAnnIds())
    }
    assert {i: by_image[i] for i in truth} == truth

    _, data = build(api, project, format="csv")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
        assert "# Pets: dataset card" in archive.read("README.md").decode()
    assert {int(r["image_id"]): r["label"] for r in rows if int(r["image_id"]) in truth} == truth
    assert all(r["votes"] in ("3", "0") and r["file_name"].endswith(".jpg") for r in rows)

    _, data = build(api, project, format="raw")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        lines = [json.loads(x) for x in archive.read("answers.jsonl").decode().splitlines()]
    assert len(lines) == 12  # four tasks, three answers each; nothing of the gold task
    assert {x["worker"] for x in lines} == {"w1", "w2", "w3"}
    ids = {str(w.pk) for w in workers} | {w.username for w in workers}
    assert not ids & {x["worker"] for x in lines}
    spammer = {x["worker"] for x in lines if x["annotations"][0]["label"] == "cat"} & {
        x["worker"] for x in lines if x["image"] in truth and truth[x["image"]] == "dog"
        and x["annotations"][0]["label"] == "cat"
    }  # fmt: skip
    assert len(spammer) == 1


@pytest.mark.django_db
def test_min_confidence_and_low_confidence_filters(api_as, manager, tmp_path) -> None:
    project, truth, _ = classification_crowd(manager)
    api = api_as(manager)
    confident, data = build(api, project, format="csv", min_confidence=0.999999)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    # Only the gold image (confidence 1) and no 2-against-1 image survives.
    kept = {int(r["image_id"]) for r in rows}
    assert not kept & set(truth)
    run = confident.consensus_run
    assert run is not None
    ConsensusResult.objects.filter(run=run, image_id=next(iter(truth))).update(low_confidence=True)
    excluded, data = build(
        api, project, format="csv", low_confidence="exclude", consensus_run=run.pk
    )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    assert next(iter(truth)) not in {int(r["image_id"]) for r in rows}
    assert len(rows) == 4
    assert "low-confidence images excluded" in excluded.card


# --- Shapes other than boxes ---------------------------------------------------------------------


@pytest.mark.django_db
def test_polygons_export_as_coco_polygons_or_rle_and_yolo_segments(
    api_as, manager, tmp_path
) -> None:
    project = project_create(
        manager, kind="polygon", labels=["roof"], gold_rate=0.0, min_overlap=2, max_overlap=2,
        agreement_threshold=0.1,
    )  # fmt: skip
    image = image_ready(project, width=W, height=H)
    real_file(image, 0)
    project = project_transition(project=project, action="start")
    roof = [{"label": "roof", "points": [[20, 20], [120, 20], [120, 100], [20, 100]]}]
    crowd_work(project, [WorkerFactory.create() for _ in range(2)], lambda i: roof)
    api = api_as(manager)
    _, data = build(api, project, format="coco")
    (tmp_path / "p.json").write_bytes(data)
    dataset = COCO(str(tmp_path / "p.json"))
    (ann,) = dataset.loadAnns(dataset.getAnnIds())
    assert ann["segmentation"] == [[20, 20, 120, 20, 120, 100, 20, 100]]
    assert ann["area"] == 100 * 80
    assert ann["bbox"] == [20, 20, 100, 80]
    assert dataset.annToMask(ann).sum() == pytest.approx(100 * 80, rel=0.03)
    _, data = build(api, project, format="coco", segmentation="rle")
    (tmp_path / "r.json").write_bytes(data)
    dataset = COCO(str(tmp_path / "r.json"))
    (ann,) = dataset.loadAnns(dataset.getAnnIds())
    assert isinstance(ann["segmentation"], dict)
    assert dataset.annToMask(ann).sum() == pytest.approx(100 * 80, rel=0.03)
    _, data = build(api, project, format="yolo")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (line,) = archive.read("labels/train/img0.txt").decode().splitlines()
    values = [float(v) for v in line.split()[1:]]
    assert values[:2] == pytest.approx([20 / W, 20 / H], abs=1e-6)
    assert len(values) == 8


@pytest.mark.django_db
def test_keypoints_export_as_coco_keypoints(api_as, manager, tmp_path) -> None:
    project = project_create(
        manager, kind="keypoints", labels=[{"name": "face", "keypoints": ["left_eye", "right_eye", "nose"]}],
        gold_rate=0.0, min_overlap=2, max_overlap=2, agreement_threshold=0.1,
    )  # fmt: skip
    image = image_ready(project, width=W, height=H)
    face = [{"label": "face", "keypoints": [[100, 100, 2], [140, 100, 2], [0, 0, 0]]}]
    project = project_transition(project=project, action="start")
    crowd_work(project, [WorkerFactory.create() for _ in range(2)], lambda i: face)
    _, data = build(api_as(manager), project, format="coco")
    (tmp_path / "k.json").write_bytes(data)
    dataset = COCO(str(tmp_path / "k.json"))
    (cat,) = dataset.loadCats(dataset.getCatIds())
    assert cat["keypoints"] == ["left_eye", "right_eye", "nose"]
    (ann,) = dataset.loadAnns(dataset.getAnnIds())
    assert ann["keypoints"] == [100, 100, 2, 140, 100, 2, 0, 0, 0]
    assert ann["num_keypoints"] == 2
    assert ann["image_id"] == image.pk


# --- Snapshots, permissions, bad requests ------------------------------------------------------


@pytest.mark.django_db
def test_an_export_reads_its_run_even_after_a_newer_one(api_as, manager) -> None:
    from qa.merge import consensus_compute

    project, _truth = bbox_project(manager, images=2)
    run = ConsensusRun.objects.create(project=project)
    consensus_compute(run_id=run.pk)
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "coco", "consensus_run": run.pk},
        format="json",
    )  # fmt: skip
    export_id = response.json()["id"]
    # A newer run finishes before the export is built: the export's run keeps its rows.
    newer = ConsensusRun.objects.create(project=project)
    consensus_compute(run_id=newer.pk)
    assert ConsensusResult.objects.filter(run=run).count() == 2
    export = export_build(export_id=export_id)
    assert export is not None
    assert export.consensus_run_id == run.pk
    assert export.status == "done"
    # Once built, the superseded run's rows go.
    assert not ConsensusResult.objects.filter(run=run).exists()
    assert ConsensusResult.objects.filter(run=newer).count() == 2
    stale = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "coco", "consensus_run": run.pk},
        format="json",
    )  # fmt: skip
    assert stale.status_code == 409
    assert stale.json()["code"] == "stale_consensus_run"


@pytest.mark.django_db
def test_who_may_export_and_download(api, api_as, manager, client_user, worker) -> None:
    project, _ = bbox_project(manager, images=1, workers=1)
    project_client_add(project=project, username=client_user.username)
    export, _ = build(api_as(manager), project, format="coco")
    outsider_client = ClientFactory.create()
    outsider_manager = ManagerFactory.create()
    urls = [
        ("post", f"/api/v1/projects/{project.pk}/exports/"),
        ("get", f"/api/v1/projects/{project.pk}/exports/"),
        ("get", f"/api/v1/exports/{export.pk}/"),
        ("get", f"/api/v1/exports/{export.pk}/download/"),
    ]
    for method, url in urls:
        body = {"format": "coco"} if method == "post" else None
        assert getattr(api, method)(url, body, format="json").status_code == 401, url
        assert getattr(api_as(worker), method)(url, body, format="json").status_code == 403, url
        for outsider in (outsider_client, outsider_manager):
            response = getattr(api_as(outsider), method)(url, body, format="json")
            assert response.status_code == 404, (url, outsider.role)
        ok = getattr(api_as(client_user), method)(url, body, format="json")
        assert ok.status_code in (200, 202), url
    assert DatasetExport.objects.filter(project=project).count() == 2


@pytest.mark.django_db
def test_an_export_not_yet_built_cannot_be_downloaded(api_as, manager) -> None:
    project, _ = bbox_project(manager, images=1, workers=1)
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "coco"}, format="json"
    )
    download = api_as(manager).get(f"/api/v1/exports/{response.json()['id']}/download/")
    assert download.status_code == 409
    assert download.json()["code"] == "export_not_ready"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "format"),
        ({"format": "tiff"}, "format"),
        ({"format": "csv"}, "format"),  # a box project has no CSV of labels
        ({"format": "coco", "min_confidence": 2}, "min_confidence"),
        ({"format": "coco", "min_confidence": True}, "min_confidence"),
        ({"format": "coco", "low_confidence": "maybe"}, "low_confidence"),
        ({"format": "coco", "split": {"train": 1}}, "split"),
        ({"format": "yolo", "split": {"train": 0.5, "val": 0.2}}, "split"),
        ({"format": "yolo", "split": {"train": 1, "seed": -1}}, "split"),
        ({"format": "yolo", "split": "80/20"}, "split"),
        ({"format": "raw", "include_images": True}, "include_images"),
        ({"format": "coco", "include_images": "yes"}, "include_images"),
        ({"format": "coco", "segmentation": "rle"}, "segmentation"),
        ({"format": "coco", "colour": "red"}, "colour"),
        ({"format": "coco", "consensus_run": "latest"}, "consensus_run"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_queued(api_as, manager, body, field) -> None:
    project, _ = bbox_project(manager, images=1, workers=1)
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/exports/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not DatasetExport.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_job_builds_the_export_after_commit(api_as, manager) -> None:
    project, truth = bbox_project(manager, images=2)
    response = api_as(manager).post(
        f"/api/v1/projects/{project.pk}/exports/", {"format": "coco"}, format="json"
    )
    assert response.json()["status"] == "queued"
    wait_for_jobs()
    detail = api_as(manager).get(f"/api/v1/exports/{response.json()['id']}/").json()
    assert detail["status"] == "done", detail["error"]
    assert detail["images_done"] == detail["images_total"] == 2
    assert detail["counts"]["annotations"] == sum(len(b) for b in truth.values())


@pytest.mark.django_db
def test_at_most_three_exports_of_a_project_wait_at_once(api_as, manager) -> None:
    project, _ = bbox_project(manager, images=1, workers=1)
    url = f"/api/v1/projects/{project.pk}/exports/"
    for _ in range(3):
        assert api_as(manager).post(url, {"format": "coco"}, format="json").status_code == 202
    refused = api_as(manager).post(url, {"format": "coco"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "too_many_exports"


def test_a_split_fills_in_the_subsets_it_leaves_out() -> None:
    from qa.exports.build import export_options

    data = {"format": "yolo", "split": {"train": 0.5, "val": 0.5, "seed": 1}}
    project = Project(kind="bbox")
    fmt, options = export_options(project, data)
    assert fmt == "yolo"
    assert options["split"] == {"train": 0.5, "val": 0.5, "test": 0.0, "seed": 1}
