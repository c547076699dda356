"""The score a worker sees moves only in steps that cannot be tied to one task: a worker who
reads it after every answer cannot tell which of their tasks were gold."""

from __future__ import annotations

import random

import pytest
from django.test import override_settings

from qa.models import WorkerScore
from tests.factories import WorkerFactory
from tests.qa.helpers import LABELS, answer, classification_project

pytestmark = [pytest.mark.django_db]

EVERY = 10


def work_and_watch(api_as, project, truth, worker, answers: int, seed: int):
    """The worker answers ``answers`` tasks (right on real tasks, right or wrong at random on
    gold), reading their score on both pages after each. Returns per answer: whether the task
    was gold, and the scores seen after it."""
    rng = random.Random(seed)
    client = api_as(worker)
    seen = []
    for _ in range(answers):

        def label_for(assignment):
            right = truth[assignment.task.image_id]
            if assignment.task.is_gold and rng.random() < 0.5:
                return [{"label": next(x for x in LABELS if x != right)}]
            return [{"label": right}]

        assignment = answer(project, worker, label_for, rand=rng.random)
        assert assignment is not None
        mine = client.get(f"/api/v1/projects/{project.pk}/me/").json()
        overall = client.get("/api/v1/me/").json()
        seen.append((assignment.task.is_gold, mine["score"], overall["score"]))
    return seen


@override_settings(SCORE_SHOWN_EVERY=EVERY)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gold_cannot_be_told_from_the_score_a_worker_sees(api_as, manager, seed) -> None:
    project, truth = classification_project(
        manager, gold=30, images=60, gold_rate=0.3, min_worker_score=0.0
    )
    worker = WorkerFactory.create()
    seen = work_and_watch(api_as, project, truth, worker, answers=45, seed=seed)
    gold_at = [i for i, (gold, _, _) in enumerate(seen, start=1) if gold]
    assert len(gold_at) >= 5  # gold was mixed in throughout
    # The live score moved after gold answers (the evidence the worker must not see).
    assert WorkerScore.objects.get(project=project, worker=worker).gold_seen == len(gold_at)
    for column in (1, 2):
        scores = [row[column] for row in seen]
        moved_after = [i for i in range(2, len(scores) + 1) if scores[i - 1] != scores[i - 2]]
        # It moves only when the answer count reaches a multiple of EVERY, whatever was gold.
        assert set(moved_after) <= {EVERY * k for k in range(1, 10)}, (moved_after, gold_at)
        # Before the first step there is nothing to see.
        assert scores[: EVERY - 1] == [None] * (EVERY - 1)
        assert scores[EVERY - 1] is not None


@override_settings(SCORE_SHOWN_EVERY=EVERY)
def test_the_shown_score_is_the_score_at_the_last_step(api_as, manager) -> None:
    project, truth = classification_project(manager, gold=20, images=20, gold_rate=0.5)
    worker = WorkerFactory.create()
    seen = work_and_watch(api_as, project, truth, worker, answers=EVERY, seed=7)
    row = WorkerScore.objects.get(project=project, worker=worker)
    assert seen[-1][1] == round(row.score, 2)
    assert (row.shown_answers, row.shown_score) == (EVERY, row.score)
