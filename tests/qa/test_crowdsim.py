"""The simulated crowd: scenes whose truth is exact, workers whose answers the API accepts,
and ``manage.py crowdsim`` working real projects in-process and over HTTP."""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from crowd.models import Role, User
from frontend.management.commands.seed_demo import DEMO_PROJECTS
from frontend.sim.accounts import account_ensure
from frontend.sim.clients import ServicesClient
from frontend.sim.engine import CrowdRun, lease_wait_note
from frontend.sim.seeding import sim_project_create
from frontend.sim.truth import truth_path
from payouts.models import EntryKind, LedgerEntry
from qa.geometry import polygons_to_rles
from qa.models import WorkerScore, WorkerStatus
from qa.scoring import gold_score
from qa.sim import scenes
from qa.sim.crowd import BEHAVIOURS, SimWorker, TaskView, crowd_parse, marks
from tasks.annotations import Schema, validate_annotations
from tasks.models import Assignment, AssignmentStatus, Prediction, Project, Task, TaskState
from tests.e2e.server import live_server, manage, server_env

ANSWERED = [AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED]
SHAPE_KINDS = ("bbox", "polygon", "keypoints")


def _mask(polygon: list[list[float]], width: int, height: int) -> np.ndarray:
    """The polygon rasterised by pycocotools: not the drawing code the scenes use."""
    rle = polygons_to_rles([polygon], width, height)[0]
    with warnings.catch_warnings():
        # pycocotools' decoder hands numpy 2 an array the old way; numpy warns, and copies.
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def _distance(x: float, y: float, polygon: list[list[float]]) -> float:
    """From a point to a polygon: 0 inside, else to the nearest edge."""
    if scenes.point_in_polygon(x, y, polygon):
        return 0.0
    best = float("inf")
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        dx, dy = x1 - x0, y1 - y0
        t = max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy or 1.0)))
        best = min(best, float(np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))))
    return best


def _schema(kind: str) -> Schema:
    return Schema(kind=kind, keypoints={n: scenes.KEYPOINTS[n] if kind == "keypoints" else []
                                        for n in scenes.CLASSES})  # fmt: skip


@pytest.mark.parametrize("kind", scenes.KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_scene_truth_is_exact(kind: str, seed: int) -> None:
    scene = scenes.scene_make(seed, kind=kind, width=320, height=240)
    pixels = np.asarray(Image.open(io.BytesIO(scenes.encode(scene))).convert("RGB"))
    w, h = scene.width, scene.height
    masks = [_mask(shape.polygon, w, h) for shape in scene.shapes]
    for index, shape in enumerate(scene.shapes):
        colour = np.array(scenes.COLOURS[shape.label])
        later = np.zeros((h, w), bool)
        for mask in masks[index + 1 :]:
            later |= mask
        # Inside the truth polygon (one pixel in from its edge) and not under a later shape,
        # every pixel has the class colour.
        inside = ndimage.binary_erosion(masks[index]) & ~ndimage.binary_dilation(
            later, iterations=2
        )
        assert inside.sum() > 20, (shape.label, inside.sum())
        assert (pixels[inside] == colour).all(), shape.label
        # The box is the polygon's bounds, inside the image; keypoints are the class's.
        xs, ys = [p[0] for p in shape.polygon], [p[1] for p in shape.polygon]
        assert shape.bbox == pytest.approx([min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])
        x, y, bw, bh = shape.bbox
        assert min(x, y) >= 0
        assert x + bw <= w
        assert y + bh <= h
        assert min(bw, bh) > 0
        assert len(shape.keypoints) == len(scenes.KEYPOINTS[shape.label])
        for kx, ky, v in shape.keypoints:
            if v:
                assert x - 0.01 <= kx <= x + bw + 0.01
                assert y - 0.01 <= ky <= y + bh + 0.01
    # Every pixel of a class colour lies in (or within 2 px of) a truth polygon of that
    # class: the truth misses no drawn shape. Sharp tips thinner than a pixel are not in the
    # rasterised masks, so the pixels outside them are measured against the polygon itself.
    for label, rgb in scenes.COLOURS.items():
        drawn = (pixels == np.array(rgb)).all(axis=2)
        polygons = [s.polygon for s in scene.shapes if s.label == label]
        covered = np.zeros((h, w), bool)
        for polygon in polygons:
            covered |= _mask(polygon, w, h)
        for py, px in zip(*np.nonzero(drawn & ~ndimage.binary_dilation(covered)), strict=True):
            assert min(_distance(px + 0.5, py + 0.5, p) for p in polygons) <= 2, (label, px, py)
    truth = scene.truth(kind)
    validate_annotations(truth, schema=_schema(kind), width=w, height=h)
    if kind == "mask":
        # Each mask is its shape's visible pixels: they never overlap, and inside one (a
        # pixel in from its edge) every pixel has its class colour.
        semantic = Schema(kind="mask", keypoints=_schema(kind).keypoints, mask_mode="semantic")
        validate_annotations(truth, schema=semantic, width=w, height=h)
        for item in truth:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                painted = coco_mask.decode(
                    {**item["rle"], "counts": item["rle"]["counts"].encode()}
                )
            core = ndimage.binary_erosion(painted, iterations=2)
            assert (pixels[core] == np.array(scenes.COLOURS[item["label"]])).all(), item["label"]
    if kind == "classification":
        areas = sorted((m.sum(), s.label) for s, m in zip(scene.shapes, masks, strict=True))
        assert truth == [{"label": areas[-1][1]}]
        assert all(area * 4 <= areas[-1][0] for area, _ in areas[:-1])


def test_scenes_are_deterministic_and_varied() -> None:
    first = scenes.scenes_write(8, seed=5, kind="bbox", width=200, height=150)
    again = scenes.scenes_write(8, seed=5, kind="bbox", width=200, height=150)
    assert [(f.name, f.data) for f in first] == [(f.name, f.data) for f in again]
    assert len({f.data for f in first}) == 8
    shapes = [s for f in first for s in f.scene.shapes]
    assert {s.label for s in shapes} == set(scenes.CLASSES)
    assert {f.scene.background for f in scenes.scenes_write(12, seed=1, kind="bbox")} == set(
        scenes.BACKGROUNDS
    )
    # Some shapes are cut by the border: their clipped outline is smaller than the whole.
    assert any(len(s.polygon) != len(s.outline) or s.polygon != s.outline for s in shapes)
    jpeg = scenes.scenes_write(1, seed=5, kind="bbox", fmt="JPEG")[0]
    assert jpeg.name.endswith(".jpg")
    assert jpeg.data[:2] == b"\xff\xd8"


def _regions(width: int, height: int) -> list[list[float]]:
    return [
        [0, 0, width, height],
        [0, 0, width / 2, height / 2],
        [width / 3, height / 4, width / 2, height / 2],
    ]


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_every_behaviour_answers_with_payloads_the_api_accepts(kind: str) -> None:
    schema = _schema(kind)
    for name, behaviour in BEHAVIOURS.items():
        for number in (1, 2):
            worker = SimWorker(behaviour, number, seed=11)
            for seed in range(12):
                scene = scenes.scene_make(seed, kind=kind, width=240, height=180)
                for region in (
                    _regions(scene.width, scene.height)
                    if kind != "classification"
                    else _regions(240, 180)[:1]
                ):
                    view = TaskView(
                        kind=kind, keypoints=schema.keypoints, width=240, height=180, region=region
                    )
                    answer = worker.answer(view, scene.truth(kind))
                    clean = validate_annotations(answer, schema=schema, width=240, height=180)
                    assert len(clean) == len(answer), name
                    rx, ry, rw, rh = region
                    for item in clean:  # nothing outside the task's region
                        points = (
                            [
                                item["bbox"][:2],
                                [
                                    item["bbox"][0] + item["bbox"][2],
                                    item["bbox"][1] + item["bbox"][3],
                                ],
                            ]
                            if kind == "bbox"
                            else item.get("points")
                            or [k[:2] for k in item.get("keypoints", []) if k[2]]
                        )
                        for px, py in points:
                            assert rx - 1e-6 <= px <= rx + rw + 1e-6, (name, item)
                            assert ry - 1e-6 <= py <= ry + rh + 1e-6, (name, item)


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_behaviours_have_the_skill_they_claim(kind: str) -> None:
    """Against the truth, as gold scoring judges: careful workers nearly always pass, sloppy
    ones mostly, spammers almost never, and an adversary only on its honest share."""
    schema = _schema(kind)
    sigmas = {n: np.full(len(k), 0.05) for n, k in scenes.KEYPOINTS.items()}
    mean = {}
    for name in ("careful", "sloppy", "spammer", "adversary"):
        scores = []
        for number in (1, 2):
            worker = SimWorker(BEHAVIOURS[name], number, seed=3)
            for seed in range(40):
                scene = scenes.scene_make(seed, kind=kind, width=480, height=360)
                view = TaskView(
                    kind=kind,
                    keypoints=schema.keypoints,
                    width=480,
                    height=360,
                    region=[0, 0, 480, 360],
                )
                truth = scene.truth(kind)
                answer = validate_annotations(
                    worker.answer(view, truth), schema=schema, width=480, height=360
                )
                scores.append(
                    gold_score(kind, truth, answer, sigmas=sigmas, width=480, height=360).score
                )
        mean[name] = float(np.mean(scores))
    assert mean["careful"] >= 0.9, mean
    assert 0.6 <= mean["sloppy"] < mean["careful"], mean
    assert mean["spammer"] <= 0.35, mean
    assert 0.15 <= mean["adversary"] <= 0.6, mean


def test_abandon_and_skip_rates_and_lognormal_speed() -> None:
    rng_workers = {name: SimWorker(b, 1, seed=1) for name, b in BEHAVIOURS.items()}
    abandons = sum(rng_workers["dropout"].abandons() for _ in range(2000)) / 2000
    assert abandons == pytest.approx(BEHAVIOURS["dropout"].dropout_rate, abs=0.04)
    assert not any(rng_workers["careful"].abandons() for _ in range(500))
    careful = np.median([rng_workers["careful"].seconds() for _ in range(2000)])
    spammer = np.median([rng_workers["spammer"].seconds() for _ in range(2000)])
    assert careful == pytest.approx(rng_workers["careful"].median_seconds(), rel=0.1)
    assert spammer < careful / 4


# A typical task of each kind, as the generated scenes make them: what a careful worker
# marks, and the range its median time must fall in (published figures, see ``TIMES``).
TYPICAL = {
    "classification": (0, (2.0, 6.0)),  # a few seconds to pick a class
    "bbox": (3, (20.0, 40.0)),  # 3 boxes at 7-10 s each
    "polygon": (3, (45.0, 100.0)),  # 3 outlines at tens of seconds each
    "keypoints": (12, (20.0, 45.0)),  # 3 shapes of 4 points at a few seconds each
    "mask": (3, (45.0, 100.0)),  # 3 masks painted, as long as outlining them
}


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_simulated_times_per_kind_are_those_of_people_at_work(kind: str) -> None:
    marks, (low, high) = TYPICAL[kind]

    def times(behaviour: str) -> np.ndarray:
        # Many workers, each with its own speed, so the spread is the crowd's.
        workers = [SimWorker(BEHAVIOURS[behaviour], n, seed=7) for n in range(1, 101)]
        return np.array([w.seconds(kind, marks) for w in workers for _ in range(30)])

    careful = times("careful")
    assert low <= np.median(careful) <= high, np.median(careful)
    # Spread: a lognormal of per-task and per-worker variation, neither flat nor wild.
    p10, p90 = np.percentile(careful, [10, 90])
    assert 2.0 <= p90 / p10 <= 6.0, (p10, p90)
    assert careful.min() > 0
    sloppy, spammer = np.median(times("sloppy")), np.median(times("spammer"))
    assert spammer < sloppy < np.median(careful)
    assert spammer <= np.median(careful) / 5
    # Workers differ in speed: the quickest careful worker's median is well below the slowest's.
    speeds = [SimWorker(BEHAVIOURS["careful"], n, seed=7).speed for n in range(1, 101)]
    assert max(speeds) / min(speeds) >= 2
    # More marks take longer.
    worker = SimWorker(BEHAVIOURS["careful"], 1, seed=7)
    if kind != "classification":
        assert worker.median_seconds(kind, marks + 1) > worker.median_seconds(kind, marks)


def test_an_answers_marks_are_its_shapes_or_placed_points() -> None:
    assert marks("classification", [{"label": "circle"}]) == 0
    assert marks("bbox", [{"label": "circle", "bbox": [0, 0, 1, 1]}] * 3) == 3
    assert marks("polygon", []) == 0
    points = [[1, 1, 2], [0, 0, 0], [3, 3, 1]]
    assert marks("keypoints", [{"label": "triangle", "keypoints": points}] * 2) == 4


def test_crowd_spec_is_parsed_and_bad_specs_are_explained() -> None:
    assert crowd_parse("careful:6, sloppy:3,spammer:2,adversary:1,dropout:1") == [
        ("careful", 6), ("sloppy", 3), ("spammer", 2), ("adversary", 1), ("dropout", 1)
    ]  # fmt: skip
    assert crowd_parse("careful") == [("careful", 1)]
    for spec, message in [
        ("experts:3", "Unknown behaviour"), ("careful:x", "whole number"),
        ("careful:2,careful:1", "twice"), ("careful:0", "empty"), ("", "empty"),
        ("careful:5000", "between 0 and 1000"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            crowd_parse(spec)


# --- The engine ----------------------------------------------------------------------------------


def test_the_wait_for_an_abandoned_lease_is_rounded_up() -> None:
    assert lease_wait_note([130.0, 100.0], 90.0) == (
        10.5,
        "waiting 11s for abandoned leases to expire",
    )
    assert lease_wait_note([100.0], 100.4)[1] == "waiting 1s for abandoned leases to expire"
    assert lease_wait_note([100.0], 200.0)[0] == 0.0


@pytest.mark.django_db
def test_the_engine_counts_the_wait_for_an_abandoned_lease_down(tmp_path: Path) -> None:
    """Everyone is told "nothing now" and a dropout's lease expires at 100 s: the engine waits
    a second at a time on the clock, the progress note counting down, then asks again."""
    manager, _ = account_ensure("sim-manager", Role.MANAGER)
    project, truth = sim_project_create(
        kind="classification", images=2, gold=0, manager=manager, seed=1
    )
    now = [90.0]
    notes: list[str] = []
    run = CrowdRun(
        project=project, truth=truth, workers=[SimWorker(BEHAVIOURS["careful"], 1, seed=0)],
        clients=[ServicesClient("sim-careful-1", project.pk)], clock=lambda: now[0],
        progress=lambda done, total, answers, note: notes.append(note),
    )  # fmt: skip
    worker = run.workers[0]
    worker.idle_version = run.version  # told "nothing now"
    run.parked.append((5.0, worker))
    run.abandoned.append(100.0)
    waits: list[float] = []

    def wait(timeout: float | None = None) -> bool:  # the clock moves by the time waited
        assert timeout is not None
        waits.append(timeout)
        now[0] += timeout
        return False

    run.cond.wait = wait  # type: ignore[method-assign]
    assert run._pick() == (worker, 5.0)  # the parked worker asks again once the lease is back
    assert waits == [1.0] * 10 + [pytest.approx(0.5)]
    assert notes == [f"waiting {s}s for abandoned leases to expire" for s in range(11, 0, -1)]
    assert run.note == ""
    assert run.abandoned == []


# --- The command, in-process -------------------------------------------------------------------


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.django_db
def test_crowdsim_creates_a_bbox_project_and_careful_workers_label_it_well(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    stdout = io.StringIO()
    # More careful workers than the projects' maximum overlap (4): a task whose answers
    # disagree asks for four that count, and the spammer's stop counting once it is
    # suspended, while a careful worker may skip a task (1%). With as many careful workers as
    # the overlap, such a task could be left with nobody to answer it.
    call_command(
        "crowdsim", "--create", "bbox", "--images", "20", "--gold", "8", "--seed", "3",
        "--crowd", "careful:6,spammer:1", "--approve", "--quiet", "--json", str(out),
        stdout=stdout,
    )  # fmt: skip
    report = _report(out)
    project = Project.objects.get(pk=report["project"]["id"])
    assert truth_path(project.pk).exists()
    # Every real task was done, and the merged boxes match the truth.
    assert report["tasks"]["done"] == report["tasks"]["total"] == 12
    assert Task.objects.filter(project=project, is_gold=False, state=TaskState.DONE).count() == 12
    assert report["quality"]["images"] == 12
    assert report["quality"]["f1"] >= 0.9, report["quality"]
    assert report["quality"]["mean_iou"] >= 0.8, report["quality"]
    # The spammer was caught by gold, the careful workers were not.
    spammer = User.objects.get(username="sim-spammer-1")
    assert WorkerScore.objects.get(project=project, worker=spammer).status == WorkerStatus.SUSPENDED
    assert [s["worker"] for s in report["suspended"]] == ["sim-spammer-1"]
    assert report["suspended"][0]["behaviour"] == "spammer"
    careful = WorkerScore.objects.filter(
        project=project, worker__username__startswith="sim-careful"
    )
    assert careful.count() == 6
    assert not careful.filter(status=WorkerStatus.SUSPENDED).exists()
    # The report's counts are the database's.
    answered = Assignment.objects.filter(project=project, status__in=ANSWERED)
    assert report["run"]["answers"] == answered.count() == report["cost"]["answers"]
    approved = answered.filter(status=AssignmentStatus.APPROVED).count()
    rejected = answered.filter(status=AssignmentStatus.REJECTED, worker=spammer).count()
    assert (report["reviews"]["approved"], report["reviews"]["rejected"]) == (approved, rejected)
    assert approved + rejected == answered.count()
    rewards = LedgerEntry.objects.filter(project=project, kind=EntryKind.REWARD)
    assert rewards.count() == approved
    assert report["cost"]["spent"] == f"{approved * 5 / 100:.2f}"
    text = stdout.getvalue()
    assert "F1@0.5" in text
    assert "sim-spammer-1 (spammer)" in text


@pytest.mark.django_db
def test_crowdsim_works_an_existing_simulated_project_and_refuses_others(tmp_path: Path) -> None:
    call_command(
        "crowdsim", "--create", "keypoints", "--images", "6", "--gold", "2",
        "--crowd", "careful:2", "--max-answers", "3", "--quiet", "--json", str(tmp_path / "a.json"),
        stdout=io.StringIO(),
    )  # fmt: skip
    first = _report(tmp_path / "a.json")
    assert first["run"]["answers"] == 3
    assert first["run"]["ended"] == "3 answers given (--max-answers)"
    project_id = first["project"]["id"]
    before = Assignment.objects.filter(project_id=project_id).order_by("-pk").first()
    assert before is not None
    text = io.StringIO()
    call_command(
        "crowdsim", "--project", str(project_id), "--crowd", "careful:3", "--quiet",
        "--json", str(tmp_path / "b.json"), stdout=text,
    )  # fmt: skip
    second = _report(tmp_path / "b.json")
    assert second["tasks"]["done"] == second["tasks"]["total"] == 4
    assert second["quality"]["mean_oks"] >= 0.8
    # The report's counts are the database's: this run's answers, and the project's over
    # both runs, each with its answers to gold tasks.
    answered = Assignment.objects.filter(project_id=project_id, status__in=ANSWERED)
    this_run = answered.filter(pk__gt=before.pk)
    r, t = second["run"], second["tasks"]
    assert r["answers"] == this_run.count() == answered.count() - 3
    assert r["gold_answers"] == this_run.filter(task__is_gold=True).count()
    assert sum(w["answers"] for w in second["behaviours"]) == r["answers"]
    assert t["answers"] == second["cost"]["answers"] == answered.count()
    assert t["answers_to_gold_tasks"] == answered.filter(task__is_gold=True).count()
    assert t["answers_to_real_tasks"] == answered.filter(task__is_gold=False).count()
    assert r["gold_answers"] <= t["answers_to_gold_tasks"]
    assert r["answers"] < t["answers"]
    assert (
        f"this run: {r['answers']} answers ({r['gold_answers']} of them to gold tasks)"
        in text.getvalue()
    )
    assert f"all runs: {t['answers']} ({t['answers_to_gold_tasks']} to gold tasks)" in (
        text.getvalue()
    )
    # The answers keep the simulated workers' time, not the in-process run's milliseconds.
    spent = sorted(a.time_spent_ms or 0 for a in answered)
    assert spent[0] >= 2000, spent
    truth_path(project_id).unlink()
    with pytest.raises(CommandError, match="only projects created by the simulator"):
        call_command("crowdsim", "--project", str(project_id), "--quiet")
    for args, message in [
        (["--project", "999999"], "No project 999999"),
        (["--create", "bbox", "--crowd", "experts:2"], "Unknown behaviour"),
        (["--create", "bbox", "--url", "ftp://x"], "http://host:port"),
        (["--create", "bbox", "--via", "services", "--url", "http://x"], "--url is for --via http"),
        (["--create", "bbox", "--images", "4", "--gold", "4"], "fewer than the images"),
        (["--create", "bbox", "--speed", "-1"], "--speed"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("crowdsim", *args, "--quiet")
    assert Project.objects.count() == 1  # refused runs leave nothing behind


# --- The command, over HTTP against a server ----------------------------------------------------


def test_crowdsim_over_http_against_a_live_server_matches_the_database(tmp_path: Path) -> None:
    env = server_env(VAR_DIR=tempfile.mkdtemp(prefix="crowd-sim-var-"))
    manage(env, "migrate", "--noinput")
    report_path = tmp_path / "http.json"
    with live_server(env) as server:  # the crowd is sized as in the in-process test above
        output = manage(
            env, "crowdsim", "--create", "classification", "--images", "10", "--gold", "4",
            "--crowd", "careful:5,spammer:1", "--url", server.url, "--workers-concurrency", "3",
            "--approve", "--quiet", "--seed", "2", "--json", str(report_path),
        )  # fmt: skip
    report = _report(report_path)
    assert "accuracy" in output
    http = report["run"]["http"]
    assert report["run"]["via"] == "http"
    assert http["register 201"] == 6
    assert http["token 200"] == 6
    assert http["submit 200"] == report["run"]["answers"]
    assert http["next 201"] >= report["run"]["answers"]
    db = sqlite3.connect(Path(env["VAR_DIR"]) / "db.sqlite3")
    project = report["project"]["id"]

    def one(sql: str, *params: object) -> int:
        return int(db.execute(sql, params).fetchone()[0])

    answered = one(
        "SELECT count(*) FROM tasks_assignment WHERE project_id = ? AND status IN "
        "('submitted', 'approved', 'rejected')", project,
    )  # fmt: skip
    assert answered == report["run"]["answers"] == report["cost"]["answers"]
    assert (
        one(
            "SELECT count(*) FROM tasks_assignment a JOIN crowd_user u ON u.id = a.worker_id "
            "WHERE a.project_id = ? AND u.username LIKE 'sim-%' AND a.idempotency_key LIKE 'sim-%'",
            project,
        )
        == answered
    )  # every answer came with the client's Idempotency-Key
    assert (
        one(
            "SELECT count(*) FROM authtoken_token t JOIN crowd_user u ON u.id = t.user_id "
            "WHERE u.username LIKE 'sim-%' AND u.role = 'worker'"
        )
        == 6
    )
    approved = one(
        "SELECT count(*) FROM tasks_assignment WHERE project_id = ? AND status = 'approved'",
        project,
    )
    assert approved == report["reviews"]["approved"]
    assert one(
        "SELECT coalesce(sum(amount), 0) FROM payouts_ledgerentry WHERE project_id = ?", project
    ) == round(float(report["cost"]["spent"]) * 100)
    done = one(
        "SELECT count(*) FROM tasks_task WHERE project_id = ? AND NOT is_gold AND state = 'done'",
        project,
    )
    assert done == report["tasks"]["done"] == report["tasks"]["total"] == 6
    assert report["quality"]["accuracy"] >= 0.8
    db.close()


@pytest.mark.django_db
def test_the_demo_shows_the_figures_of_people_at_work() -> None:
    """Seconds a task, not tenths; hourly rates near the demo's reward intent, above the
    fair-pay floor but for the polygon project, which shows the warning."""
    from payouts.selectors import fair_pay

    call_command("seed_demo", stdout=io.StringIO())
    figures = {}
    for kind, name in DEMO_PROJECTS:
        project = Project.objects.get(name=name, owner__username="manager")
        assert project.assignment_seconds == 30  # a dropout's task comes back soon
        figures[kind] = fair_pay(project)
    seconds = {k: f["median_seconds_per_task"] for k, f in figures.items()}
    hourly = {k: float(f["effective_hourly_rate"]["amount"]) for k, f in figures.items()}
    assert 1.5 <= seconds["classification"] <= 6, seconds
    assert 15 <= seconds["bbox"] <= 45, seconds
    assert 30 <= seconds["polygon"] <= 90, seconds
    assert 10 <= seconds["keypoints"] <= 45, seconds
    for kind in ("classification", "bbox", "keypoints"):
        assert 10 <= hourly[kind] <= 25, hourly
        assert figures[kind]["fair_pay_warning"] is None, kind
    assert 5 <= hourly["polygon"] < 10, hourly
    assert "below the floor" in figures["polygon"]["fair_pay_warning"]


def test_simulated_names_and_passwords_are_stable() -> None:
    workers = [SimWorker(BEHAVIOURS["spammer"], n, seed=0) for n in (1, 2)]
    assert [w.name for w in workers] == ["sim-spammer-1", "sim-spammer-2"]
    assert [w.constant for w in workers] == [False, True]
    view = TaskView(
        kind="bbox", keypoints={"circle": []}, width=100, height=100, region=[0, 0, 100, 100]
    )
    assert workers[1].answer(view, [{"label": "circle", "bbox": [1, 1, 10, 10]}]) == []
    same = SimWorker(BEHAVIOURS["sloppy"], 1, seed=4)
    other = SimWorker(BEHAVIOURS["sloppy"], 1, seed=4)
    assert [same.seconds() for _ in range(5)] == [other.seconds() for _ in range(5)]


def test_a_simulated_model_has_the_recall_and_calibration_it_claims() -> None:
    from qa.calibration import calibration
    from qa.scoring import gold_score
    from qa.sim.model import SimModel, model_parse

    truth = [
        {"label": "car", "bbox": [10 + 60 * (k % 8), 10 + 60 * (k // 8), 40, 30]} for k in range(8)
    ]
    for kind in ("calibrated", "over-confident"):
        model = SimModel(recall=0.85, calibration=kind, false_marks=2.0, labels=("car", "tree"))
        scores: list[float] = []
        right: list[bool] = []
        found = total = 0
        for image in range(300):
            items = model.predict(image, truth, 640, 480)
            result = gold_score("bbox", truth, [{k: v for k, v in i.items() if k != "score"}
                                                for i in items])  # fmt: skip
            found += result.matched + result.wrong_label
            total += len(truth)
            from qa.geometry import match_annotations

            matched = {m.cand for m in match_annotations(truth, items, kind="bbox",
                                                         threshold=0.5).matches}  # fmt: skip
            scores += [i["score"] for i in items]
            right += [k in matched for k in range(len(items))]
        assert found / total == pytest.approx(0.85, abs=0.02)
        measured = calibration(scores, right)
        error, gap = measured.ece or 0.0, (measured.mean_score or 0.0) - (measured.accuracy or 0.0)
        if kind == "calibrated":
            assert error < 0.03
            assert abs(gap) < 0.03
        else:
            assert error > 0.06
            assert gap > 0.06
        # The same image is answered the same way.
        assert model.predict(5, truth, 640, 480) == model.predict(5, truth, 640, 480)
    small = SimModel(recall=1.0, small_side=0.1, false_marks=0.0)
    assert small.predict(0, truth, 640, 480) == []  # every object is under 10% of the scale
    parsed = model_parse("recall=circle:0.9/star:0.6,calibration=over-confident,small=0.05")
    assert parsed.class_recall("star") == 0.6
    assert parsed.small_side == 0.05
    with pytest.raises(ValueError, match="unknown model setting"):
        model_parse("precision=1")
    with pytest.raises(ValueError, match="calibration is one of"):
        model_parse("calibration=perfect")


@pytest.mark.django_db
def test_crowdsim_with_a_model_scores_it_on_gold_and_counts_it(tmp_path: Path) -> None:
    stdout = io.StringIO()
    call_command(
        "crowdsim", "--create", "bbox", "--images", "20", "--gold", "8", "--seed", "4",
        "--crowd", "careful:4", "--model", "recall=0.9,calibration=over-confident",
        "--quiet", stdout=stdout,
    )  # fmt: skip
    text = stdout.getvalue()
    project = Project.objects.order_by("-pk").first()
    assert project is not None
    from qa import model_scores

    row = model_scores.current_row(project)
    assert row is not None
    assert row.gold_seen == 8
    assert "Model sim-model-4-" in text
    assert "votes in consensus" in text
    assert "rest on it" in text
    assert not WorkerScore.objects.filter(project=project, worker_id__lte=0).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["classification", "polygon", "keypoints", "mask"])
def test_crowdsim_models_and_prelabels_for_every_kind(kind: str) -> None:
    # The simulated model's items pass the predictions import's checks for the project's
    # kind (strict: one bad item would refuse the file), and workers are shown them.
    stdout = io.StringIO()
    call_command(
        "crowdsim", "--create", kind, "--images", "8", "--gold", "3", "--seed", "6",
        "--crowd", "careful:3", "--model", "recall=0.8,false=0.5", "--prelabels", "0.2",
        "--anchoring", "0.5", "--quiet", stdout=stdout,
    )  # fmt: skip
    project = Project.objects.order_by("-pk").first()
    assert project is not None
    assert project.kind == kind

    assert Prediction.objects.filter(project=project).count() == 8
    assert "Model sim-model-6-" in stdout.getvalue()
    records = [a.prelabels for a in Assignment.objects.filter(project=project, status__in=ANSWERED)]
    shown = [r for r in records if r and r["offered"]]
    assert shown
    # Workers anchoring half the time keep pre-labels as shown, and judge the others (a
    # class answered on one's own is the pre-label kept, or relabelled where the model erred).
    assert sum(r["counts"]["kept"] for r in shown) > 0
    if kind != "classification":
        judged = ("moved", "relabelled", "deleted")
        assert sum(r["counts"][outcome] for r in shown for outcome in judged) > 0
