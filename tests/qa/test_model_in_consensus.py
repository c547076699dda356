"""The model as one more member of the crowd (``qa.model_scores``, ``qa.merge``): it votes
with the weight gold earned it, so a reliable model lets dynamic overlap close a task with
fewer human answers and an unreliable one changes nothing; it is never a worker (no score
row, no pay, not in the workers' list) and the dataset card says what rests on it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from rest_framework.test import APIClient

from payouts.models import LedgerEntry
from payouts.services import approvals_due, assignment_approve
from qa import merge, model_scores, worker_model
from qa.exports.build import dataset_card
from qa.exports.formats import Counts
from qa.models import ConsensusRun, ModelScore, WorkerScore
from tasks.models import Assignment, AssignmentStatus, Project, Task, TaskState
from tasks.predictions import predictions_import
from tests.factories import WorkerFactory, token_for
from tests.qa.helpers import LABELS, answer, classification_project, no_gold

pytestmark = pytest.mark.django_db


def _predict(project: Project, version: str, labels: dict[int, str], score: float = 0.95) -> None:
    predictions_import(
        project=project,
        data={
            "model_version": version,
            "predictions": [
                {"image": image, "annotations": [{"label": label, "score": score}]}
                for image, label in labels.items()
            ],
        },
    )


def _boxes_with_gold_and_predictions(
    project: Project, manager: Any, *, images: int, gold: list[dict], predicted: list[dict]
) -> list[Any]:
    """``images`` ready images; the first six with ``gold`` as their gold answer; model
    det-1's ``predicted`` boxes, each scored 0.9, on every one."""
    from qa.services import gold_set
    from tests.factories import image_ready

    made = [image_ready(project, seed=i) for i in range(images)]
    for image in made[:6]:
        gold_set(project=project, image_id=image.pk, annotations=gold, user=manager)
    predictions_import(
        project=project,
        data={
            "model_version": "det-1",
            "predictions": [
                {"image": image.pk, "annotations": [{**b, "score": 0.9} for b in predicted]}
                for image in made
            ],
        },
    )
    return made


def _setup(
    manager: Any, *, model_right_on_gold: bool, threshold: float = 0.9
) -> tuple[Project, dict[int, str]]:
    """A classification project of 10 gold and 10 real images, tasks starting at one answer,
    growing to 3 while the weighted vote's posterior is below 0.9. A model predicts every
    image: the truth on the real ones, and the truth or a wrong label on the gold ones."""
    project, truth = classification_project(
        manager, images=10, gold=10, min_overlap=1, max_overlap=3, agreement_threshold=threshold,
        gold_rate=0.0,
    )  # fmt: skip
    gold_ids = sorted(truth)[:10]

    def wrong(label: str) -> str:
        return LABELS[(LABELS.index(label) + 1) % len(LABELS)]

    _predict(
        project,
        "m1",
        {
            i: (truth[i] if model_right_on_gold or i not in gold_ids else wrong(truth[i]))
            for i in truth
        },
    )
    return project, truth


def _work(project: Project, truth: dict[int, str], workers: int) -> None:
    for _ in range(workers):
        worker = WorkerFactory.create()
        while answer(project, worker, lambda a: [{"label": truth[a.task.image_id]}], rand=no_gold):
            pass


def test_a_reliable_model_closes_tasks_with_fewer_human_answers(manager: Any) -> None:
    project, truth = _setup(manager, model_right_on_gold=True)
    row = model_scores.model_score(project, "m1")
    assert row.gold_seen == 10
    assert model_scores.votes(project, row)[0]
    _work(project, truth, workers=1)
    real = Task.objects.filter(project=project, is_gold=False)
    # One person and the model agree: posterior 0.99 >= 0.9, done with one human answer.
    assert set(real.values_list("state", flat=True)) == {TaskState.DONE}
    assert set(real.values_list("answers", flat=True)) == {1}
    assert min(c or 0.0 for c in real.values_list("confidence", flat=True)) > 0.98


def test_without_the_model_the_same_answers_ask_for_more(manager: Any) -> None:
    project, truth = _setup(manager, model_right_on_gold=True)
    project.predictions.all().delete()
    _work(project, truth, workers=1)
    real = Task.objects.filter(project=project, is_gold=False)
    # A newcomer alone: posterior 0.8 < 0.9; the task asks for a second answer.
    assert set(real.values_list("state", flat=True)) == {TaskState.OPEN}
    assert set(real.values_list("required_overlap", flat=True)) == {2}


def test_an_unreliable_model_does_not_shift_the_result(manager: Any) -> None:
    project, truth = _setup(manager, model_right_on_gold=False)
    allowed, reason = model_scores.votes(project, model_scores.model_score(project, "m1"))
    assert not allowed, reason
    # It predicts the real images wrongly too; it must change nothing.
    real_ids = sorted(truth)[10:]
    _predict(project, "m1", {i: LABELS[(LABELS.index(truth[i]) + 1) % 4] for i in real_ids})
    _work(project, truth, workers=1)
    real = Task.objects.filter(project=project, is_gold=False)
    assert set(real.values_list("required_overlap", flat=True)) == {2}
    task = real.first()
    assert task is not None
    found = merge.task_consensus(project, task, list(Assignment.objects.filter(task=task)))
    assert found.model_agreement is None
    assert found.annotations == [{"label": truth[task.image_id]}]


def test_a_model_that_disagrees_with_a_lone_worker_holds_the_task_open(manager: Any) -> None:
    project, truth = _setup(manager, model_right_on_gold=True)
    # The worker is wrong on every real image; the reliable model is right.
    worker = WorkerFactory.create()
    while answer(project, worker, lambda a: [{"label": "fish" if truth[a.task.image_id] != "fish"
                                              else "cat"}], rand=no_gold):  # fmt: skip
        pass
    real = Task.objects.filter(project=project, is_gold=False)
    assert set(real.values_list("state", flat=True)) == {TaskState.OPEN}
    # The worker's agreement evidence records their disagreement; the model has no row.
    assert WorkerScore.objects.get(project=project, worker=worker).agreement_seen == 0


def test_the_model_is_never_paid_nor_listed_nor_scored_as_a_worker(manager: Any) -> None:
    # Two people and the model are needed to pass 0.999: both workers answer every task.
    project, truth = _setup(manager, model_right_on_gold=True, threshold=0.999)
    project.reward = 5
    project.save()
    _work(project, truth, workers=2)
    run = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert run is not None
    assert run.status == "done", run.error
    for assignment in Assignment.objects.filter(project=project, status=AssignmentStatus.SUBMITTED):
        assignment_approve(assignment_id=assignment.pk, by=manager)
    approvals_due()
    paid = Assignment.objects.filter(project=project, status=AssignmentStatus.APPROVED)
    entries = LedgerEntry.objects.filter(project=project)
    assert entries.count() == paid.count() > 0
    assert set(entries.values_list("worker_id", flat=True)) <= set(
        paid.values_list("worker_id", flat=True)
    )
    assert not WorkerScore.objects.filter(project=project, worker_id__lte=0).exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(manager)}")
    listed = client.get(f"/api/v1/projects/{project.pk}/workers/").json()
    assert all(row["worker"] > 0 for row in listed)
    assert len(listed) == 2
    # The run counted the model: its vote is in the contributors, and the tally says so.
    assert run.tally["workers"] == 2
    assert run.tally["model"]["version"] == "m1"
    assert run.tally["model"]["agreed"] == 10
    results = list(run.results.filter(method__in=["weighted_vote", "dawid_skene", "majority_vote"]))
    assert results
    assert all(r.contributors["model"]["agreed"] == 1 for r in results)
    assert all(r.votes == 2 for r in results)


def test_the_dataset_card_says_what_rests_on_the_model(manager: Any) -> None:
    project, truth = _setup(manager, model_right_on_gold=True)
    _work(project, truth, workers=1)
    run = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert run is not None
    assert run.status == "done"
    # One worker a task and the model: every one of the 10 labels rests on the model.
    assert run.tally["model"]["rests_on_model"] == 10
    from qa.models import DatasetExport

    export = DatasetExport.objects.create(project=project, version=1, format="coco")
    card = dataset_card(export, run, Counts())
    assert "Model `m1` voted in consensus" in card
    assert "of 10 labels it agreed with 10, and 10 rest on it" in card


def test_a_bbox_model_joins_the_worker_model_as_a_member(manager: Any) -> None:
    from tests.factories import project_create

    project = project_create(manager, gold_rate=0.0, min_overlap=2, max_overlap=2, tile_size=0)
    boxes = [
        {"label": "car", "bbox": [10, 10, 60, 40]},
        {"label": "tree", "bbox": [150, 60, 50, 120]},
    ]
    _boxes_with_gold_and_predictions(project, manager, images=16, gold=boxes, predicted=boxes[:1])
    from tasks.services import project_transition

    project = project_transition(project=project, action="start")
    for _ in range(2):
        worker = WorkerFactory.create()
        while answer(project, worker, lambda a: boxes, rand=no_gold):
            pass
    run = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert run is not None
    assert run.status == "done", run.error
    row = ModelScore.objects.get(project=project, model_version="det-1")
    # The fit learnt the model like a worker: it finds one object of two.
    assert row.model_seen == 10
    assert row.model_params["recall"] == pytest.approx(0.5, abs=0.1)
    assert not WorkerScore.objects.filter(project=project, worker_id__lte=0).exists()
    assert run.tally["model"]["agreed"] == 10
    assert run.tally["model"]["rests_on_model"] == 0  # two people marked every car
    stored = worker_model.stored_model(project, [model_scores.MODEL_VOTER])
    assert stored is not None
    # The periodic refit counts the model as the run does.
    ModelScore.objects.filter(pk=row.pk).update(model_seen=0, model_sum=0)
    worker_model.refit(project_id=project.pk)
    row.refresh_from_db()
    assert row.model_seen == 10


def test_existence_confidence_is_a_weighted_yes_no_vote_per_object() -> None:
    from collections.abc import Hashable

    from qa.consensus.objects import existence_confidence

    weights: dict[Hashable, float] = {"a": 0.9, "b": 0.8}
    logit = {k: math.log(w / (1 - w)) for k, w in weights.items()}
    both = 1 / (1 + math.exp(-(logit["a"] + logit["b"])))
    car = [("a", "car"), ("b", "car")]
    # One label: the object is as certain as its existence.
    assert existence_confidence([car], weights, n_labels=1) == pytest.approx(both)
    only_a = 1 / (1 + math.exp(-(logit["a"] - logit["b"])))
    assert existence_confidence([car, [("a", "car")]], weights, n_labels=1) == pytest.approx(only_a)
    assert existence_confidence([], weights) == 1.0
    # Two voters agreeing on the label of 4 leave it near certain; disagreeing, not.
    agreed = existence_confidence([car], weights, n_labels=4)
    split = existence_confidence([[("a", "car"), ("b", "dog")]], weights, n_labels=4)
    assert agreed > 0.95
    assert split < 0.75
    # A voter no better than a coin counts for nothing either way.
    coin: dict[Hashable, float] = {"c": 0.3, "a": 0.9}
    assert existence_confidence([[("c", "car")]], coin, n_labels=1) == pytest.approx(
        1 / (1 + math.exp(-logit["a"]))
    )


def test_a_bbox_task_closes_on_one_worker_when_the_model_marks_the_same_objects(
    manager: Any,
) -> None:
    from tasks.services import project_transition
    from tests.factories import project_create

    project = project_create(
        manager, gold_rate=0.0, min_overlap=1, max_overlap=3, agreement_threshold=0.95,
        tile_size=0,
    )  # fmt: skip
    boxes = [{"label": "car", "bbox": [10, 10, 60, 40]}, {"label": "tree", "bbox": [150, 60, 50, 120]}]  # fmt: skip
    images = _boxes_with_gold_and_predictions(
        project, manager, images=8, gold=boxes, predicted=boxes
    )
    project = project_transition(project=project, action="start")
    agree, disagree = images[6], images[7]
    worker = WorkerFactory.create()
    while answer(
        project, worker, lambda a: boxes if a.task.image_id == agree.pk else boxes[:1],
        rand=no_gold,
    ):  # fmt: skip
        pass
    done = Task.objects.get(image=agree)
    assert done.state == TaskState.DONE
    assert done.answers == 1
    held = Task.objects.get(image=disagree)
    # The tree only the model marked is in doubt: one more answer is asked for.
    assert held.state == TaskState.OPEN
    assert held.required_overlap == 2


def test_a_bbox_lone_mark_counts_by_the_workers_gold_rates(manager: Any) -> None:
    """Before any fit, a lone worker's box the model missed settles the object when their gold
    says they draw no stray boxes, and not when it says they draw three a picture: the
    decision stands on each voter's recall and false marks, not on one weight."""
    from tasks.services import project_transition
    from tests.factories import project_create
    from tests.qa.helpers import gold_draw

    project = project_create(
        manager, gold_rate=0.5, min_overlap=1, max_overlap=3, agreement_threshold=0.85,
        tile_size=0, min_worker_score=0.0,
    )  # fmt: skip
    # (0.85: before a fit, a lone label is right as often as the crowd's, 90%.)
    car = {"label": "car", "bbox": [10, 10, 60, 40]}
    other_car = {"label": "car", "bbox": [200, 150, 60, 40]}
    tree = {"label": "tree", "bbox": [150, 20, 40, 100]}
    gold = [car, tree, other_car]
    # The model finds the cars and misses the tree, on gold as on the real images.
    _boxes_with_gold_and_predictions(
        project, manager, images=8, gold=gold, predicted=[car, other_car]
    )
    project = project_transition(project=project, action="start")
    strays = [{"label": "car", "bbox": [5 + 60 * k, 190, 30, 30]} for k in range(3)]
    keen, careless = WorkerFactory.create(), WorkerFactory.create()
    for worker, extra in ((keen, []), (careless, strays)):
        for _ in range(6):
            assert answer(project, worker, lambda a, extra=extra: gold + extra, rand=gold_draw)
    rates = worker_model.decision_box_model(
        project, [keen.pk, careless.pk, model_scores.MODEL_VOTER]
    ).workers()
    assert rates[keen.pk].false_marks < 0.05 < 2.0 < rates[careless.pk].false_marks
    assert rates[model_scores.MODEL_VOTER].recall == pytest.approx((12 * 2 / 3 + 4 * 0.8) / 16)
    assert worker_model.decision_box_model(project, [keen.pk]).objects == pytest.approx(3.0)
    # Each answers one real image: both cars and the tree the model missed.
    settled = answer(project, keen, lambda a: [car, other_car, tree], rand=no_gold)
    held = answer(project, careless, lambda a: [car, other_car, tree], rand=no_gold)
    assert settled is not None
    assert held is not None
    assert settled.task_id != held.task_id
    done = Task.objects.get(pk=settled.task_id)
    assert (done.state, done.answers) == (TaskState.DONE, 1)
    still = Task.objects.get(pk=held.task_id)
    assert (still.state, still.required_overlap) == (TaskState.OPEN, 2)


def test_a_bbox_model_s_scores_are_learnt_on_gold_and_kept_by_the_fit(manager: Any) -> None:
    """Box consensus reads the model's box scores (``qa.consensus.box_em``): gold counts its
    real and spurious boxes per score bin, the decision before a fit stands on those counts,
    the fit learns them as the model's own and the stored fit keeps them."""
    from qa.consensus.box_em import SCORE_BINS
    from qa.services import gold_set
    from tasks.services import project_transition
    from tests.factories import image_ready, project_create

    project = project_create(manager, gold_rate=0.0, min_overlap=2, max_overlap=2, tile_size=0)
    car = {"label": "car", "bbox": [10, 10, 60, 40]}
    tree = {"label": "tree", "bbox": [150, 60, 50, 120]}
    stray = {"label": "car", "bbox": [250, 180, 30, 30]}
    made = [image_ready(project, seed=i) for i in range(12)]
    for image in made[:6]:
        gold_set(project=project, image_id=image.pk, annotations=[car, tree], user=manager)
    # Sure of the car, unsure of a stray box; the tree under the cut (0.5).
    predicted = [{**car, "score": 0.95}, {**stray, "score": 0.55}, {**tree, "score": 0.3}]
    predictions_import(
        project=project,
        data={
            "model_version": "det-1",
            "predictions": [{"image": image.pk, "annotations": predicted} for image in made],
        },
    )
    row = model_scores.model_score(project, "det-1")
    bins = row.details["score_bins"]
    # Only the boxes that vote (at or above the cut) are counted.
    assert bins["real"] == [0.0] * 9 + [6.0]
    assert bins["spurious"] == [0.0] * 5 + [6.0] + [0.0] * 4
    # A row stored by the computation before score bins is computed again when read.
    older = {k: v for k, v in row.details.items() if k != "score_bins"}
    ModelScore.objects.filter(pk=row.pk).update(
        fingerprint=row.fingerprint.split(":", 1)[1], details=older
    )
    assert model_scores.model_score(project, "det-1").details["score_bins"] == bins
    voter = model_scores.MODEL_VOTER
    odds = worker_model.decision_box_model(project, [voter]).workers()[voter].score_odds
    assert len(odds) == SCORE_BINS
    assert odds[9] > 0 > odds[5]
    # The voter's answers keep the scores the merge reads.
    answers = model_scores.model_voter(project, [made[6].pk])
    assert answers is not None
    assert answers.answers[made[6].pk] == predicted[:2]
    project = project_transition(project=project, action="start")
    for _ in range(2):
        worker = WorkerFactory.create()
        while answer(project, worker, lambda a: [car, tree], rand=no_gold):
            pass
    run = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert run is not None
    assert run.status == "done", run.error
    stored = worker_model.stored_model(project, [voter])
    assert stored is not None
    learnt = stored.workers()[voter].score_odds
    assert len(learnt) == SCORE_BINS
    assert learnt[9] > 0 > learnt[5]
    # Both workers marked every car and neither the stray: the model's stray is dropped.
    result = run.results.get(image=made[6])
    assert sorted(item["label"] for item in result.annotations) == ["car", "tree"]
