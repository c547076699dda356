"""The manager's comparison of answers with and without pre-labels, on a constructed crowd
whose every figure is known: arms, means, medians, Welch's interval, per worker."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from scipy import stats

from qa import prelabel_stats
from qa.models import GoldResult
from tasks.models import Assignment, Task
from tests.factories import WorkerFactory, project_with_tasks

pytestmark = [pytest.mark.both_databases]


def record(held_out: bool, version: str | None = "v1", kept: int = 1, deleted: int = 0):
    counts = {"kept": kept, "moved": 0, "relabelled": 0, "deleted": deleted, "added": 0}
    return {"model_version": version, "held_out": held_out, "offered": 0 if held_out else 2,
            "objects": [], "counts": counts if not held_out else {**counts, "kept": 0}}  # fmt: skip


def answering(manager, tasks: int) -> tuple[Any, Callable[..., None]]:
    """A project with pre-labels on, and a way to store one answer after another to its tasks:
    with or without pre-labels, the time it took, its gold score if any."""
    project = project_with_tasks(manager, tasks=tasks, overlap=3)
    project.prelabels = True
    project.save(update_fields=["prelabels"])
    rows = iter(Task.objects.filter(project=project).select_related("image").order_by("pk"))
    now = timezone.now()

    def answer(worker, *, held_out, seconds, gold=None, version="v1", kept=1):
        task = next(rows)
        a = Assignment.objects.create(
            task=task, project=project, worker=worker, status="submitted", leased_at=now,
            expires_at=now + timedelta(minutes=10), submitted_at=now, answer=[],
            time_spent_ms=int(seconds * 1000), prelabels=record(held_out, version, kept=kept),
        )  # fmt: skip
        if gold is not None:
            GoldResult.objects.create(
                assignment=a, project=project, worker=worker, image=task.image, score=gold,
                passed=gold >= 0.7,
            )  # fmt: skip

    return project, answer


@pytest.mark.django_db
def test_the_comparison_on_a_constructed_crowd(manager, api_as) -> None:
    project, answer = answering(manager, tasks=40)
    ann, bob = WorkerFactory.create(username="ann"), WorkerFactory.create(username="bob")

    ann_with = [(0.9, 10), (0.8, 12), (0.85, 8)]
    ann_without = [(0.6, 20), (0.7, 22)]
    bob_with = [(0.5, 5), (0.55, 6)]
    bob_without = [(0.65, 15), (0.75, 14), (0.7, 18)]
    for worker, rows, held in (
        (ann, ann_with, False), (ann, ann_without, True),
        (bob, bob_with, False), (bob, bob_without, True),
    ):  # fmt: skip
        for score, seconds in rows:
            answer(worker, held_out=held, seconds=seconds, gold=score)
    answer(ann, held_out=False, seconds=9)  # not gold: counts in time only
    answer(bob, held_out=False, seconds=30, version=None)  # no prediction: left out
    Assignment.objects.filter(prelabels__isnull=True).delete()

    response = api_as(manager).get(f"/api/v1/projects/{project.pk}/prelabels/effect/")
    assert response.status_code == 200, response.content
    body = response.json()
    overall = body["overall"]
    gold_with = [s for s, _ in ann_with + bob_with]
    gold_without = [s for s, _ in ann_without + bob_without]
    secs_with = [t for _, t in ann_with + bob_with] + [9]
    secs_without = [t for _, t in ann_without + bob_without]
    assert overall["with_prelabels"] == {
        "answers": 6, "gold_answers": 5,
        "gold_score_mean": round(statistics.mean(gold_with), 4),
        "timed_answers": 6, "median_seconds": statistics.median(secs_with),
    }  # fmt: skip
    assert overall["without_prelabels"]["answers"] == 5
    assert overall["without_prelabels"]["median_seconds"] == statistics.median(secs_without)
    diff = overall["gold_score_difference"]
    welch = stats.ttest_ind(gold_with, gold_without, equal_var=False)
    assert diff["estimate"] == round(statistics.mean(gold_with) - statistics.mean(gold_without), 4)
    assert diff["p_value"] == pytest.approx(welch.pvalue, abs=1e-4)
    ci = welch.confidence_interval(0.95)
    assert diff["ci95"] == [pytest.approx(ci.low, abs=1e-4), pytest.approx(ci.high, abs=1e-4)]
    time_diff = overall["median_seconds_difference"]
    assert time_diff["estimate"] == statistics.median(secs_with) - statistics.median(secs_without)
    assert time_diff["ci95"][0] <= time_diff["estimate"] <= time_diff["ci95"][1]
    assert body["answers_without_prediction"] == 1
    assert body["outcomes"]["kept"] == 6
    assert body["outcomes"]["kept_share"] == 1.0
    workers = {w["username"]: w for w in body["workers"]}
    assert workers["ann"]["with_prelabels"]["gold_score_mean"] == round(
        statistics.mean([s for s, _ in ann_with]), 4
    )
    assert workers["bob"]["gold_score_difference"]["estimate"] == round(
        statistics.mean([0.5, 0.55]) - statistics.mean([0.65, 0.75, 0.7]), 4
    )
    # Ann is better with the model, Bob worse: the figures say which way each leans.
    assert workers["ann"]["gold_score_difference"]["estimate"] > 0
    assert workers["bob"]["gold_score_difference"]["estimate"] < 0


def test_small_arms_give_no_interval() -> None:
    out = prelabel_stats.compare([0.9], [0.5, 0.6], [1.0], [], with_answers=1, without_answers=2)
    assert out["gold_score_difference"] is None
    assert out["median_seconds_difference"] is None
    assert out["without_prelabels"]["median_seconds"] is None


@pytest.mark.django_db
def test_a_suspended_workers_answers_are_left_out_of_the_overall_comparison(
    manager, api_as
) -> None:
    from qa.models import WorkerScore

    project, answer = answering(manager, tasks=12)
    ann, spam = WorkerFactory.create(username="ann"), WorkerFactory.create(username="spam")
    for worker, held, score in (
        (ann, False, 0.6), (ann, False, 0.7), (ann, True, 0.9), (ann, True, 0.8),
        (spam, False, 0.0), (spam, True, 1.0), (spam, True, 0.0),
    ):  # fmt: skip
        answer(worker, held_out=held, seconds=1, gold=score, kept=3)
    url = f"/api/v1/projects/{project.pk}/prelabels/effect/"
    before = api_as(manager).get(url).json()
    assert before["overall"]["with_prelabels"]["gold_answers"] == 3  # nobody suspended yet
    assert before["answers_of_suspended_workers"] == 0
    WorkerScore.objects.update_or_create(
        project=project, worker=spam, defaults={"status": "suspended"}
    )

    body = api_as(manager).get(url).json()
    overall = body["overall"]
    assert overall["with_prelabels"]["gold_answers"] == 2  # ann's alone
    assert overall["without_prelabels"]["gold_answers"] == 2
    assert overall["gold_score_difference"]["estimate"] == round(0.65 - 0.85, 4)
    assert body["answers_of_suspended_workers"] == 3
    assert body["outcomes"]["kept"] == 6  # ann's two answers shown pre-labels, 3 kept each
    workers = {w["username"]: w for w in body["workers"]}
    assert (workers["spam"]["suspended"], workers["ann"]["suspended"]) == (True, False)
    assert workers["spam"]["with_prelabels"]["gold_answers"] == 1  # still on their own row
