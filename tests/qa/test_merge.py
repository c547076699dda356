"""Consensus runs of a project (job and API), and ``manage.py aggregate`` on outside answers."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from django.core.management import CommandError, call_command

from crowd.jobs import wait_for_jobs
from qa.consensus.boxes import merge_boxes, merge_boxes_batch
from qa.consensus.objects import Answer
from qa.models import ConsensusResult, ConsensusRun
from tasks import routing
from tasks.models import Task
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import classification_project, no_gold


def work(project, worker, items) -> None:
    lease = routing.assignment_next(project=project, worker=worker, rand=no_gold)
    assert lease is not None
    routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=items)


@pytest.mark.django_db(transaction=True)
@pytest.mark.both_databases
def test_a_consensus_run_stores_traceable_results(api_as, manager, client_user) -> None:
    project, truth = classification_project(
        manager, gold=1, images=3, min_overlap=3, max_overlap=3, agreement_threshold=0.5
    )
    workers = [WorkerFactory.create() for _ in range(3)]
    for _ in range(3):
        for i, w in enumerate(workers):
            # The third worker says "fish" to everything; the others tell the truth.
            lease = routing.assignment_next(project=project, worker=w, rand=no_gold)
            assert lease is not None
            label = "fish" if i == 2 else truth[lease.task.image_id]
            routing.assignment_submit(
                assignment_id=lease.pk, worker=w, annotations=[{"label": label}]
            )
    response = api_as(manager).post(f"/api/v1/projects/{project.pk}/consensus/")
    assert response.status_code == 202
    wait_for_jobs()
    run = ConsensusRun.objects.get(pk=response.json()["id"])
    assert run.status == "done", run.error
    latest = api_as(client_user).get(f"/api/v1/projects/{project.pk}/consensus/")
    assert latest.status_code == 404  # the client is not on this project
    results = api_as(manager).get(f"/api/v1/projects/{project.pk}/consensus/results/").json()
    assert results["count"] == 4  # three answered images and the gold one
    by_image = {r["image"]: r for r in results["results"]}
    for image_id, row in by_image.items():
        assert row["annotations"][0]["label"] == truth[image_id]
        if row["method"] == "gold":
            continue
        assert row["votes"] == 3
        assert row["annotations"][0]["num_votes"] == 3
        said = {c["worker"]: c["label"] for c in row["contributors"]["answers"]}
        assert said[workers[2].pk] == "fish"
    # Running it again replaces the results; nothing is duplicated.
    api_as(manager).post(f"/api/v1/projects/{project.pk}/consensus/")
    wait_for_jobs()
    assert ConsensusResult.objects.filter(project=project).count() == 4
    # Workers see none of it.
    assert api_as(workers[0]).get(f"/api/v1/projects/{project.pk}/consensus/").status_code == 403


@pytest.mark.django_db
def test_boxes_across_a_tile_seam_come_out_as_one(manager) -> None:
    from qa.merge import consensus_compute

    project = project_create(
        manager, kind="bbox", labels=["car"], gold_rate=0.0, min_overlap=2, max_overlap=2,
        tile_size=512, tile_overlap=64, agreement_threshold=0.1,
    )  # fmt: skip
    image_ready(project, width=960, height=400)
    project = project_transition(project=project, action="start")
    tiles = list(Task.objects.order_by("x"))
    assert [t.region for t in tiles] == [[0, 0, 512, 400], [448, 0, 512, 400]]
    # A car from x=400 to x=600 crosses the seam: each tile's workers mark the part they see.
    left = [{"label": "car", "bbox": [400, 100, 112, 50]}]
    right = [{"label": "car", "bbox": [448, 100, 152, 50]}]
    workers = [WorkerFactory.create() for _ in range(4)]
    for w in workers[:2]:
        work(project, w, left)
    for w in workers[2:]:
        work(project, w, right)
    assert set(Task.objects.values_list("state", flat=True)) == {"done"}
    run = ConsensusRun.objects.create(project=project)
    consensus_compute(run_id=run.pk)
    result = ConsensusResult.objects.get()
    assert len(result.annotations) == 1, result.annotations
    assert result.annotations[0]["bbox"] == pytest.approx([400, 100, 200, 50], abs=1)
    members = result.contributors["objects"][0]
    assert len(members) == 4  # every worker's piece is traceable


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
    with pytest.raises(CommandError, match="em for bbox only"):
        run_aggregate(tmp_path, "polygon", text, "--method", "em")


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


@pytest.mark.django_db
def test_a_spammer_is_outweighed_then_suspended_out_of_the_merge(manager) -> None:
    """Three workers box every image; the third marks a box nowhere near any object. While
    they count, their box finds no quorum; once suspended, their answers leave the merge and
    the contributors, and the vote count drops to the two who remain."""
    from qa.merge import consensus_compute
    from qa.services import worker_suspend

    project = project_create(
        manager, kind="bbox", labels=["car", "person"], gold_rate=0.0, min_overlap=3,
        max_overlap=3, agreement_threshold=0.1,
    )  # fmt: skip
    for seed in range(2):
        image_ready(project, width=400, height=300, seed=seed)
    project = project_transition(project=project, action="start")
    car = [{"label": "car", "bbox": [50, 60, 100, 80]}]
    workers = [WorkerFactory.create() for _ in range(3)]
    for _ in range(2):
        for i, w in enumerate(workers):
            if i < 2:
                work(project, w, car)
            else:
                work(project, w, [{"label": "person", "bbox": [300, 200, 40, 40]}])

    def merged() -> list[ConsensusResult]:
        consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
        return list(ConsensusResult.objects.filter(project=project))

    for result in merged():
        assert [a["label"] for a in result.annotations] == ["car"]
        assert result.annotations[0]["num_votes"] == 2
        assert result.votes == 3
        assert str(workers[2].pk) in result.contributors["weights"]
    worker_suspend(project=project, worker_id=workers[2].pk, by=manager, reason="spam")
    for result in merged():
        assert [a["label"] for a in result.annotations] == ["car"]
        assert result.annotations[0]["bbox"] == [50, 60, 100, 80]
        assert result.votes == 2
        assert str(workers[2].pk) not in result.contributors["weights"]
