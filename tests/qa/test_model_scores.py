"""A model version scored on gold like a worker (``qa.model_scores``): the same scoring
functions per kind, the same posterior, and the calibration of its scores; shown to managers
at ``GET /projects/{id}/models/``."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from qa import model_scores
from qa.calibration import calibration
from qa.models import GoldResult, ModelScore
from qa.reliability import Evidence, reliability, vote_weight
from qa.services import gold_set
from tasks import routing
from tasks.models import Image, Project
from tasks.predictions import predictions_import
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create, token_for
from tests.qa.helpers import gold_draw

pytestmark = pytest.mark.django_db

GOLD_BOXES = [
    {"label": "car", "bbox": [10, 10, 60, 40]},
    {"label": "tree", "bbox": [150, 60, 50, 120]},
]


def _bbox_project(
    manager: Any, gold_images: int = 6, **settings: Any
) -> tuple[Project, list[Image]]:
    project = project_create(manager, gold_rate=0.5, min_overlap=1, max_overlap=1, **settings)
    images = []
    for i in range(gold_images):
        image = image_ready(project, seed=i)
        gold_set(project=project, image_id=image.pk, annotations=GOLD_BOXES, user=manager)
        images.append(image)
    return project, images


def _predict(project: Project, version: str, per_image: dict[int, list[dict[str, Any]]]) -> None:
    predictions_import(
        project=project,
        data={
            "model_version": version,
            "predictions": [{"image": i, "annotations": a} for i, a in per_image.items()],
        },
    )


# The model finds the car (score 0.9), misses the tree, and adds a stray box (score 0.3,
# below the minimum score: not part of its answer, but judged by calibration).
HALF = [
    {"label": "car", "bbox": [12, 11, 58, 40], "score": 0.9},
    {"label": "tree", "bbox": [250, 10, 40, 40], "score": 0.3},
]


def test_a_model_is_scored_on_gold_by_the_workers_scoring(manager: Any) -> None:
    project, images = _bbox_project(manager)
    _predict(project, "v1", {image.pk: HALF for image in images})
    # A worker who gives the model's answer to a gold task gets the same gold score.
    project = project_transition(project=project, action="start")
    worker = WorkerFactory.create()
    lease = routing.assignment_next(project=project, worker=worker, rand=gold_draw)
    assert lease is not None
    assert lease.task.is_gold
    routing.assignment_submit(
        assignment_id=lease.pk, worker=worker, annotations=model_scores.model_answer(project, HALF)
    )
    worker_result = GoldResult.objects.get(assignment=lease)

    row = model_scores.model_score(project, "v1")
    assert row.gold_seen == 6
    assert row.gold_score_sum / row.gold_seen == pytest.approx(worker_result.score)
    assert worker_result.score == pytest.approx(2 / 3)  # F1 of one of two boxes, no extra
    assert row.gold_passed == 0  # 2/3 is below gold_pass_score 0.7, as for the worker
    assert row.details["matched"] == 6
    assert row.details["missed"] == 6
    assert row.details["extra"] == 0  # the 0.3 box is below the minimum score
    assert row.details["recall"] == 0.5
    assert row.details["precision"] == 1.0
    # The score is a worker's posterior of the same evidence.
    assert model_scores.reliability(model_scores.evidence(row)) == pytest.approx(
        reliability(Evidence(6, 4.0))
    )
    # Calibration judges every scored object: six right at 0.9, six wrong at 0.3.
    cal = row.calibration
    assert cal["objects"] == 12
    assert cal["ece"] == pytest.approx((6 * 0.1 + 6 * 0.3) / 12)
    assert cal["accuracy"] == 0.5
    assert cal["bins"][9]["count"] == 6
    assert cal["bins"][9]["accuracy"] == 1.0
    assert cal["bins"][3]["count"] == 6
    assert cal["bins"][3]["accuracy"] == 0.0


def test_the_minimum_score_is_the_projects(manager: Any) -> None:
    project, images = _bbox_project(manager)
    project.ml_backend_min_score = 0.2
    project.save(update_fields=["ml_backend_min_score"])
    _predict(project, "v1", {image.pk: HALF for image in images})
    row = model_scores.model_score(project, "v1")
    assert row.details["extra"] == 6
    assert row.details["min_score"] == 0.2
    assert row.gold_score_sum / 6 == pytest.approx(0.5)  # P 1/2, R 1/2


def test_a_stale_score_is_recomputed_when_predictions_or_gold_change(manager: Any) -> None:
    project, images = _bbox_project(manager)
    _predict(project, "v1", {image.pk: HALF for image in images})
    assert model_scores.model_score(project, "v1").gold_passed == 0
    perfect = [{**item, "score": 0.95} for item in GOLD_BOXES]
    _predict(project, "v1", {image.pk: perfect for image in images})
    row = model_scores.model_score(project, "v1")
    assert row.gold_passed == 6
    assert row.gold_score_sum == pytest.approx(6.0)
    # Another gold image without a prediction changes nothing of its score, but one the
    # model predicted is counted.
    extra = image_ready(project, seed=99)
    gold_set(project=project, image_id=extra.pk, annotations=GOLD_BOXES[:1], user=manager)
    assert model_scores.model_score(project, "v1").gold_seen == 6
    _predict(project, "v1", {extra.pk: perfect})
    assert model_scores.model_score(project, "v1").gold_seen == 7
    assert ModelScore.objects.filter(project=project).count() == 1


def test_classification_model_is_scored_by_exact_match(manager: Any) -> None:
    project = project_create(manager, kind="classification", labels=["cat", "dog"])
    per_image = {}
    for i in range(10):
        image = image_ready(project, seed=i)
        gold_set(project=project, image_id=image.pk, annotations=[{"label": "cat"}], user=manager)
        # Right on 8 (score 0.99), wrong on 2 (score 0.99): over-confident.
        per_image[image.pk] = [{"label": "cat" if i < 8 else "dog", "score": 0.99}]
    _predict(project, "clf-1", per_image)
    row = model_scores.model_score(project, "clf-1")
    assert (row.gold_seen, row.gold_passed, row.gold_score_sum) == (10, 8, 8.0)
    cal = row.calibration
    assert cal["mean_score"] == pytest.approx(0.99)
    assert cal["accuracy"] == pytest.approx(0.8)
    assert cal["ece"] == pytest.approx(0.19)


def test_calibration_of_a_calibrated_model_is_near_zero() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 20000)
    right = rng.random(20000) < scores
    assert (calibration(scores, right).ece or 1.0) < 0.02
    over = np.clip(scores + 0.25, 0, 1)
    assert (calibration(over, right).ece or 0.0) > 0.15
    empty = calibration([], [])
    assert empty.objects == 0
    assert empty.ece is None
    assert len(empty.bins) == 10
    with pytest.raises(ValueError, match="same length"):
        calibration([0.5], [True, False])


def test_managers_see_each_version_and_which_one_votes(manager: Any) -> None:
    project, images = _bbox_project(manager, gold_images=5)
    perfect = [{**item, "score": 0.95} for item in GOLD_BOXES]
    _predict(project, "old", {image.pk: HALF for image in images[:3]})
    _predict(project, "new", {image.pk: perfect for image in images[:4]})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(manager)}")
    body = client.get(f"/api/v1/projects/{project.pk}/models/").json()
    assert body["current_version"] == "new"
    assert [v["model_version"] for v in body["versions"]] == ["new", "old"]
    new, old = body["versions"]
    assert new["gold_seen"] == 4
    assert new["gold_score"] == 1.0
    assert not new["votes"]
    assert "from 5 on" in new["not_voting_reason"]
    assert old["not_voting_reason"].startswith("an earlier version")
    assert new["weight"] == pytest.approx(round(vote_weight(Evidence(4, 4.0)), 4))
    _predict(project, "new", {images[4].pk: perfect})
    new = client.get(f"/api/v1/projects/{project.pk}/models/").json()["versions"][0]
    assert new["votes"]
    assert new["not_voting_reason"] is None
    # A worker may not read it.
    worker = WorkerFactory.create()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(worker)}")
    assert client.get(f"/api/v1/projects/{project.pk}/models/").status_code == 403


def test_a_model_gold_judges_poor_does_not_vote(manager: Any) -> None:
    project, images = _bbox_project(manager, gold_images=8)
    wrong = [{"label": "tree", "bbox": [250, 150, 40, 40], "score": 0.9}]
    _predict(project, "bad", {image.pk: wrong for image in images})
    row = model_scores.model_score(project, "bad")
    allowed, reason = model_scores.votes(project, row)
    assert not allowed
    assert "confidently below" in reason
    assert model_scores.model_voter(project, [i.pk for i in images]) is None
