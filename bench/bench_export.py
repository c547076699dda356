"""Dataset export: wall time and peak memory of building box and mask dataset versions.

The database is seeded once, in a throwaway VAR_DIR (SQLite file, media): a bbox project of
100,000 ready images (10,000 with ``--quick``) and one finished consensus run whose results
carry 10 boxes an image, with ``contributors`` shaped like a real merge's. Seeding is not
timed. Each version is requested through the export service (``export_request``: options,
version number, the run check) with the job's on-commit send held back, and then built by
the job body, ``export_build``: reading the results, writing the file, hashing and storing
it. COCO is the plain JSON file, YOLO the labels-only zip (no images).

Each build runs in a fresh Python process of its own, set up like a job worker against the
same database file, so that its peak RSS (``VmHWM``, see :func:`peak_rss_kib`) is its own
and not the high-water mark of seeding or of the other format. A baseline process that only
sets up Django, imports the export modules and connects shows what the interpreter and the
framework take before any export; ``export_adds_MiB`` is the difference. Targets: COCO in
at most 20 s, and a peak RSS of at most 1 GiB for either format.

Masks: a mask project of 10,000 images of 1024x768 (1,000 with ``--quick``), each with 2 to 5
instance masks (ellipses of 20 to 200 pixels across, two labels of three, COCO RLE of the
whole image as a merge stores them), exported the same way to COCO (RLE), Pascal VOC
(``SegmentationClass``/``SegmentationObject`` PNGs) and Cityscapes (``gtFine`` PNGs), labels
only. A project of a tenth the size (1,000 images; 100 quick) is exported beside it in the
same run: a writer that streams has the same peak RSS at both sizes (``rss_vs_small``, the
peak's ratio to the small export's, should stay near 1; target at most 1.25), while one that
held the dataset would grow tenfold. Each file is checked: every image has its PNGs, and the
first image's class PNG says what its RLEs say.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import peak_rss_kib, spawn

NAME = "export"
DESCRIPTION = (
    "dataset export of 10 boxes an image (COCO, YOLO labels-only) and of 2-5 masks an image "
    "of 1024x768 (COCO RLE, VOC and Cityscapes PNGs): wall time and peak RSS (targets: box "
    "COCO <= 20 s, peak RSS <= 1 GiB, mask peak RSS within 1.25x of a tenth the images)"
)
COCO_SECONDS = 20.0
RSS_MIB = 1024.0
BOXES_PER_IMAGE = 10
LABELS = ["car", "truck", "bus", "person", "bicycle"]
WIDTH, HEIGHT = 1920, 1080
VOTERS = 5
SEED_BATCH = 5000
CHILD = "import sys; from bench.bench_export import child; child(sys.argv[1:])"
MASK_WIDTH, MASK_HEIGHT = 1024, 768
MASK_LABELS = ["person", "car", "road"]
MASK_SHAPES = 300  # distinct masks drawn once, picked from for each image
RSS_GROWTH = 1.25
# Parts that run alone as ``python -m bench export:boxes`` / ``export:masks``.
SECTIONS = ("boxes", "masks")


# --- Seeding (not timed) ----------------------------------------------------------------------


def _boxes(rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for _ in range(BOXES_PER_IMAGE):
        w, h = round(rng.uniform(8, 400), 2), round(rng.uniform(8, 300), 2)
        x, y = round(rng.uniform(0, WIDTH - w), 2), round(rng.uniform(0, HEIGHT - h), 2)
        items.append({"label": rng.choice(LABELS), "bbox": [x, y, w, h],
                      "score": round(rng.uniform(0.4, 1.0), 6),
                      "num_votes": rng.randint(2, VOTERS)})  # fmt: skip
    return items


def _contributors(rng: random.Random, image_index: int) -> dict[str, Any]:
    """What a merge records: each voter's weight and, per object, (assignment, item) pairs."""
    workers = [100 + (image_index + k) % 40 for k in range(VOTERS)]
    first = image_index * VOTERS
    return {
        "weights": {str(w): round(rng.uniform(0.5, 1.0), 4) for w in workers},
        "objects": [[[first + k, obj] for k in range(VOTERS)] for obj in range(BOXES_PER_IMAGE)],
    }


def _seed(images: int) -> tuple[Any, Any, Any]:
    """A bbox project with ``images`` ready images and one finished consensus run over them."""
    from django.db import transaction
    from django.utils import timezone

    from crowd.models import Role, User
    from qa.models import ConsensusResult, ConsensusRun, RunStatus
    from tasks.models import Image, ImageStatus
    from tasks.services import project_create

    manager = User.objects.create(username="bench-export", role=Role.MANAGER)
    project = project_create(
        owner=manager,
        data={"name": "Export bench", "kind": "bbox", "labels": LABELS, "tile_size": 0},
    )
    rng = random.Random(0)
    with transaction.atomic():
        run = ConsensusRun.objects.create(
            project=project, status=RunStatus.DONE, method="merge", params={"iou": 0.5},
            images_total=images, images_done=images, requested_by=manager,
            started_at=timezone.now(), finished_at=timezone.now(),
        )  # fmt: skip
        for start in range(0, images, SEED_BATCH):
            stop = min(start + SEED_BATCH, images)
            rows = Image.objects.bulk_create(
                Image(project=project, name=f"frame_{i:06d}.jpg",
                      file=f"projects/{project.pk}/images/{i}.jpg", sha256=f"{i:064x}",
                      format="JPEG", width=WIDTH, height=HEIGHT, size_bytes=250_000,
                      status=ImageStatus.READY, uploaded_by=manager)
                for i in range(start, stop)
            )  # fmt: skip
            ConsensusResult.objects.bulk_create(
                ConsensusResult(project=project, run=run, image=image, method="merge",
                                annotations=_boxes(rng), confidence=round(rng.random(), 6),
                                votes=VOTERS, low_confidence=False,
                                contributors=_contributors(rng, i))
                for i, image in zip(range(start, stop), rows, strict=True)
            )  # fmt: skip
    return project, manager, run


def _request(project: Any, manager: Any, run: Any, fmt: str) -> int:
    """A version requested as the API does; its job is held back, to be run by a child."""
    from unittest import mock

    from qa import jobs
    from qa.exports.build import export_request

    data: dict[str, Any] = {"format": fmt, "consensus_run": run.pk}
    if fmt in ("yolo", "voc", "cityscapes"):
        data["include_images"] = False
    with mock.patch("crowd.jobs.send_on_commit") as send:
        export = export_request(project=project, user=manager, data=data)
    send.assert_called_once_with(jobs.export_build, export.pk)
    return export.pk


# --- Child processes (measured) ---------------------------------------------------------------


def child(args: list[str]) -> None:
    """In a fresh process: set up Django, run one build (or none, for the baseline), and print
    wall and CPU seconds and the peak RSS as one JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowd.settings")
    import django

    django.setup()
    from django.db import connection

    from qa.exports import build, formats  # noqa: F401  (the baseline's imports)

    connection.ensure_connection()
    seconds = cpu = 0.0
    if args[0] == "build":
        wall, started_cpu = time.perf_counter(), time.process_time()
        build.export_build(export_id=int(args[1]))
        seconds, cpu = time.perf_counter() - wall, time.process_time() - started_cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rss_kib": peak_rss_kib()}))


def _check_file(storage: Any, name: str, fmt: str, images: int) -> None:
    """The stored file is what its format says: a whole COCO object, or a zip holding one
    label file an image beside ``data.yaml`` and the card."""
    with storage.open(name, "rb") as fh:
        if fmt == "coco":
            assert fh.read(9) == b'{"info":{', f"{name}: not a COCO object"
            fh.seek(-2, os.SEEK_END)
            assert fh.read() == b"]}", f"{name}: not a whole COCO object"
            return
        with zipfile.ZipFile(fh) as archive:
            members = archive.namelist()
    labels = [m for m in members if m.startswith("labels/train/") and m.endswith(".txt")]
    assert len(labels) == images, f"{name}: {len(labels)} label files"
    assert {"data.yaml", "README.md"} <= set(members), name


def _build(
    project: Any, manager: Any, run: Any, fmt: str, images: int, annotations: int
) -> tuple[dict[str, Any], Any]:
    """Request an export, build it in a fresh process, and check what it says it holds:
    the child's measurements and the export."""
    from qa.models import DatasetExport, RunStatus

    export_id = _request(project, manager, run, fmt)
    measured = spawn(CHILD, "build", str(export_id))
    export = DatasetExport.objects.get(pk=export_id)
    assert export.status == RunStatus.DONE, f"{fmt}: {export.status} {export.error}"
    assert export.counts["images"] == images, export.counts
    assert export.counts["annotations"] == annotations, export.counts
    return measured, export


def _baseline_row(base_mib: float) -> dict[str, Any]:
    return {
        "format": "baseline (Django + export modules)", "images": None, "annotations": None,
        "seconds": None, "cpu_seconds": None, "images_per_s": None, "file_MB": None,
        "peak_rss_MiB": base_mib, "export_adds_MiB": None, "target": None,
    }  # fmt: skip


def _measure(images: int) -> list[dict[str, Any]]:
    from django.core.files.storage import default_storage

    annotations = images * BOXES_PER_IMAGE
    project, manager, consensus = _seed(images)

    baseline = spawn(CHILD, "baseline")
    base_mib = baseline["rss_kib"] / 1024
    rows: list[dict[str, Any]] = [_baseline_row(base_mib)]
    for fmt in ("coco", "yolo"):
        measured, export = _build(project, manager, consensus, fmt, images, annotations)
        assert export.size_bytes > 0
        assert default_storage.size(export.file.name) == export.size_bytes
        _check_file(default_storage, export.file.name, fmt, images)
        rss_mib = measured["rss_kib"] / 1024
        ok = rss_mib <= RSS_MIB and (fmt != "coco" or measured["seconds"] <= COCO_SECONDS)
        rows.append({
            "format": f"{fmt} ({export.file_name.rsplit('.', 1)[-1]})", "images": images,
            "annotations": annotations, "seconds": measured["seconds"],
            "cpu_seconds": measured["cpu_seconds"],
            "images_per_s": images / measured["seconds"], "file_MB": export.size_bytes / 1e6,
            "peak_rss_MiB": rss_mib, "export_adds_MiB": rss_mib - base_mib,
            "target": "ok" if ok else "MISSED",
        })  # fmt: skip
    return rows


# --- Masks -----------------------------------------------------------------------------------


def _mask_shapes(rng: random.Random) -> list[dict[str, Any]]:
    """Ellipse masks of the full image as COCO RLE (counts a string, as results hold them)."""
    import numpy as np
    from pycocotools import mask as coco_mask

    y, x = np.ogrid[0:MASK_HEIGHT, 0:MASK_WIDTH]
    shapes = []
    for _ in range(MASK_SHAPES):
        rx, ry = rng.uniform(10, 100), rng.uniform(10, 100)
        cx, cy = rng.uniform(rx, MASK_WIDTH - rx), rng.uniform(ry, MASK_HEIGHT - ry)
        mask = ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1.0
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        shapes.append({"size": [MASK_HEIGHT, MASK_WIDTH], "counts": encoded["counts"].decode()})
    return shapes


def _seed_masks(images: int, name: str, shapes: list[dict[str, Any]]) -> tuple[Any, Any, int]:
    """A mask project of ``images`` ready images and a finished run; returns its masks' count."""
    from django.db import transaction
    from django.utils import timezone

    from crowd.models import Role, User
    from qa.models import ConsensusResult, ConsensusRun, RunStatus
    from tasks.models import Image, ImageStatus
    from tasks.services import project_create

    manager, _ = User.objects.get_or_create(username="bench-export", role=Role.MANAGER)
    project = project_create(
        owner=manager, data={"name": name, "kind": "mask", "labels": MASK_LABELS}
    )
    rng = random.Random(images)
    total = 0
    with transaction.atomic():
        run = ConsensusRun.objects.create(
            project=project, status=RunStatus.DONE, method="em", params={"iou": 0.5},
            images_total=images, images_done=images, requested_by=manager,
            started_at=timezone.now(), finished_at=timezone.now(),
        )  # fmt: skip
        for start in range(0, images, SEED_BATCH):
            stop = min(start + SEED_BATCH, images)
            rows = Image.objects.bulk_create(
                Image(project=project, name=f"street_{i:06d}.jpg",
                      file=f"projects/{project.pk}/images/{i}.jpg", sha256=f"{project.pk}{i:060x}",
                      format="JPEG", width=MASK_WIDTH, height=MASK_HEIGHT, size_bytes=150_000,
                      status=ImageStatus.READY, uploaded_by=manager)
                for i in range(start, stop)
            )  # fmt: skip
            results = []
            for image in rows:
                items = [
                    {"label": rng.choice(MASK_LABELS), "rle": rng.choice(shapes),
                     "score": round(rng.uniform(0.4, 1.0), 6), "num_votes": rng.randint(2, 5)}
                    for _ in range(rng.randint(2, 5))
                ]  # fmt: skip
                total += len(items)
                results.append(
                    ConsensusResult(project=project, run=run, image=image, method="em",
                                    annotations=items, confidence=round(rng.random(), 6),
                                    votes=VOTERS, low_confidence=False, contributors={})
                )  # fmt: skip
            ConsensusResult.objects.bulk_create(results)
    return project, run, total


def _check_mask_file(storage: Any, export: Any, fmt: str, images: int) -> None:
    """Every image is in the file, and the first image's class map is what its RLEs say."""
    import io

    import numpy as np
    from PIL import Image as PilImage

    from qa.exports.formats import decode_mask
    from qa.models import ConsensusResult

    first = ConsensusResult.objects.filter(run=export.consensus_run).order_by("image_id").first()
    assert first is not None
    covered = np.zeros((MASK_HEIGHT, MASK_WIDTH), dtype=bool)
    for item in first.annotations:
        covered |= decode_mask(item["rle"]) > 0
    with storage.open(export.file.name, "rb") as fh:
        if fmt == "coco":
            coco = json.load(fh)
            assert len(coco["images"]) == images
            assert coco["annotations"][0]["segmentation"]["size"] == [MASK_HEIGHT, MASK_WIDTH]
            return
        with zipfile.ZipFile(fh) as archive:
            members = archive.namelist()
            if fmt == "voc":
                pngs = [m for m in members if m.startswith("SegmentationClass/")]
                first_png = "SegmentationClass/street_000000.png"
            else:
                pngs = [m for m in members if m.endswith("_gtFine_labelIds.png")]
                first_png = "gtFine/train/default/street_000000_gtFine_labelIds.png"
            assert len(pngs) == images, f"{fmt}: {len(pngs)} class PNGs"
            classes = np.asarray(PilImage.open(io.BytesIO(archive.read(first_png))))
    assert np.array_equal(classes > 0, covered), f"{fmt}: the first class PNG"


def _measure_masks(sizes: tuple[int, int]) -> list[dict[str, Any]]:
    from django.core.files.storage import default_storage

    shapes = _mask_shapes(random.Random(1))
    projects = {n: _seed_masks(n, f"Mask export bench {n}", shapes) for n in sizes}
    rows: list[dict[str, Any]] = []
    small_rss: dict[str, float] = {}
    for fmt in ("coco", "voc", "cityscapes"):
        for images in sizes:
            project, run, masks = projects[images]
            measured, export = _build(project, project.owner, run, fmt, images, masks)
            _check_mask_file(default_storage, export, fmt, images)
            rss_mib = measured["rss_kib"] / 1024
            growth = None if images == min(sizes) else rss_mib / small_rss[fmt]
            if images == min(sizes):
                small_rss[fmt] = rss_mib
            ok = rss_mib <= RSS_MIB and (growth is None or growth <= RSS_GROWTH)
            rows.append({
                "format": f"masks {fmt} ({export.file_name.rsplit('.', 1)[-1]})",
                "images": images, "annotations": masks, "seconds": measured["seconds"],
                "cpu_seconds": measured["cpu_seconds"],
                "images_per_s": images / measured["seconds"],
                "file_MB": export.size_bytes / 1e6, "peak_rss_MiB": rss_mib,
                "export_adds_MiB": None, "rss_vs_small": growth,
                "target": "ok" if ok else "MISSED",
            })  # fmt: skip
    return rows


def run(quick: bool = False, sections: Sequence[str] = SECTIONS) -> list[dict[str, Any]]:
    from bench.django_env import setup

    # The files go to the throwaway VAR_DIR's media folder, never to a configured one.
    os.environ.pop("MEDIA_ROOT", None)
    var_dir = setup()
    from django.conf import settings
    from django.db import connections

    assert Path(settings.MEDIA_ROOT).is_relative_to(var_dir), settings.MEDIA_ROOT
    try:
        rows = _measure(10_000 if quick else 100_000) if "boxes" in sections else []
        if "masks" in sections:
            if rows:
                base_mib = rows[0]["peak_rss_MiB"]
            else:
                baseline = spawn(CHILD, "baseline")
                base_mib = baseline["rss_kib"] / 1024
                rows.append(_baseline_row(base_mib))
            masks = _measure_masks((100, 1_000) if quick else (1_000, 10_000))
            for row in masks:
                row["export_adds_MiB"] = row["peak_rss_MiB"] - base_mib
            rows += masks
        return [{**row, "rss_vs_small": row.get("rss_vs_small")} for row in rows]
    finally:
        # Several hundred MB of database and files at full size: not left behind in /tmp.
        connections.close_all()
        shutil.rmtree(var_dir, ignore_errors=True)
