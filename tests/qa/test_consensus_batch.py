"""A consensus run merges a bbox project's boxes in batches of images (``merge_boxes_batch``),
and its results are exactly those of merging one task at a time (``merge_boxes``). The run
learns the worker model once over the whole project and applies it to every batch, so how it
cuts the project changes nothing.

The crowd is generated (``qa.sim``): scenes with several classes, careful and sloppy workers
and spammers, so votes split between labels and ties between equal weights happen (a
newcomer's weight is a typical worker's, the same for all of them); images larger than the
tile size are split into tiles whose boxes are united across the seams.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from qa import merge
from qa.consensus.boxes import merge_boxes, merge_boxes_batch
from qa.consensus.objects import Answer, MergedObject
from qa.models import ConsensusResult, ConsensusRun
from qa.sim.crowd import TaskView, crowd_make
from qa.sim.scenes import CLASSES, scene_make
from tasks.ingest import tasks_create_for_image
from tasks.models import Assignment, AssignmentStatus, Image, ImageStatus, Project, Task
from tests.factories import WorkerFactory, project_create

CROWD = [("careful", 3), ("sloppy", 3), ("spammer", 2)]
ANSWERS_PER_TASK = 4
# One in three images fits one 512-pixel tile; the others are cut into 2 or 4.
SIZES = [(480, 360), (900, 400), (900, 700)]


def per_task(
    project: Project,
    crowds: Sequence[Sequence[Answer]],
    sizes: Sequence[tuple[int, int]],
    *,
    model: Any = None,
) -> list[list[MergedObject]]:
    """The merge one task at a time, with the same worker model the run learnt."""
    return [
        merged
        for crowd, size in zip(crowds, sizes, strict=True)
        for merged in batch_merge_many(project, [crowd], [size], model=model)
    ]


batch_merge_many = merge.shapes_merge_many


def seed(project: Project, images: int, *, rng_seed: int = 7) -> None:
    """``images`` ready images with their tasks, each task answered by ``ANSWERS_PER_TASK``
    simulated workers, written in bulk (routing is not what is tested)."""
    rng = random.Random(rng_seed)
    sims = crowd_make(CROWD, seed=rng_seed)
    users = [WorkerFactory.create() for _ in sims]
    keypoints: dict[str, list[str]] = {label: [] for label in CLASSES}
    now = timezone.now()
    rows: list[Assignment] = []
    for i in range(images):
        width, height = SIZES[i % len(SIZES)]
        image = Image.objects.create(
            project=project, name=f"{i}.png", file=f"x/{i}.png", sha256=f"{i:064x}",
            format="PNG", width=width, height=height, size_bytes=1, status=ImageStatus.READY,
        )  # fmt: skip
        truth = scene_make(i, kind="bbox", width=width, height=height).truth("bbox")
        for task in tasks_create_for_image(project=project, image=image):
            view = TaskView("bbox", keypoints, width, height, task.region)
            for k in rng.sample(range(len(sims)), ANSWERS_PER_TASK):
                rows.append(
                    Assignment(
                        task=task, project=project, worker=users[k],
                        status=AssignmentStatus.SUBMITTED, leased_at=now, submitted_at=now,
                        expires_at=now + timedelta(minutes=10),
                        answer=sims[k].answer(view, truth),
                    )
                )  # fmt: skip
    Assignment.objects.bulk_create(rows, batch_size=500)
    # Tasks' own confidences, which an image's result averages.
    for task in Task.objects.filter(project=project):
        task.confidence = round(rng.random(), 3)
        task.low_confidence = task.confidence < 0.2
        task.save(update_fields=["confidence", "low_confidence"])


def results(run: ConsensusRun) -> dict[int, tuple[Any, ...]]:
    rows = ConsensusResult.objects.filter(run=run).values_list(
        "image_id", "method", "annotations", "contributors", "confidence", "votes",
        "low_confidence",
    )  # fmt: skip
    return {row[0]: row[1:] for row in rows}


@pytest.mark.django_db
def test_a_bbox_run_in_batches_stores_what_the_merge_one_task_at_a_time_does(
    manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_create(
        manager, kind="bbox", labels=list(CLASSES), gold_rate=0.0, min_overlap=4,
        max_overlap=4, tile_size=512, tile_overlap=64,
    )  # fmt: skip
    seed(project, images=150)
    # Several chunks, the last one partial, and tiles of one image never split between chunks.
    monkeypatch.setattr(merge, "MERGE_CHUNK", 40)
    batches: list[int] = []
    batch_merge = merge.merge_boxes_batch

    def counted(crowds: Any, **options: Any) -> Any:
        batches.append(len(crowds))
        return batch_merge(crowds, **options)

    monkeypatch.setattr(merge, "merge_boxes_batch", counted)
    batched = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert batched is not None
    assert batched.status == "done"
    got = results(batched)  # before the next run supersedes it and its rows are pruned
    chunks = list(batches)
    monkeypatch.setattr(merge, "shapes_merge_many", per_task)
    one_by_one = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert one_by_one is not None
    assert one_by_one.status == "done"

    tasks = Task.objects.filter(project=project).count()
    assert len(chunks) == 4  # chunks of 40, 40, 40 and 30 images
    assert sum(chunks) == tasks  # every task merged once
    assert batched.method == "box_em"  # the worker model, learnt once over the project
    expected = results(one_by_one)
    assert len(expected) == 150
    tiled = [i for i, row in expected.items() if row[2]["objects"] and row[4] > ANSWERS_PER_TASK]
    assert len(tiled) > 50  # images of several tiles, with objects
    assert sum(len(row[1]) for row in expected.values()) > 500
    differ = [i for i in expected if got.get(i) != expected[i]]
    assert not differ, (len(differ), differ[:5])


def test_the_batch_merge_of_many_images_is_each_image_merged_alone() -> None:
    """Equal weights and several labels: label votes tie, and a tie goes to the label seen
    first on the image, not in the batch."""
    rng = random.Random(3)
    labels = ["car", "truck", "bus", "van"]
    images: list[list[Answer]] = []
    for _ in range(2000):
        truth = [
            (rng.uniform(0, 600), rng.uniform(0, 400), rng.uniform(10, 120), rng.uniform(10, 90))
            for _ in range(rng.randint(0, 6))
        ]
        answers = []
        for w in range(rng.randint(1, 6)):
            items = [
                {"label": rng.choice(labels), "bbox": [x + rng.gauss(0, 3), y + rng.gauss(0, 3),
                                                       bw, bh]}
                for x, y, bw, bh in truth
                if rng.random() < 0.9
            ]  # fmt: skip
            answers.append(Answer(f"w{w}", rng.choice([0.5, 0.8, 1.0]), items))
        images.append(answers)

    batched = merge_boxes_batch(images)

    alone = [merge_boxes(answers) for answers in images]
    assert sum(len(objects) for objects in alone) > 3000
    differ = [i for i in range(len(images)) if batched[i] != alone[i]]
    assert not differ, (len(differ), differ[:5])
