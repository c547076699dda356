"""A bbox project's consensus run: boxes merged one task at a time against in batches.

The database is seeded once, in a throwaway VAR_DIR (SQLite): a bbox project of 4,000 images
(1,000 with ``--quick``) of three sizes, a third of them one 512-pixel tile and the rest cut
into 2 or 4 tiles, every task answered by 5 of 12 simulated workers (``qa.sim``: careful,
sloppy, spammers) drawing on generated scenes. Seeding is not timed.

Each row is the job body, ``consensus_compute``, on a new run of the same project: reading the
answers, merging, uniting tiles, storing one result an image. ``per task`` hands the merge one
task at a time (what runs did before), ``batch`` hands it chunks of ``MERGE_CHUNK`` images
(``merge_boxes_batch``); both apply the worker model the run learns once over the project
(its fit is in ``run_s``, not in ``merge_s``). Both are run alternately, three times each, and
the best of each is shown; ``merge_s`` is the time inside the merge of that best run. Both
runs' results are checked to be the same, row for row.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

NAME = "consensus_run"
DESCRIPTION = "a bbox project's consensus run: per-task merge vs batch merge (same run, same data)"
SIZES = [(480, 360), (900, 400), (900, 700)]
TILE, TILE_OVERLAP = 512, 64
CROWD = [("careful", 6), ("sloppy", 4), ("spammer", 2)]
ANSWERS_PER_TASK = 5
REPEATS = 3
SEED = 11
BATCH = 2000


def _seed(n_images: int) -> Any:
    """A started bbox project whose every task has its answers (written in bulk)."""
    from django.db import transaction
    from django.utils import timezone

    from crowd.models import Role, User
    from qa.sim.crowd import TaskView, crowd_make
    from qa.sim.scenes import CLASSES, scene_make
    from tasks.models import Assignment, AssignmentStatus, Image, ImageStatus, Task
    from tasks.services import project_create
    from tasks.tiling import tile_regions

    manager = User.objects.create(username="bench-consensus", role=Role.MANAGER)
    project = project_create(
        owner=manager,
        data={"name": "Consensus bench", "kind": "bbox", "labels": list(CLASSES),
              "gold_rate": 0.0, "min_overlap": ANSWERS_PER_TASK,
              "max_overlap": ANSWERS_PER_TASK, "tile_size": TILE, "tile_overlap": TILE_OVERLAP},
    )  # fmt: skip
    sims = crowd_make(CROWD, seed=SEED)
    users = User.objects.bulk_create(
        User(username=f"bench-worker-{k}", role=Role.WORKER) for k in range(len(sims))
    )
    keypoints: dict[str, list[str]] = {label: [] for label in CLASSES}
    rng = random.Random(SEED)
    now = timezone.now()
    with transaction.atomic():
        for start in range(0, n_images, BATCH):
            numbers = range(start, min(start + BATCH, n_images))
            images = Image.objects.bulk_create(
                Image(project=project, name=f"{i}.png", file=f"x/{i}.png", sha256=f"{i:064x}",
                      format="PNG", width=SIZES[i % 3][0], height=SIZES[i % 3][1],
                      size_bytes=1, status=ImageStatus.READY, uploaded_by=manager)
                for i in numbers
            )  # fmt: skip
            tasks = Task.objects.bulk_create(
                Task(project=project, image=image, x=x, y=y, width=w, height=h,
                     required_overlap=ANSWERS_PER_TASK, answers=ANSWERS_PER_TASK, state="done",
                     confidence=round(rng.random(), 3))
                for image in images
                for x, y, w, h in tile_regions(image.width, image.height, TILE, TILE_OVERLAP)
            )  # fmt: skip
            truth = {
                image.pk: scene_make(i, kind="bbox", width=image.width, height=image.height).truth(
                    "bbox"
                )
                for i, image in zip(numbers, images, strict=True)
            }
            rows = []
            for task in tasks:
                image = task.image
                view = TaskView("bbox", keypoints, image.width, image.height, task.region)
                for k in rng.sample(range(len(sims)), ANSWERS_PER_TASK):
                    rows.append(
                        Assignment(task=task, project=project, worker=users[k],
                                   status=AssignmentStatus.SUBMITTED, leased_at=now,
                                   submitted_at=now, expires_at=now + timedelta(minutes=10),
                                   answer=sims[k].answer(view, truth[image.pk]))
                    )  # fmt: skip
            Assignment.objects.bulk_create(rows, batch_size=1000)
    return project


def _timed_run(
    project: Any, merge_many: Callable[..., Any]
) -> tuple[float, float, int, dict[int, Any]]:
    """One consensus run with ``merge_many`` as the merge: wall seconds, seconds inside the
    merge, calls of the merge function, and the stored results by image."""
    from unittest import mock

    from qa import merge
    from qa.models import ConsensusResult, ConsensusRun, RunStatus

    inside, calls = 0.0, 0

    def timed(*args: Any, **options: Any) -> Any:
        nonlocal inside, calls
        calls += len(args[1]) if getattr(merge_many, "per_task", False) else 1
        started = time.perf_counter()
        out = merge_many(*args, **options)
        inside += time.perf_counter() - started
        return out

    run = ConsensusRun.objects.create(project=project)
    with mock.patch.object(merge, "shapes_merge_many", timed):
        started = time.perf_counter()
        done = merge.consensus_compute(run_id=run.pk)
        seconds = time.perf_counter() - started
    assert done is not None
    assert done.status == RunStatus.DONE, done.error
    stored = ConsensusResult.objects.filter(run=run).values_list(
        "image_id", "annotations", "contributors", "confidence", "votes", "low_confidence"
    )
    return seconds, inside, calls, {row[0]: row[1:] for row in stored}


def _measure(n_images: int) -> list[dict[str, Any]]:
    from qa import merge
    from tasks.models import Assignment, Task

    project = _seed(n_images)
    tasks = Task.objects.filter(project=project).count()
    answers = Assignment.objects.filter(project=project)
    items: list[Any] = list(answers.values_list("answer", flat=True))
    boxes = sum(map(len, items))
    batch_merge = merge.shapes_merge_many

    def per_task(
        project: Any, crowds: Sequence[Any], sizes: Sequence[tuple[int, int]], *, model: Any = None
    ) -> Any:
        """The merge one task at a time, with the worker model the run learnt."""
        return [
            objects
            for crowd, size in zip(crowds, sizes, strict=True)
            for objects in batch_merge(project, [crowd], [size], model=model)
        ]

    per_task.per_task = True  # type: ignore[attr-defined]
    paths = {"per task (merge_boxes)": per_task, "batch (merge_boxes_batch)": batch_merge}
    best: dict[str, tuple[float, float, int]] = {}
    stored: dict[str, dict[int, Any]] = {}
    for _ in range(REPEATS):
        for name, merge_many in paths.items():
            seconds, inside, calls, stored[name] = _timed_run(project, merge_many)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, inside, calls)
    first, second = stored.values()
    assert first == second, "the batch run's results differ from the per-task run's"
    baseline = best["per task (merge_boxes)"][0]
    return [
        {"merge": name, "images": n_images, "tasks": tasks, "answers": answers.count(),
         "boxes": boxes, "merge_calls": calls, "run_s": seconds, "merge_s": inside,
         "images_per_s": n_images / seconds, "speedup": baseline / seconds}
        for name, (seconds, inside, calls) in best.items()
    ]  # fmt: skip


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench.django_env import setup

    var_dir = setup()
    from django.db import connections

    try:
        return _measure(1000 if quick else 4000)
    finally:
        connections.close_all()
        shutil.rmtree(var_dir, ignore_errors=True)
