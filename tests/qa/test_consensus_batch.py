"""The batch merge of boxes gives each image the objects it gets merged alone."""

from __future__ import annotations

import random

from qa.consensus.boxes import merge_boxes, merge_boxes_batch
from qa.consensus.objects import Answer


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
