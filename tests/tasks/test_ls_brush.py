"""Label Studio's brush masks (``tasks.ls_brush``) and their import: the packed streams below
were written by Label Studio's own converter (``label_studio_converter.brush``, 0.0.59:
``mask2rle`` of a grey mask, and ``encode_rle`` of an RGBA picture painted in three colours
for the literal runs), and decode to the masks drawn beside them."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from tasks.ls_brush import BrushError, brush_mask, unpack
from tasks.models import Prediction
from tests.factories import image_ready, project_create
from tests.imports import json_file_post

pytestmark = pytest.mark.django_db

CASES = [
    (7, 5, [0, 0, 0, 140, 57, 27, 254, 35, 0, 191, 255, 108, 2, 255, 253, 176, 11, 255, 248,
            124, 0],
     [".......", "..####.", "..####.", "..####.", "......."]),
    (6, 4, [0, 0, 0, 96, 57, 27, 252, 224, 19, 255, 223, 0, 143, 254, 112, 8, 255, 227, 0, 183,
            255, 24, 4, 255, 243, 128, 71, 255, 56, 0],
     ["..##..", "..#..#", ".###.#", "#..#.."]),
    (5, 3, [0, 0, 0, 60, 57, 27, 252, 96, 0, 127, 194, 0, 4, 5, 176, 8, 130, 112, 232, 0, 25, 0,
            5, 1, 255, 24, 0],
     [".#...", ".....", "...#."]),
]  # fmt: skip


def _drawn(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


@pytest.mark.parametrize(("width", "height", "rle", "rows"), CASES)
def test_label_studio_s_packed_masks_decode_to_what_was_drawn(width, height, rle, rows) -> None:
    assert (brush_mask(rle, width, height) == _drawn(rows)).all()


def _pack(values: list[int], word: int, sizes: list[int], rng: random.Random) -> list[int]:
    """The packed stream of ``values`` as the format describes it, cut into runs and literal
    chunks at random, every field at whatever bit it falls on."""
    bits = [format(len(values), "032b"), format(word - 1, "05b")]
    bits += [format(size - 1, "04b") for size in sizes]
    i = 0
    while i < len(values):
        pick = rng.randrange(4)
        length = rng.randint(1, min(1 << sizes[pick], len(values) - i))
        chunk = values[i : i + length]
        repeated = len(set(chunk)) == 1 and rng.random() < 0.8
        bits += [
            "1" if repeated else "0",
            format(pick, "02b"),
            format(length - 1, f"0{sizes[pick]}b"),
        ]
        bits += [format(v, f"0{word}b") for v in (chunk[:1] if repeated else chunk)]
        i += length
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k : k + 8], 2) for k in range(0, len(stream), 8)]


@pytest.mark.parametrize("word", [8, 3, 12, 32])
def test_streams_of_runs_and_literals_at_any_bit_read_back_whole(word: int) -> None:
    rng = random.Random(word)
    for _ in range(20):
        # Runs of one value beside stretches of noise, as a painted mask's edges give.
        values: list[int] = []
        while len(values) < 600:
            if rng.random() < 0.5:
                values += [rng.randrange(1 << word)] * rng.randint(1, 40)
            else:
                values += [rng.randrange(1 << word) for _ in range(rng.randint(1, 40))]
        sizes = [rng.randint(1, 9) for _ in range(4)]
        packed = _pack(values, word, sizes, rng)
        # (The limit on the stream's length counts a byte a value: Label Studio's words.)
        out = unpack(packed, limit=len(values) * max(1, word // 4))
        assert out.tolist() == values
        assert out.dtype.itemsize == (1 if word <= 8 else 2 if word <= 16 else 4)


def test_a_stream_of_another_size_or_cut_short_is_refused() -> None:
    width, height, rle, _ = CASES[0]
    with pytest.raises(BrushError, match="holds 140 values; a 5x8 mask has 160"):
        brush_mask(rle, 5, 8)
    with pytest.raises(BrushError, match="ends before"):
        brush_mask(rle[:-4], width, height)
    with pytest.raises(BrushError, match="at most"):
        unpack(rle, limit=10)
    with pytest.raises(BrushError, match="bytes"):
        brush_mask([*rle[:-1], 256], width, height)
    # Longer than any packing of a 7x5 mask: refused before a bit of it is read.
    with pytest.raises(BrushError, match="more than a mask of its size"):
        brush_mask(rle + [0] * 400, width, height)


def test_brush_predictions_import_as_masks(api_as, manager) -> None:
    project = project_create(manager, kind="mask", labels=["road"], tile_size=0)
    width, height, rle, rows = CASES[0]
    same = image_ready(project, width=width, height=height, seed=1)
    twice = image_ready(project, width=2 * width, height=2 * height, seed=2)

    def task(image, size):
        region = {
            "type": "brushlabels", "original_width": size[0], "original_height": size[1],
            "value": {"format": "rle", "rle": rle, "brushlabels": ["road"]}, "score": 0.8,
        }  # fmt: skip
        return {"data": {"image": f"/data/upload/1/{image.name}"},
                "predictions": [{"model_version": "sam-1", "result": [region]}]}  # fmt: skip

    tasks = [task(same, (width, height)), task(twice, (width, height))]
    response = json_file_post(
        api_as(manager), f"/api/v1/projects/{project.pk}/predictions/file/", tasks,
        name="tasks.json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    drawn = _drawn(rows)
    # The backend saw the second image at half its size: the mask is scaled to it.
    for image, expected in ((same, drawn), (twice, drawn.repeat(2, axis=0).repeat(2, axis=1))):
        (item,) = Prediction.objects.get(image=image).annotations
        assert (item["label"], item["score"]) == ("road", 0.8)
        rle_out = {**item["rle"], "counts": item["rle"]["counts"].encode()}
        assert (coco_mask.decode(rle_out).astype(bool) == expected).all()
    # A stream that does not fit its size is the item's fault, named.
    tasks[0]["predictions"][0]["result"][0]["original_width"] = 2 * width
    tasks[0]["predictions"][0]["result"][0]["original_height"] = 2 * height
    response = json_file_post(
        api_as(manager), f"/api/v1/projects/{project.pk}/predictions/file/", tasks[:1],
        name="tasks.json",
    )  # fmt: skip
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["tasks[0].predictions[0].result[0].value.rle"]
