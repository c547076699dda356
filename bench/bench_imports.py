"""Predictions file import: wall time and peak memory of importing a model's predictions.

A bbox project of 20,000 ready images (2,000 with ``--quick``) and a predictions file in our
format with 20 scored boxes an image (about 30 MB; the route takes up to
``MAX_PREDICTIONS_BYTES``, 100 MB by default), seeded in a throwaway VAR_DIR (SQLite) and not
timed. Each import runs in a fresh Python process of its own against the same database file,
so that its peak RSS (``VmHWM``) is its own:

- **walked**: the file as the upload route hands it over (``crowd.json_stream.Streamed``),
  read, checked and stored a batch of ``IMPORT_BATCH`` predictions at a time;
- **parsed whole**: the same file parsed at once (orjson) and imported from the parsed
  document, as the route did before it walked files;
- **walked, a tenth**: a project of a tenth the images and its file, walked: an import that
  streams has about the same peak at both sizes (``rss_vs_small``; target at most 1.25);
- **COCO results**: the same detections as a COCO results list, walked, in the order of
  their images (as detectors write them) and shuffled (the reader then holds every image's
  detections until its last one is read, past ``HELD_IN_MEMORY`` in a temporary file), both
  with the same target against a tenth the images in image order.

A baseline process that only sets up Django and imports the import modules shows what the
interpreter and the framework take; ``import_adds_MiB`` is the difference.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from bench import peak_rss_kib, spawn

NAME = "imports"
DESCRIPTION = (
    "predictions file import (ours and COCO results, 20 boxes an image): wall time and peak "
    "RSS, walked vs parsed whole (target: a walked import's peak within 1.25x of a tenth the "
    "images)"
)
BOXES = 20
RSS_GROWTH = 1.25
CHILD = "import sys; from bench.bench_imports import child; child(sys.argv[1:])"


def _seed(images: int, tag: str, directory: Path, coco: str = "") -> tuple[int, Path]:
    """A project of ``images`` ready images and a predictions file of them: ours, or with
    ``coco`` a COCO results list, its detections in the order of their images ("ordered",
    as a detector writes them) or shuffled."""
    from crowd.models import Role, User
    from tasks.models import Image
    from tests.factories import project_with_tasks

    manager = User.objects.create(username=f"m-{tag}", role=Role.MANAGER)
    project = project_with_tasks(manager, images, 1)
    ids = Image.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)
    rng = random.Random(tag)

    def box() -> dict[str, Any]:
        w, h = round(rng.uniform(5, 100), 2), round(rng.uniform(5, 80), 2)
        x, y = round(rng.uniform(0, 320 - w), 2), round(rng.uniform(0, 240 - h), 2)
        return {"label": rng.choice(["car", "tree"]), "bbox": [x, y, w, h],
                "score": round(rng.random(), 4)}  # fmt: skip

    path = directory / f"predictions-{tag}.json"
    if coco:
        category = {"car": 1, "tree": 2}  # the project's labels in order, as COCO numbers them
        rows = [(image, box()) for image in ids for _ in range(BOXES)]
        if coco == "shuffled":
            rng.shuffle(rows)
        with path.open("w") as fh:
            fh.write("[")
            for k, (image, item) in enumerate(rows):
                fh.write(("," if k else "") + json.dumps({
                    "image_id": image, "category_id": category[item["label"]],
                    "bbox": item["bbox"], "score": item["score"],
                }))  # fmt: skip
            fh.write("]")
        return project.pk, path
    with path.open("w") as fh:
        # Written item by item: the seeding must not set the machine's memory either.
        fh.write('{"model_version": "bench-1", "predictions": [')
        for k, image in enumerate(ids):
            fh.write(("," if k else "") + json.dumps(
                {"image": image, "annotations": [box() for _ in range(BOXES)]}
            ))  # fmt: skip
        fh.write("]}")
    return project.pk, path


def child(args: list[str]) -> None:
    """In a fresh process: ``baseline``, or ``walked|parsed PROJECT PATH``."""
    import django

    django.setup()
    from crowd.json_stream import Streamed
    from tasks.models import Prediction, Project
    from tasks.predictions import predictions_import

    if args[0] == "baseline":
        Project.objects.exists()  # connected, as an import is
        print(json.dumps({"rss_kib": peak_rss_kib()}))
        return
    mode, project_id, path = args[0], int(args[1]), args[2]
    project = Project.objects.get(pk=project_id)
    started = time.perf_counter()
    with open(path, "rb") as fh:
        if mode == "walked":
            report = predictions_import(project=project, data=Streamed(fh))
        elif mode == "coco":
            report = predictions_import(
                project=project, data=Streamed(fh), format_name="coco", model_version="bench-1"
            )
        else:
            import orjson

            report = predictions_import(project=project, data=orjson.loads(fh.read()))
    seconds = time.perf_counter() - started
    stored = Prediction.objects.filter(project=project).count()
    assert report["created"] == stored, report
    assert not report["rejected"], report
    print(json.dumps({"seconds": seconds, "rss_kib": peak_rss_kib(), "created": stored}))


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench.django_env import setup

    directory = Path(setup())
    images = 2000 if quick else 20000
    walked_project, walked_file = _seed(images, "walked", directory)
    parsed_project, parsed_file = _seed(images, "parsed", directory)
    small_project, small_file = _seed(images // 10, "small", directory)
    coco = {
        name: _seed(size, tag, directory, coco=order)
        for name, size, tag, order in (
            ("COCO results, by image", images, "coco", "ordered"),
            ("COCO results, shuffled", images, "coco-shuffled", "shuffled"),
            ("COCO results, by image, a tenth", images // 10, "coco-small", "ordered"),
        )
    }
    base = spawn(CHILD, "baseline")["rss_kib"] / 1024
    rows: list[dict[str, Any]] = [{
        "import": "baseline (Django + import modules)", "images": None, "file_MB": None,
        "seconds": None, "predictions_per_s": None, "peak_rss_MiB": base,
        "import_adds_MiB": None, "rss_vs_small": None, "target": None,
    }]  # fmt: skip
    small = spawn(CHILD, "walked", str(small_project), str(small_file))
    measured = {
        "walked": spawn(CHILD, "walked", str(walked_project), str(walked_file)),
        "parsed whole (orjson)": spawn(CHILD, "parsed", str(parsed_project), str(parsed_file)),
        "walked, a tenth": small,
        **{name: spawn(CHILD, "coco", str(project), str(path))
           for name, (project, path) in coco.items()},
    }  # fmt: skip
    sizes = {"walked": walked_file, "parsed whole (orjson)": parsed_file,
             "walked, a tenth": small_file,
             **{name: path for name, (_, path) in coco.items()}}  # fmt: skip
    # Each walked file against the same format's file of a tenth the images.
    tenth = {"walked": small, "parsed whole (orjson)": small,
             "COCO results, by image": measured["COCO results, by image, a tenth"],
             "COCO results, shuffled": measured["COCO results, by image, a tenth"]}  # fmt: skip
    for name, figures in measured.items():
        rss = figures["rss_kib"] / 1024
        ratio = rss / (tenth[name]["rss_kib"] / 1024) if name in tenth else None
        target = None
        if name in ("walked", "COCO results, by image", "COCO results, shuffled"):
            target = "ok" if ratio is not None and ratio <= RSS_GROWTH else "MISSED"
        rows.append({
            "import": name, "images": figures["created"],
            "file_MB": sizes[name].stat().st_size / 1e6, "seconds": figures["seconds"],
            "predictions_per_s": figures["created"] / figures["seconds"],
            "peak_rss_MiB": rss, "import_adds_MiB": rss - base,
            "rss_vs_small": ratio, "target": target,
        })  # fmt: skip
    return rows
