"""Simulated workers who anchor on the model's pre-labels, and the dashboard's comparison of
answers with and without pre-labels (``qa.prelabel_effect``) that must see them."""

from __future__ import annotations

import statistics

import pytest

from crowd.models import Role
from frontend.sim.accounts import account_ensure
from frontend.sim.engine import crowd_work
from frontend.sim.manager import model_predictions
from frontend.sim.seeding import sim_project_create
from qa.prelabel_effect import prelabel_effect
from qa.sim.crowd import BEHAVIOURS, SimWorker, TaskView, kept, marks
from qa.sim.model import SimModel
from qa.sim.scenes import CLASSES, KEYPOINTS, scene_make
from tasks.models import Assignment
from tasks.services import project_update

VIEW = TaskView("bbox", {"circle": [], "square": [], "star": []}, 480, 360, [0, 0, 480, 360])
TRUTH = [
    {"label": "circle", "bbox": [10.0, 10.0, 60.0, 60.0]},
    {"label": "square", "bbox": [200.0, 100.0, 80.0, 80.0]},
    {"label": "star", "bbox": [350.0, 250.0, 70.0, 70.0]},
]
# The model's mistakes: the circle with the wrong label, the square misplaced (IoU about
# 0.6), a stray box where nothing is; the star missed.
PRELABELS = [
    {"label": "square", "bbox": [10.0, 10.0, 60.0, 60.0], "score": 0.9, "model_version": "m"},
    {"label": "square", "bbox": [215.0, 110.0, 80.0, 80.0], "score": 0.8, "model_version": "m"},
    {"label": "circle", "bbox": [100.0, 250.0, 40.0, 40.0], "score": 0.6, "model_version": "m"},
]


def careful(anchoring: float, number: int = 1) -> SimWorker:
    return SimWorker(BEHAVIOURS["careful"], number, seed=5, anchoring=anchoring)


def test_a_fully_anchored_worker_keeps_every_prelabel_with_its_mistakes() -> None:
    worker = careful(1.0)
    for _ in range(20):
        answer = worker.answer(VIEW, TRUTH, PRELABELS)
        kept_items = [item for item in answer if "prelabel" in item]
        assert kept_items == [
            {"label": p["label"], "bbox": p["bbox"], "prelabel": k} for k, p in enumerate(PRELABELS)
        ]
        # The star the model missed stays missed; only the worker's own rare stray marks
        # come on top.
        assert not any(item["label"] == "star" and item["bbox"][0] > 300 for item in answer)
        assert kept(answer, PRELABELS) == 3
        assert marks("bbox", answer, PRELABELS) == len(answer) - 3


def test_a_worker_who_does_not_anchor_judges_every_prelabel() -> None:
    worker = careful(0.0)
    fixed_circle = stray_kept = star_drawn = 0
    runs = 200
    for _ in range(runs):
        answer = worker.answer(VIEW, TRUTH, PRELABELS)
        assert kept(answer, PRELABELS) == 0  # none as it was shown
        labels = {item.get("prelabel"): item for item in answer}
        fixed_circle += labels.get(0, {}).get("label") == "circle"
        stray_kept += 2 in labels
        star_drawn += any(
            item["label"] == "star" and "prelabel" not in item and item["bbox"][0] > 300
            for item in answer
        )
    assert fixed_circle >= 0.9 * runs  # relabelled to the truth (the pre-label named)
    assert stray_kept == 0  # deleted
    assert star_drawn >= 0.9 * runs  # the miss drawn by the worker


def test_anchoring_is_a_probability_per_prelabel_and_saves_time() -> None:
    worker = careful(0.5, number=2)
    shares = []
    for _ in range(400):
        answer = worker.answer(VIEW, TRUTH, PRELABELS)
        shares.append(kept(answer, PRELABELS) / len(PRELABELS))
    assert statistics.mean(shares) == pytest.approx(0.5, abs=0.05)
    # Keeping a pre-label costs a quarter of drawing one: a kept answer is quicker.
    assert worker.median_seconds("bbox", marks=0, kept=3) < worker.median_seconds("bbox", marks=3)
    with pytest.raises(ValueError, match="anchoring"):
        careful(1.5)


def test_a_task_without_prelabels_is_answered_the_same_whatever_the_anchoring() -> None:
    free, anchored = careful(0.0, number=3), careful(0.9, number=3)
    for _ in range(30):
        assert free.answer(VIEW, TRUTH) == anchored.answer(VIEW, TRUTH)


@pytest.mark.parametrize("kind", ["classification", "polygon", "keypoints", "mask"])
def test_workers_anchor_on_prelabels_of_every_kind(kind: str) -> None:
    scene = scene_make(11, kind=kind)
    truth = scene.truth(kind)
    view = TaskView(kind, {c: KEYPOINTS[c] for c in CLASSES}, scene.width, scene.height,
                    [0, 0, scene.width, scene.height])  # fmt: skip
    # The model finds every object; then its stray shapes where nothing is.
    found = SimModel(recall=1.0, false_marks=0.0, labels=CLASSES, seed=2)
    strays = SimModel(recall=0.0, false_marks=3.0, labels=CLASSES, seed=3)
    real = found.predict("a", truth, scene.width, scene.height, kind=kind)
    stray = strays.predict("b", truth, scene.width, scene.height, kind=kind)
    prelabels = real + ([] if kind == "classification" else stray)
    assert real
    assert stray or kind == "classification"
    for number in range(1, 11):
        anchored = careful(1.0, number).answer(view, truth, prelabels)
        # Every pre-label kept as shown, the strays with them (masks as answers hold them:
        # disjoint, a stray giving up what a real mask before it covers).
        exact = len(real) if kind == "mask" else len(prelabels)
        assert kept(anchored, prelabels) >= exact
        assert sorted(item["prelabel"] for item in anchored if "prelabel" in item) == list(
            range(len(prelabels))
        )
        judged = careful(0.0, number).answer(view, truth, prelabels)
        named = {item["prelabel"] for item in judged if "prelabel" in item}
        # The strays deleted; the real objects redrawn from their pre-labels (a careful
        # worker misses few); nothing kept as shown but by chance (a mask redrawn in place).
        assert not named & set(range(len(real), len(prelabels)))
        if kind == "classification":
            assert named == set()
        else:
            assert len(named) >= len(real) - 1
            assert kept(judged, prelabels) <= (len(real) if kind == "mask" else 0)


def _run(*, anchoring: float, seed: int) -> dict:
    manager, _ = account_ensure("sim-manager", Role.MANAGER)
    project, truth = sim_project_create(
        kind="bbox", images=60, gold=24, manager=manager, seed=seed,
        overrides={"gold_rate": 0.3, "min_overlap": 2, "max_overlap": 3,
                   "assignment_seconds": 600},
    )  # fmt: skip
    model_predictions(project=project, truth=truth, spec="recall=0.7,false=0.6", seed=seed)
    project = project_update(project=project, data={"prelabels": True, "prelabel_holdout": 0.3})
    crowd_work(project=project, truth=truth, crowd=[("careful", 8)], seed=seed,
               anchoring=anchoring)  # fmt: skip
    # Every answer to a predicted image carries the server's record of the pre-labels.
    answers = Assignment.objects.filter(project=project, status="submitted")
    assert answers.exists()
    assert not answers.filter(prelabels__isnull=True).exists()
    return prelabel_effect(project)


@pytest.mark.django_db
@pytest.mark.usefixtures("seeded_draws")
@pytest.mark.parametrize(("anchoring", "flag"), [(0.9, "lower_with_prelabels"), (0.0, None)])
def test_the_dashboard_flags_a_crowd_that_anchors_and_not_one_that_does_not(
    anchoring: float, flag: str | None
) -> None:
    effect = _run(anchoring=anchoring, seed=7)
    overall = effect["overall"]
    diff = overall["gold_score_difference"]
    assert diff is not None, overall
    assert overall["gold_score_flag"] == flag, overall
    if flag is None:
        # The run is seeded (the crowd, the model, and routing's draws of gold), so this is
        # one fixed sample: without anchoring its interval holds 0.
        assert diff["ci95"][0] <= 0 <= diff["ci95"][1]
        assert diff["p_value"] >= 0.05
        assert abs(diff["estimate"]) < 0.03, overall
    else:
        assert diff["ci95"][1] < 0
        assert diff["p_value"] < 0.05
        # Anchored workers are quicker with pre-labels, and keep most of them.
        assert overall["median_seconds_difference"]["estimate"] < 0
        assert effect["outcomes"]["kept_share"] >= 0.8


@pytest.mark.django_db
def test_crowdsim_shows_prelabels_to_anchoring_workers_and_reports_the_comparison(
    tmp_path,
) -> None:
    import io
    import json

    from django.core.management import CommandError, call_command

    out = tmp_path / "report.json"
    stdout = io.StringIO()
    call_command(
        "crowdsim", "--create", "bbox", "--images", "16", "--gold", "6", "--seed", "2",
        "--crowd", "careful:3", "--model", "recall=0.8", "--prelabels", "0.5",
        "--anchoring", "1", "--quiet", "--json", str(out), stdout=stdout,
    )  # fmt: skip
    assert "Pre-labels (50% of tasks held out)" in stdout.getvalue()
    report = json.loads(out.read_text())
    effect = report["prelabel_effect"]
    assert effect["prelabel_holdout"] == 0.5
    # Fully anchored: every pre-label offered is kept as it was.
    assert effect["outcomes"]["kept_share"] == 1.0
    shown = Assignment.objects.filter(prelabels__held_out=False, prelabels__offered__gt=0)
    assert shown.exists()
    for bad in (["--anchoring", "1.5"], ["--prelabels", "-0.1"]):
        with pytest.raises(CommandError, match="between 0 and 1"):
            call_command("crowdsim", "--create", "bbox", "--images", "4", "--gold", "1",
                         "--crowd", "careful:1", "--quiet", *bad)  # fmt: skip
