"""The project's worker model (``qa.worker_model``): learnt by a consensus run over all of a
project's answers, stored per worker, and read by the score and the vote weight, so a worker
the model finds unreliable counts less everywhere without any gold.

The bbox crowd is the consensus batch test's (``qa.sim``): three careful workers, three
sloppy ones and two spammers, each task answered by four of them, no gold at all.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from qa import jobs, merge, worker_model
from qa.consensus.box_em import GoldRates
from qa.models import ConsensusResult, ConsensusRun, GoldResult, WorkerModelFit, WorkerScore
from qa.reliability import Evidence, reliability, should_suspend, vote_weight
from qa.sim.crowd import TaskView, crowd_make
from qa.sim.scenes import KEYPOINTS, scene_make
from tasks.ingest import tasks_create_for_image
from tasks.models import Assignment, AssignmentStatus, Image, ImageStatus, Project, Task
from tests.factories import WorkerFactory, project_create
from tests.qa.test_consensus_batch import CROWD, seed


def run(project: Project) -> ConsensusRun:
    done = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
    assert done is not None
    assert done.status == "done", done.error
    return done


def by_role(project: Project) -> dict[str, list[WorkerScore]]:
    """The crowd's rows by simulated role, in the order ``seed`` created the workers."""
    rows = list(WorkerScore.objects.filter(project=project).order_by("worker_id"))
    assert len(rows) == 8
    return {"careful": rows[:3], "sloppy": rows[3:6], "spammer": rows[6:]}


@pytest.mark.django_db
def test_a_run_learns_who_is_unreliable_and_they_count_less_without_gold(manager: Any) -> None:
    project = project_create(manager, kind="bbox", labels=["car", "person", "bicycle", "dog", "sign"],
                             gold_rate=0.0, min_overlap=4, max_overlap=4)  # fmt: skip
    seed(project, images=120)
    WorkerScore.objects.bulk_create(
        WorkerScore(project=project, worker_id=w, status="active")
        for w in sorted(set(Assignment.objects.filter(project=project).values_list("worker_id", flat=True)))
    )  # fmt: skip
    before = {row.worker_id: row.score for row in WorkerScore.objects.filter(project=project)}
    assert len(set(before.values())) == 1  # no evidence yet: all alike

    done = run(project)
    assert done.method == "box_em"
    assert done.tally["worker_model"] == {"method": "box_em", "workers": 8}
    roles = by_role(project)
    fit = WorkerModelFit.objects.get(project=project)
    assert fit.method == "box_em"
    assert fit.workers == 8
    assert fit.answers == Assignment.objects.filter(project=project).count()
    for row in roles["careful"] + roles["spammer"]:
        assert row.model_seen > 20
        assert {"recall", "false_marks", "noise"} <= set(row.model_params)
    careful_recall = min(r.model_params["recall"] for r in roles["careful"])
    assert max(r.model_params["recall"] for r in roles["spammer"]) < careful_recall
    # The score and the vote weight both read the model: every spammer below every careful
    # worker, and the sloppy in between on average.
    assert max(r.score for r in roles["spammer"]) < min(r.score for r in roles["careful"])
    weights = merge.vote_weights(project, [r.worker_id for rows in roles.values() for r in rows])
    spammer = max(weights[r.worker_id] for r in roles["spammer"])
    careful = min(weights[r.worker_id] for r in roles["careful"])
    assert spammer < careful - 0.2
    mean = {role: sum(r.score for r in rows) / 3 for role, rows in roles.items()}
    assert mean["spammer"] < mean["sloppy"] < mean["careful"]

    # A task decided between runs applies the stored model: the boxes the run kept, placed
    # where the run placed them (images of one tile, whose result is that task's merge).
    results = {r.image_id: r for r in ConsensusResult.objects.filter(run=done)}
    compared = 0
    for task in Task.objects.filter(project=project).select_related("image"):
        if Task.objects.filter(image_id=task.image_id).count() > 1:
            continue
        answers = list(Assignment.objects.filter(task=task).order_by("pk"))
        decided = merge.task_consensus(project, task, answers).annotations
        stored = results[task.image_id].annotations
        # Sums over one task or over a batch of them differ in the last bits only.
        assert [(o["label"], [round(v, 6) for v in o["bbox"]]) for o in decided] == [
            (o["label"], [round(v, 6) for v in o["bbox"]]) for o in stored
        ]
        compared += 1
    assert compared > 20


@pytest.mark.django_db
def test_managers_see_what_the_model_says_of_each_worker(manager: Any, api_as: Any) -> None:
    project = project_create(manager, kind="bbox", labels=["car", "person", "bicycle", "dog", "sign"],
                             gold_rate=0.0, min_overlap=4, max_overlap=4)  # fmt: skip
    seed(project, images=40)
    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/").json()
    assert all(w["model"] is None for w in listed)  # not fitted yet
    run(project)
    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/").json()
    assert len(listed) == 8
    for worker in listed:
        model = worker["model"]
        assert model["method"] == "box_em"
        assert model["answers"] > 0
        assert 0 < model["accuracy"] < 1
        assert {"recall", "false_marks", "noise", "label_accuracy", "shift"} <= set(model)
        assert len(model["confusion"]) == len(model["labels"])
    one = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/{listed[0]['worker']}/")
    assert one.json()["model"] == listed[0]["model"]


@pytest.mark.django_db
def test_a_classification_run_stores_each_workers_confusion(manager: Any) -> None:
    project = project_create(manager, kind="classification", labels=["cat", "dog", "bird"],
                             gold_rate=0.0, min_overlap=5, max_overlap=5)  # fmt: skip
    rng = random.Random(3)
    workers = [WorkerFactory.create() for _ in range(6)]
    now = timezone.now()
    rows = []
    for i in range(80):
        image = Image.objects.create(
            project=project, name=f"{i}.png", file=f"x/{i}.png", sha256=f"{i:064x}",
            format="PNG", width=10, height=10, size_bytes=1, status=ImageStatus.READY,
        )  # fmt: skip
        (task,) = tasks_create_for_image(project=project, image=image)
        truth = rng.choice(["cat", "dog", "bird"])
        for worker in workers[:5] if i % 2 else workers[1:]:
            # Worker 0 answers "cat" whatever the image; the others are right 90% of the time.
            label = "cat" if worker == workers[0] else (
                truth if rng.random() < 0.9 else rng.choice(["cat", "dog", "bird"])
            )  # fmt: skip
            rows.append(
                Assignment(task=task, project=project, worker=worker, status=AssignmentStatus.SUBMITTED,
                           leased_at=now, submitted_at=now, expires_at=now, answer=[{"label": label}])
            )  # fmt: skip
    Assignment.objects.bulk_create(rows)
    run(project)
    scores = {row.worker_id: row for row in WorkerScore.objects.filter(project=project)}
    constant = scores[workers[0].pk]
    assert len(constant.model_params["confusion"]) == 3
    assert constant.model_params["accuracy"] < 0.6
    others = [scores[w.pk] for w in workers[1:]]
    assert min(o.model_params["accuracy"] for o in others) > 0.8
    assert constant.score < min(o.score for o in others)
    assert WorkerModelFit.objects.get(project=project).method == "dawid_skene"


def test_the_model_stands_in_for_agreement_and_never_suspends() -> None:
    agreed = Evidence(gold_seen=5, gold_score_sum=5.0, agreement_seen=100, agreement_sum=95.0)
    doubted = Evidence(5, 5.0, 100, 95.0, model_seen=100, model_sum=20.0)
    assert reliability(doubted) < reliability(agreed) - 0.2
    assert vote_weight(doubted) < vote_weight(agreed) - 0.2
    # Suspension judges gold and agreement since the last reinstatement: not the model,
    # refitted over old answers too.
    assert doubted.since(Evidence()).model_seen == 0
    assert not should_suspend(doubted.since(Evidence()), 0.7)


@pytest.mark.django_db
def test_gold_results_give_each_workers_box_prior(manager: Any) -> None:
    project = project_create(manager, kind="bbox")
    worker = WorkerFactory.create()
    for i, (matched, wrong, missed, extra) in enumerate([(3, 1, 0, 1), (2, 0, 2, 0)]):
        image = Image.objects.create(
            project=project, name=f"{i}.png", file=f"x/{i}.png", sha256=f"{i:064x}",
            format="PNG", width=10, height=10, size_bytes=1, status=ImageStatus.READY,
        )  # fmt: skip
        (task,) = tasks_create_for_image(project=project, image=image)
        Task.objects.filter(pk=task.pk).update(is_gold=True)
        now = timezone.now()
        assignment = Assignment.objects.create(
            task=task, project=project, worker=worker, status=AssignmentStatus.SUBMITTED,
            leased_at=now, submitted_at=now, expires_at=now, answer=[],
        )  # fmt: skip
        GoldResult.objects.create(
            assignment=assignment, project=project, worker=worker, image=image, score=0.5,
            passed=False, details={"matched": matched, "wrong_label": wrong, "missed": missed,
                                   "extra": extra},
        )  # fmt: skip
    recall, false_marks, strength, scores = worker_model.gold_priors(project)[worker.pk]
    assert scores is None  # a person's boxes carry no score
    assert recall == pytest.approx(6 / 8)
    assert false_marks == pytest.approx(0.5)
    assert strength == pytest.approx(2 * worker_model.GOLD_PRIOR_WEIGHT)


@pytest.fixture
def refits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(jobs.worker_model_refit, "send", sent.append)
    return sent


def answers_add(project: Project, n: int, start: int) -> None:
    worker = WorkerFactory.create()
    now = timezone.now()
    for i in range(start, start + n):
        image = Image.objects.create(
            project=project, name=f"{i}.png", file=f"x/{i}.png", sha256=f"{i:064x}",
            format="PNG", width=10, height=10, size_bytes=1, status=ImageStatus.READY,
        )  # fmt: skip
        (task,) = tasks_create_for_image(project=project, image=image)
        Task.objects.filter(pk=task.pk).update(answers=1)
        Assignment.objects.create(
            task=task, project=project, worker=worker, status=AssignmentStatus.SUBMITTED,
            leased_at=now, submitted_at=now, expires_at=now, answer=[],
        )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_sweep_asks_for_a_refit_once_per_growth_step(manager: Any, refits: list[int]) -> None:
    project = project_create(manager, kind="bbox")

    def sweep() -> int:
        cache.delete(worker_model.REFIT_CHECKED)
        return worker_model.refits_request()

    answers_add(project, worker_model.REFIT_MIN_ANSWERS - 1, 0)
    assert sweep() == 0  # too few to learn from
    answers_add(project, 1, 1000)
    assert sweep() == 1
    assert refits == [project.pk]
    assert sweep() == 0  # asked for already
    # The fit ran on 50; a quarter more is 62.5, but never fewer than 50 more.
    WorkerModelFit.objects.filter(project=project).update(answers=50)
    answers_add(project, 49, 2000)
    assert sweep() == 0
    answers_add(project, 1, 3000)
    assert sweep() == 1
    assert refits == [project.pk, project.pk]
    # Within the check interval the sweep does not even count.
    answers_add(project, 200, 4000)
    assert worker_model.refits_request() == 0


def seed_shapes(project: Project, kind: str, images: int) -> list[int]:
    """``images`` one-tile images answered by 4 of the crowd each; the workers' ids by
    simulated role order (careful, sloppy, spammer)."""
    rng = random.Random(11)
    sims = crowd_make(CROWD, seed=11)
    users = [WorkerFactory.create() for _ in sims]
    now = timezone.now()
    rows = []
    for i in range(images):
        image = Image.objects.create(
            project=project, name=f"{i}.png", file=f"x/{i}.png", sha256=f"{i:064x}",
            format="PNG", width=480, height=360, size_bytes=1, status=ImageStatus.READY,
        )  # fmt: skip
        truth = scene_make(i, kind=kind, width=480, height=360).truth(kind)
        (task,) = tasks_create_for_image(project=project, image=image)
        view = TaskView(kind, KEYPOINTS, 480, 360, task.region)
        for k in rng.sample(range(len(sims)), 4):
            rows.append(
                Assignment(task=task, project=project, worker=users[k],
                           status=AssignmentStatus.SUBMITTED, leased_at=now, submitted_at=now,
                           expires_at=now, answer=sims[k].answer(view, truth))
            )  # fmt: skip
    Assignment.objects.bulk_create(rows)
    return [u.pk for u in users]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["polygon", "keypoints"])
def test_polygon_and_keypoint_runs_learn_their_models(
    manager: Any, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels: list[Any] = (
        [{"name": name, "keypoints": names} for name, names in KEYPOINTS.items()]
        if kind == "keypoints"
        else list(KEYPOINTS)
    )
    project = project_create(manager, kind=kind, labels=labels, gold_rate=0.0, min_overlap=4,
                             max_overlap=4, tile_size=1024)  # fmt: skip
    workers = seed_shapes(project, kind, 60)
    method = "polygon_em" if kind == "polygon" else "keypoint_em"
    done = run(project)
    assert done.method == method
    assert WorkerModelFit.objects.get(project=project).method == method
    rows = {r.worker_id: r for r in WorkerScore.objects.filter(project=project)}
    careful, spammers = [rows[w] for w in workers[:3]], [rows[w] for w in workers[6:]]
    assert all(r.model_seen > 10 for r in careful + spammers)
    assert max(r.model_params["recall"] for r in spammers) < min(
        r.model_params["recall"] for r in careful
    )
    assert max(r.score for r in spammers) < min(r.score for r in careful)
    results = {r.image_id: r.annotations for r in ConsensusResult.objects.filter(run=done)}
    assert len(results) == 60
    # A task decided between runs rebuilds the stored model and merges as the run did.
    field = "points" if kind == "polygon" else "keypoints"

    def shape(objects: list[dict[str, Any]]) -> list[Any]:
        return [(o["label"], [[round(v, 4) for v in p] for p in o[field]]) for o in objects]

    tasks = Task.objects.filter(project=project).select_related("image")[:20]
    for task in tasks:
        answers = list(Assignment.objects.filter(task=task).order_by("pk"))
        decided = merge.task_consensus(project, task, answers).annotations
        assert shape(decided) == shape(results[task.image_id])
    assert sum(len(results[t.image_id]) for t in tasks) > 20
    # Gold sets the prior: a careful worker whom gold found to miss nine objects in ten,
    # worth far more answers than they gave, is learnt so.
    monkeypatch.setattr(worker_model, "gold_priors", lambda project: {
        workers[0]: GoldRates(0.1, 3.0, 5000.0)})  # fmt: skip
    fitted = worker_model.refit(project_id=project.pk)
    assert fitted is not None
    doubted = WorkerScore.objects.get(project=project, worker_id=workers[0])
    assert doubted.model_params["recall"] < 0.3 < rows[workers[0]].model_params["recall"]
