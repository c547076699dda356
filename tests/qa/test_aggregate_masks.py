"""``crowd-aggregate --kind mask`` (and ``manage.py aggregate``) on JSON Lines of RLE items."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from qa.geometry import mask_iou
from tests.qa.mask_crowd import crowd, quality, rle
from tests.qa.test_aggregate import rows_of, run

W, H = 40, 30


def square(x: int, y: int, side: int) -> dict[str, Any]:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + side, x : x + side] = 1
    return rle(mask)


def crowd_lines(images: int = 12) -> tuple[list, list[dict[str, Any]]]:
    scenes, crowds = crowd(seed=11, images=images)
    lines = [
        {"task": f"img{k}", "worker": worker, "annotations": items}
        for k, answers in enumerate(crowds)
        for worker, _, items in answers
    ]
    return scenes, lines


def test_masks_merge_by_the_worker_model_and_report_it(tmp_path) -> None:
    scenes, lines = crowd_lines()
    report = tmp_path / "report.json"
    done = run(tmp_path, "mask", lines, "--report", str(report))
    assert done.returncode == 0, done.stderr
    rows = rows_of(tmp_path)
    assert [r["task"] for r in rows] == [f"img{k}" for k in range(len(scenes))]
    for item in rows[0]["annotations"]:
        assert set(item) == {"label", "rle", "score", "num_votes"}
        assert item["rle"]["size"] == [scenes[0].height, scenes[0].width]
    found = np.mean([quality(s, r["annotations"]) for s, r in zip(scenes, rows, strict=True)])
    assert found >= 0.75
    content = json.loads(report.read_text())
    assert content["method"] == "em"
    workers = {w["worker"]: w for w in content["workers"]}
    assert workers["c1"]["specificity"] > workers["brush"]["specificity"]
    assert workers["spam"]["false_marks"] > 3 * workers["c1"]["false_marks"]
    # A fixed quorum instead of the model.
    done = run(tmp_path, "mask", lines, "--quorum", "0.5")
    assert done.returncode == 0, done.stderr


def test_semantic_masks_take_a_pixel_vote(tmp_path) -> None:
    road, car = square(0, 0, 20), square(25, 10, 10)
    lines = [
        {"task": "a", "worker": w, "annotations": [{"label": "road", "rle": road}, {"label": "car", "rle": car}]}
        for w in ("w1", "w2", "w3")
    ] + [{"task": "a", "worker": "odd", "annotations": [{"label": "car", "rle": road}]}]  # fmt: skip
    report = tmp_path / "report.json"
    done = run(tmp_path, "mask", lines, "--mask-mode", "semantic", "--report", str(report))
    assert done.returncode == 0, done.stderr
    (row,) = rows_of(tmp_path)
    merged = {item["label"]: item["rle"] for item in row["annotations"]}
    assert mask_iou([merged["road"]], [road])[0, 0] == 1.0
    assert mask_iou([merged["car"]], [car])[0, 0] == 1.0
    content = json.loads(report.read_text())
    assert content["method"] == "pixel_vote"
    workers = {w["worker"]: w for w in content["workers"]}
    assert workers["odd"]["accuracy"] < workers["w1"]["accuracy"]
    # Overlapping masks are no semantic answer.
    overlapping = [{"task": "b", "worker": "x", "annotations": [
        {"label": "road", "rle": road}, {"label": "car", "rle": square(10, 10, 15)}]}]  # fmt: skip
    done = run(tmp_path, "mask", overlapping, "--mask-mode", "semantic")
    assert done.returncode == 2
    assert "Line 1: annotations[1].rle: This mask overlaps annotations[0]" in done.stderr
    done = run(tmp_path, "mask", lines, "--mask-mode", "semantic", "--quorum", "0.5")
    assert done.returncode == 2
    assert "per-pixel vote, which has no quorum" in done.stderr


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"label": "car", "rle": {"size": [H, W + 1], "counts": square(0, 0, 3)["counts"]}},
         r"annotations\[0\].rle.size: The mask is 30x41"),
        ({"label": "car", "rle": {"size": [H, W], "counts": "#!"}},
         r"annotations\[0\].rle.counts: The counts are not a COCO compressed RLE string"),
        ({"label": "car", "rle": {"size": [H, W], "counts": [3, 4]}},
         r"annotations\[0\].rle.counts: Give the counts as the string"),
        ({"label": "car", "rle": rle(np.zeros((H, W)))}, r"annotations\[0\].rle: The mask is empty"),
    ],
)  # fmt: skip
def test_a_bad_mask_is_refused_by_line_or_skipped(tmp_path, bad, message) -> None:
    good = {"task": "a", "worker": 1, "annotations": [{"label": "car", "rle": square(0, 0, 5)}]}
    lines = [good, {**good, "worker": 2}, {"task": "a", "worker": 3, "annotations": [bad]}]
    (tmp_path / "out").write_text("before\n")
    done = run(tmp_path, "mask", lines)
    assert done.returncode == 2
    assert "Line 3: " in done.stderr
    assert message.replace("\\", "") in done.stderr.replace("\\", "")
    assert (tmp_path / "out").read_text() == "before\n"
    done = run(tmp_path, "mask", lines, "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "1 invalid line skipped" in done.stderr
    (row,) = rows_of(tmp_path)
    assert [item["num_votes"] for item in row["annotations"]] == [2]


def test_manage_py_aggregate_writes_what_the_script_writes(tmp_path) -> None:
    _, lines = crowd_lines(images=4)
    done = run(tmp_path, "mask", lines)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "via-django"
    call_command("aggregate", "--kind", "mask", "--input", str(tmp_path / "in"),
                 "--output", str(target), "--quiet")  # fmt: skip
    assert target.read_bytes() == (tmp_path / "out").read_bytes()
