"""``crowd-aggregate``, the console script people run on exports from other platforms, and
``manage.py aggregate`` over the same core (:mod:`qa.aggregate`)."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.aggregate import plain_boxes
from qa.consensus.boxes import merge_boxes, merge_boxes_batch
from qa.consensus.objects import Answer
from tasks.annotations import AnnotationError, Schema, validate_annotations


def script() -> str:
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        found = shutil.which("crowd-aggregate", path=str(folder))
        if found:
            return found
    raise AssertionError("crowd-aggregate is not installed beside this Python (pip install -e .)")


def run(
    tmp_path: Path, kind: str, lines: list[Any] | str, *extra: str
) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "in"
    text = lines if isinstance(lines, str) else "".join(json.dumps(x) + "\n" for x in lines)
    source.write_text(text)
    command = [script(), "--kind", kind, "--input", str(source), "--output", str(tmp_path / "out")]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=120)


def rows_of(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]


def box_lines(width: int = 200, height: int = 100) -> list[dict[str, Any]]:
    return [
        {"task": "img1", "worker": w, "annotations": [{"label": "car", "bbox": [10 + w, 10, 50, 40]}],
         "width": width, "height": height}
        for w in range(3)
    ] + [{"task": "img2", "worker": 0, "annotations": [], "width": width, "height": height}]  # fmt: skip


# Each kind, run as the console script


def test_boxes(tmp_path) -> None:
    done = run(tmp_path, "bbox", box_lines(), "--quorum", "0.5")
    assert done.returncode == 0, done.stderr
    first, second = rows_of(tmp_path)
    assert first["task"] == "img1"
    (car,) = first["annotations"]
    assert car["label"] == "car"
    assert car["num_votes"] == 3
    assert car["bbox"] == pytest.approx([11, 10, 50, 40], abs=1e-6)
    assert second == {"task": "img2", "annotations": []}
    assert "2 tasks aggregated (4 answers of 3 workers; 0 objects clipped" in done.stderr


def test_polygons(tmp_path) -> None:
    lines = [
        {"task": "p", "worker": w, "width": 100, "height": 80,
         "annotations": [{"label": "leaf", "points": [[10 + w, 10], [50, 10], [50, 50], [10, 50]]}]}
        for w in range(3)
    ]  # fmt: skip
    done = run(tmp_path, "polygon", lines)
    assert done.returncode == 0, done.stderr
    ((row,),) = [r["annotations"] for r in rows_of(tmp_path)]
    assert row["label"] == "leaf"
    assert row["num_votes"] == 3
    xs = [x for x, _ in row["points"]]
    assert 9 <= min(xs) <= 13
    assert max(xs) == pytest.approx(50, abs=1)
    assert row["rle"]["size"] == [80, 100]


def test_keypoints(tmp_path) -> None:
    lines = [
        {"task": "k", "worker": w, "width": 200, "height": 200,
         "annotations": [{"label": "hand", "keypoints": [[50 + w, 50, 2], [100, 100 + w, 2], [0, 0, 0]]}]}
        for w in range(3)
    ]  # fmt: skip
    done = run(tmp_path, "keypoints", lines, "--keypoint-names", "wrist,thumb,index")
    assert done.returncode == 0, done.stderr
    ((hand,),) = [r["annotations"] for r in rows_of(tmp_path)]
    assert hand["num_votes"] == 3
    (wx, wy, wv), (tx, ty, tv), (_, _, iv) = hand["keypoints"]
    assert (wx, wy, wv) == (pytest.approx(51, abs=1), pytest.approx(50), 2)
    assert (tx, ty, tv) == (pytest.approx(100), pytest.approx(101, abs=1), 2)
    assert iv == 0  # nobody marked it


def test_classification(tmp_path) -> None:
    text = "task,worker,label\n" + "".join(
        f"t{t},w{w},{'a' if (t + w) % 4 else 'b'}\n" for t in range(6) for w in range(3)
    )
    done = run(tmp_path, "classification", text)
    assert done.returncode == 0, done.stderr
    out = list(csv.DictReader(io.StringIO((tmp_path / "out").read_text())))
    assert [r["task"] for r in out] == [f"t{t}" for t in range(6)]
    assert out[0] == {"task": "t0", "label": "a", "confidence": "0.666667", "votes": "3"}


def test_the_script_starts_without_django_numpy_or_the_progress_bar() -> None:
    probe = (
        "import sys, qa.aggregate; "
        "print(sorted(m for m in ('django', 'numpy', 'scipy', 'tqdm', 'qa.consensus.boxes') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# Real-world input


def test_coordinates_just_past_the_edge_are_clipped_and_counted(tmp_path) -> None:
    lines = box_lines()
    lines[1]["annotations"][0]["bbox"] = [-2, 10, 50, 40]  # reaches 2 px past the left edge
    lines[2]["annotations"][0]["bbox"] = [160, 70, 42, 31]  # past the right and bottom edges
    done = run(tmp_path, "bbox", lines, "--report", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr
    assert "2 objects clipped into the image" in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["clipped_objects"] == 2
    boxes = [a["bbox"] for row in rows_of(tmp_path) for a in row["annotations"]]
    assert all(x >= 0 and y >= 0 and x + w <= 200 and y + h <= 100 for x, y, w, h in boxes)


def test_strict_refuses_a_coordinate_past_the_edge_naming_its_line(tmp_path) -> None:
    lines = box_lines()
    lines[2]["annotations"] = [{"label": "car", "bbox": [5, 5, 9, 9]},
                               {"label": "car", "bbox": [-2, 10, 50, 40]}]  # fmt: skip
    done = run(tmp_path, "bbox", lines, "--strict")
    assert done.returncode == 2
    assert "Line 3: annotations[1] reaches past the edge of the 200x100 image" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "Line 3: not JSON"),
        ('{"task": "img1", "annotations": []}', 'Line 3: each line is {"task", "worker"'),
        ('{"task": "img1", "worker": 7, "annotations": {}}', "Line 3: annotations must be a list"),
        ('{"task": "img1", "worker": 7, "annotations": [], "weight": 2}', "Line 3: weight must be"),
        ('{"task": "img1", "worker": 7, "annotations": [{"label": "car", "bbox": [0, 0, -1, 5]}]}',
         r"Line 3: annotations\[0\].bbox: A box needs a positive width"),
        ('{"task": "img1", "worker": 7, "annotations": [{"label": "car", "bbox": [500, 0, 9, 9]}]}',
         r"Line 3: annotations\[0\].bbox: Box \[500, 0, 9, 9\] extends outside the 200x100 image"),
    ],
)  # fmt: skip
def test_a_bad_line_is_refused_by_number_and_nothing_is_written(tmp_path, bad, message) -> None:
    good = [json.dumps(x) for x in box_lines()]
    text = "\n".join([*good[:2], bad, *good[2:]]) + "\n"
    (tmp_path / "out").write_text("the previous consensus\n")
    done = run(tmp_path, "bbox", text)
    assert done.returncode == 2
    assert done.stderr.startswith("crowd-aggregate: error: ")
    assert re.search(message, done.stderr), done.stderr
    assert "--skip-invalid" in done.stderr
    assert (tmp_path / "out").read_text() == "the previous consensus\n"  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporary left


def test_the_first_bad_line_is_named_whichever_check_finds_it(tmp_path) -> None:
    lines = [json.dumps(x) for x in box_lines()]
    lines[0] = json.dumps(
        {"task": "img1", "worker": 9, "annotations": [{"label": 3, "bbox": [1, 1, 2, 2]}]}
    )
    lines.append("{not json")
    done = run(tmp_path, "bbox", "\n".join(lines))
    assert done.returncode == 2
    assert "Line 1: annotations[0].label" in done.stderr


def test_skip_invalid_skips_counts_and_reports_every_bad_line(tmp_path) -> None:
    lines = [json.dumps(x) for x in box_lines()]
    bad_lines = []
    for i in range(25):
        bad_lines.append(len(lines) + 1)
        lines.append(
            "{oops"
            if i % 2
            else json.dumps({"task": f"x{i}", "worker": 1, "annotations": [{"label": "car"}]})
        )
    lines.append(
        json.dumps({"task": "img3", "worker": 4, "annotations": [], "width": 9, "height": 9})
    )
    report = tmp_path / "report.json"
    done = run(tmp_path, "bbox", "\n".join(lines), "--skip-invalid", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert [r["task"] for r in rows_of(tmp_path)] == ["img1", "img2", "img3"]
    shown = ", ".join(str(n) for n in bad_lines[:20])
    assert (
        f"25 invalid lines skipped: the first 20 are {shown} (the report lists them all)."
        in done.stderr
    )
    content = json.loads(report.read_text())
    assert content["summary"] == {"tasks": 3, "answers": 5, "workers": 4, "clipped_objects": 0,
                                  "skipped_lines": 25}  # fmt: skip
    assert [s["line"] for s in content["skipped"]] == bad_lines
    assert content["skipped"][0]["error"] == "annotations[0].bbox: A box is [x, y, width, height]."
    assert content["skipped"][1]["error"].startswith("not JSON")


def test_quiet_says_nothing_and_progress_shows_a_bar(tmp_path) -> None:
    done = run(tmp_path, "bbox", box_lines(), "--quiet")
    assert (done.returncode, done.stderr) == (0, "")
    done = run(tmp_path, "bbox", box_lines(), "--progress")
    assert "reading" in done.stderr
    assert "2 tasks aggregated" in done.stderr
    done = run(tmp_path, "bbox", box_lines())  # stderr is not a terminal here: no bar
    assert "reading" not in done.stderr


# What the report tells of each worker


def crowd_with_a_spammer(rng: random.Random, n_images: int) -> list[dict[str, Any]]:
    """Four careful workers who mark nearly every object closely, and one who boxes at random."""
    lines = []
    for t in range(n_images):
        truth = [(rng.uniform(0, 500), rng.uniform(0, 300), rng.choice(["car", "bus"]))
                 for _ in range(rng.randint(1, 4))]  # fmt: skip
        for w in range(4):
            items = [{"label": label, "bbox": [x + rng.gauss(0, 2), y + rng.gauss(0, 2), 80, 60]}
                     for x, y, label in truth if rng.random() < 0.95]  # fmt: skip
            lines.append(
                {"task": t, "worker": f"w{w}", "annotations": items, "width": 600, "height": 400}
            )
        noise = [{"label": rng.choice(["car", "bus"]),
                  "bbox": [rng.uniform(0, 500), rng.uniform(0, 300), 80, 60]} for _ in truth]  # fmt: skip
        lines.append(
            {"task": t, "worker": "spammer", "annotations": noise, "width": 600, "height": 400}
        )
    return lines


def test_the_box_report_shows_the_spammer_for_what_they_are(tmp_path) -> None:
    lines = crowd_with_a_spammer(random.Random(5), 60)
    assert run(tmp_path, "bbox", lines).returncode == 0
    without = (tmp_path / "out").read_bytes()
    report = tmp_path / "report.json"
    done = run(tmp_path, "bbox", lines, "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == without  # the report changes nothing merged
    content = json.loads(report.read_text())
    assert (content["kind"], content["method"]) == ("bbox", "em")
    assert content["summary"]["workers"] == 5
    workers = {w["worker"]: w for w in content["workers"]}
    spammer = workers.pop("spammer")
    # The worker model's own fields, whatever they are, and the agreement with the consensus.
    assert {"recall", "false_marks", "noise", "images", "agreement"} <= set(spammer)
    assert spammer["images"] == 60
    assert max(w["false_marks"] for w in workers.values()) < spammer["false_marks"] / 3
    assert min(w["agreement"]["f1"] for w in workers.values()) > 0.8
    assert spammer["agreement"]["f1"] < 0.3
    assert min(w["recall"] for w in workers.values()) > spammer["recall"] + 0.3


def test_the_polygon_report_gives_agreement_with_the_consensus(tmp_path) -> None:
    lines = []
    for t in range(5):
        for w in range(3):
            square = [[10 + w, 10], [50, 10], [50, 50], [10, 50]]
            lines.append({"task": t, "worker": w, "width": 100, "height": 80,
                          "annotations": [{"label": "leaf", "points": square}]})  # fmt: skip
        far = [[70, 60], [90, 60], [90, 75], [70, 75]]
        lines.append({"task": t, "worker": "stray", "width": 100, "height": 80,
                      "annotations": [{"label": "leaf", "points": far}]})  # fmt: skip
    report = tmp_path / "report.json"
    done = run(tmp_path, "polygon", lines, "--report", str(report))
    assert done.returncode == 0, done.stderr
    workers = {w["worker"]: w for w in json.loads(report.read_text())["workers"]}
    assert {k: workers[0][k] for k in ("worker", "answers", "items", "agreement")} == {
        "worker": 0, "answers": 5, "items": 5,
        "agreement": {"precision": 1.0, "recall": 1.0, "f1": 1.0},
    }  # fmt: skip
    assert workers["stray"]["agreement"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # The polygon worker model learnt over the file: the stray's polygons are strays.
    assert workers["stray"]["false_marks"] > 3 * workers[0]["false_marks"]
    assert workers["stray"]["recall"] < workers[0]["recall"]


def test_the_dawid_skene_report_gives_each_worker_confusion_and_accuracy(tmp_path) -> None:
    rng = random.Random(11)
    rows = ["task,worker,label"]
    for t in range(80):
        truth = rng.choice("ab")
        for w in range(4):
            given = truth if rng.random() < 0.9 else ("b" if truth == "a" else "a")
            rows.append(f"t{t},w{w},{given}")
        rows.append(f"t{t},spammer,{rng.choice('ab')}")
    report = tmp_path / "report.json"
    done = run(tmp_path, "classification", "\n".join(rows) + "\n", "--report", str(report))
    assert done.returncode == 0, done.stderr
    content = json.loads(report.read_text())
    assert content["method"] == "dawid_skene"  # auto, on 400 answers
    assert content["labels"] == ["a", "b"]
    assert content["summary"] == {"tasks": 80, "answers": 400, "workers": 5,
                                  "clipped_objects": 0, "skipped_lines": 0}  # fmt: skip
    workers = {w["worker"]: w for w in content["workers"]}
    for worker in workers.values():
        assert worker["answers"] == 80
        assert [sum(row) for row in worker["confusion"]] == pytest.approx([1, 1])
    spammer = workers.pop("spammer")
    assert min(w["accuracy"] for w in workers.values()) > 0.8
    assert spammer["accuracy"] < 0.65
    assert spammer["agreement"] < min(w["agreement"] for w in workers.values()) - 0.2


# manage.py aggregate: the same core under Django


@pytest.mark.parametrize(
    ("kind", "text", "extra"),
    [
        ("bbox", "".join(json.dumps(x) + "\n" for x in crowd_with_a_spammer(random.Random(2), 20)), []),
        ("bbox", "".join(json.dumps(x) + "\n" for x in box_lines()), ["--method", "merge"]),
        ("polygon", json.dumps({"task": 1, "worker": 1, "width": 30, "height": 30,
                                "annotations": [{"label": "a", "points": [[1, 1], [20, 1], [20, 20]]}]}), []),
        ("keypoints", json.dumps({"task": 1, "worker": 1, "width": 30, "height": 30,
                                  "annotations": [{"label": "a", "keypoints": [[1, 1, 2], [5, 5, 1]]}]}), []),
        ("classification", "task,worker,label\n1,a,x\n1,b,x\n2,a,y\n", []),
    ],
)  # fmt: skip
def test_manage_py_aggregate_writes_what_the_script_writes(tmp_path, kind, text, extra) -> None:
    done = run(tmp_path, kind, text, *extra)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "via-django"
    call_command("aggregate", "--kind", kind, "--input", str(tmp_path / "in"),
                 "--output", str(target), "--quiet", *extra)  # fmt: skip
    assert target.read_bytes() == (tmp_path / "out").read_bytes()
    assert target.read_bytes()


def test_manage_py_aggregate_refuses_a_bad_line_with_the_same_message(tmp_path) -> None:
    done = run(tmp_path, "bbox", '{"task": 1, "worker": 2, "annotations": []}\n[1, 2]\n')
    with pytest.raises(CommandError) as refused:
        call_command("aggregate", "--kind", "bbox", "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / "via-django"))  # fmt: skip
    assert str(refused.value) in done.stderr
    assert refused.value.returncode == done.returncode == 2
    assert str(refused.value).startswith('Line 2: each line is {"task"')
    assert not (tmp_path / "via-django").exists()


# manage.py aggregate, called in-process (moved from test_merge.py)


def run_aggregate(tmp_path, kind: str, text: str, *extra: str) -> str:
    source, target = tmp_path / "in", tmp_path / "out"
    source.write_text(text)
    call_command(
        "aggregate", "--kind", kind, "--input", str(source), "--output", str(target), *extra
    )
    return target.read_text()


def test_aggregate_classification_csv(tmp_path) -> None:
    text = "task,worker,label\n" + "".join(
        f"t{t},w{w},{'a' if (t + w) % 4 else 'b'}\n" for t in range(6) for w in range(3)
    )
    out = list(csv.DictReader(io.StringIO(run_aggregate(tmp_path, "classification", text))))
    assert [r["task"] for r in out] == [f"t{t}" for t in range(6)]
    assert all(r["votes"] == "3" for r in out)
    assert out[0]["label"] == "a"  # t0: w0 says b, w1 and w2 say a
    majority = run_aggregate(tmp_path, "classification", text, "--method", "majority_vote")
    assert "task,label,confidence,votes" in majority


def test_aggregate_warns_that_dawid_skene_overstates_on_few_answers(tmp_path, capsys) -> None:
    text = "task,worker,label\nt1,a,cat\nt1,b,cat\nt1,c,dog\nt2,a,dog\nt2,b,dog\nt2,c,cat\n"
    auto = list(csv.DictReader(io.StringIO(run_aggregate(tmp_path, "classification", text))))
    assert [float(r["confidence"]) for r in auto] == pytest.approx([2 / 3, 2 / 3], abs=1e-6)
    assert "too few" not in capsys.readouterr().err
    run_aggregate(tmp_path, "classification", text, "--method", "dawid_skene")
    assert "Dawid-Skene on 6 answers: too few" in capsys.readouterr().err


def test_aggregate_boxes_json_lines(tmp_path) -> None:
    lines = [
        {"task": "img1", "worker": w, "annotations": [{"label": "car", "bbox": [10 + w, 10, 50, 40]}],
         "width": 200, "height": 100}
        for w in range(3)
    ] + [{"task": "img1", "worker": 9, "annotations": [{"label": "car", "bbox": [150, 50, 20, 20]}]}]  # fmt: skip
    out = run_aggregate(tmp_path, "bbox", "\n".join(json.dumps(x) for x in lines))
    (row,) = [json.loads(x) for x in out.splitlines()]
    assert row["task"] == "img1"
    (car,) = row["annotations"]  # the lone box of worker 9 is below the quorum
    assert car["num_votes"] == 3
    assert car["bbox"] == pytest.approx([11, 10, 50, 40], abs=1)
    assert 0 < car["score"] <= 1


def test_aggregate_boxes_of_many_images_match_a_merge_per_image(tmp_path) -> None:
    """Boxes merge as one batch over the file: each image's objects as merging it alone."""
    rng = random.Random(3)
    lines: list[dict] = []
    by_task: dict[str, list[Answer]] = {}
    for t in range(40):
        truth = [(rng.uniform(10, 150), rng.uniform(10, 60), rng.choice(["car", "bus"]))
                 for _ in range(rng.randint(0, 3))]  # fmt: skip
        for w in range(rng.randint(1, 5)):
            items = [{"label": label, "bbox": [x + rng.gauss(0, 2), y + rng.gauss(0, 2), 30, 20]}
                     for x, y, label in truth if rng.random() < 0.8]  # fmt: skip
            lines.append({"task": f"t{t}", "worker": w, "annotations": items,
                          "width": 200, "height": 100})  # fmt: skip
            by_task.setdefault(f"t{t}", []).append(Answer(w, 1.0, items))
    text = "\n".join(json.dumps(x) for x in lines)
    for fixed in (["--method", "merge"], ["--quorum", "0.5"]):
        rows = [json.loads(x) for x in run_aggregate(tmp_path, "bbox", text, *fixed).splitlines()]
        assert [r["task"] for r in rows] == list(by_task)
        for row in rows:
            alone = [o.to_item() for o in merge_boxes(by_task[row["task"]])]
            assert row["annotations"] == json.loads(json.dumps(alone))
        assert sum(len(r["annotations"]) for r in rows) > 20
    # By default boxes merge by the worker model learnt over the whole file.
    rows = [json.loads(x) for x in run_aggregate(tmp_path, "bbox", text).splitlines()]
    learnt = merge_boxes_batch(list(by_task.values()), method="em")
    assert rows == [
        {"task": task, "annotations": json.loads(json.dumps([o.to_item() for o in objects]))}
        for task, objects in zip(by_task, learnt, strict=True)
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "em", "--quorum", "0.4"], "em has no quorum"),
        (["--quorum", "0"], "must be in"),
        (["--method", "majority_vote"], "--method for shapes"),
    ],
)
def test_aggregate_refuses_contradictory_box_options(tmp_path, args, message) -> None:
    text = json.dumps({"task": 1, "worker": 1, "annotations": []})
    with pytest.raises(CommandError, match=message):
        run_aggregate(tmp_path, "bbox", text, *args)
    with pytest.raises(CommandError, match="em has no quorum"):
        run_aggregate(tmp_path, "polygon", text, "--method", "em", "--quorum", "0.5")


def test_aggregate_clips_a_vertex_just_past_the_edge(tmp_path) -> None:
    """A real file is not refused because one vertex of one polygon lies at x = -1."""
    square = [[-1, 10], [40, 10], [40, 50], [0, 50]]
    lines = [
        {"task": "p", "worker": w, "annotations": [{"label": "leaf", "points": square}],
         "width": 100, "height": 80}
        for w in range(3)
    ]  # fmt: skip
    out = run_aggregate(tmp_path, "polygon", "\n".join(json.dumps(x) for x in lines))
    (row,) = [json.loads(x) for x in out.splitlines()]
    (leaf,) = row["annotations"]
    assert min(x for x, _ in leaf["points"]) >= 0


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("classification", "a,b\n1,2\n", "must name its columns: task,worker,label .* it has a,b"),
        ("classification", "task,worker,label\n", "No answers"),
        ("bbox", "{not json\n", "Line 1: not JSON"),
        ("bbox", '{"task": 1, "worker": 2, "annotations": {}}\n', "annotations must be a list"),
        (
            "bbox",
            '{"task": 1, "worker": 2, "annotations": [{"label": "car", "bbox": [0, 0, -1, 5]}], "width": 10, "height": 10}\n',
            "Line 1",
        ),
    ],
)
def test_aggregate_reports_bad_input_by_line(tmp_path, kind, text, message) -> None:
    with pytest.raises(CommandError, match=message):
        run_aggregate(tmp_path, kind, text)


# The array check of boxes agrees with the full one


def coordinate(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.integers(int(low), int(high)), st.floats(low, high, allow_nan=False))


# Boxes about the 200 x 100 image, some a little or far past its edges; values that are no
# number; items malformed in every way.
boxes = st.tuples(coordinate(-8, 208), coordinate(-8, 108), coordinate(-2, 60), coordinate(-2, 60))
values = st.one_of(coordinate(-20, 220), st.sampled_from([1e-300, True, None, "5"]))
items = st.one_of(
    st.fixed_dictionaries({"label": st.sampled_from(["car", "bus"]), "bbox": boxes.map(list)}),
    st.fixed_dictionaries(
        {"label": st.sampled_from(["car", 7]), "bbox": st.lists(values, max_size=5)}
    ),
    st.fixed_dictionaries({"bbox": st.just([1, 1, 2, 2])}),
    st.just("car"),
)


def test_plain_boxes_take_clean_answers_and_leave_the_rest_to_the_full_check() -> None:
    clean = [{"label": "car", "bbox": [0.1, 0, 0.2, 100]}, {"label": "bus", "bbox": [1, 2, 3, 4]}]
    clipped = [{"label": "car", "bbox": [-1, 0, 10, 10]}]
    wrong = [{"label": "car", "bbox": [1, 2, 3, True]}]
    thin = [{"label": "car", "bbox": [100, 0, 1e-15, 5]}]  # no width left once added to x
    with pytest.raises(AnnotationError, match="along its edge"):
        validate_annotations(
            thin, schema=Schema(kind="bbox", keypoints={"car": []}), width=200, height=100
        )
    found = plain_boxes([clean, [], clipped, wrong, thin], [(200, 100)] * 5)
    schema = Schema(kind="bbox", keypoints={"car": [], "bus": []})
    plain = [found.items(k) for k in range(5)]
    assert plain == [list(validate_annotations(clean, schema=schema, width=200, height=100)), [],
                     None, None, None]  # fmt: skip
    assert plain[0] is not None
    assert plain[0][0]["bbox"][2] == (0.1 + 0.2) - 0.1  # the full check's arithmetic, bit for bit
    assert found.names == ["car", "bus"]
    assert found.counts == [2, 0, 1, 1, 1]
    assert found.label.tolist() == [0, 1, 0, 0, 0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(items, max_size=4), max_size=6))
def test_plain_boxes_are_what_the_full_check_returns(answers) -> None:
    sizes = [(200, 100)] * len(answers)
    found = plain_boxes(answers, sizes)
    plain = [found.items(k) for k in range(len(answers))]
    schema = Schema(kind="bbox", keypoints={"car": [], "bus": []})
    assert set(found.names) <= {"car", "bus"}
    assert len(found.boxes) == len(found.label) == sum(found.counts)
    for answer, fast in zip(answers, plain, strict=True):
        if fast is None:
            continue  # left to the full check
        full = validate_annotations(answer, schema=schema, width=200, height=100)
        assert full.clipped == 0
        assert fast == list(full)
    for answer, fast in zip(answers, plain, strict=True):
        try:
            full = validate_annotations(answer, schema=schema, width=200, height=100)
        except AnnotationError:
            assert fast is None
            continue
        if full.clipped:
            assert fast is None
