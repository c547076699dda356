"""``task_order: uncertain_first``: routing offers the tasks whose image the current model is
least sure of first, and keeps every routing rule of DESIGN.md while doing so."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import prelabel_core, routing
from tasks.models import Assignment, AssignmentStatus, Image, Task
from tasks.services import project_transition, project_update, tasks_mark_gold
from tests.factories import WorkerFactory, project_with_tasks
from tests.tasks.routing_helpers import assert_counters_match_recount, assert_no_worker_twice

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


def box(score: float, x: float = 10) -> dict[str, Any]:
    return {"label": "car", "bbox": [x, 10, 50, 40], "score": score}


def predict(api, project, items_by_image: dict[int, list[dict]], version: str = "v1") -> None:
    body = {"model_version": version,
            "predictions": [{"image": i, "annotations": a} for i, a in items_by_image.items()]}  # fmt: skip
    response = api.post(f"/api/v1/projects/{project.pk}/predictions/", body, format="json")
    assert response.status_code == 201, response.content


def images_of(project) -> list[int]:
    return list(Image.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))


def walk(api, project, answers: int) -> list[dict]:
    """The leases a worker gets answering ``answers`` tasks through the API, in order."""
    leases = []
    for _ in range(answers):
        response = api.post(f"/api/v1/projects/{project.pk}/assignments/next/")
        if response.status_code == 204:
            break
        assert response.status_code == 201, response.content
        body = response.json()
        leases.append(body)
        done = api.post(
            f"/api/v1/assignments/{body['id']}/submit/", {"annotations": []}, format="json"
        )
        assert done.status_code == 200, done.content
    return leases


def test_confidence_per_kind() -> None:
    core = prelabel_core.confidence
    assert (
        core("classification", [{"label": "a", "score": 0.4}, {"label": "b", "score": 0.7}]) == 0.7
    )
    assert core("classification", [{"label": "a"}], 0.55) == 0.55
    assert core("classification", [{"label": "a"}]) is None
    # Shapes: the least sure object decision, a box at 0.5 being a coin flip.
    assert core("bbox", [box(0.95), box(0.55), box(0.1)]) == pytest.approx(0.55)
    assert core("bbox", [box(0.95), box(0.3)]) == pytest.approx(0.7)
    assert core("bbox", [box(0.95), {"label": "car", "bbox": [1, 1, 5, 5]}]) == pytest.approx(0.95)
    assert core("bbox", []) == 1.0  # nothing found, nothing doubted
    assert core("bbox", [], 0.4) == 0.4
    assert core("bbox", [{"label": "car", "bbox": [1, 1, 5, 5], "score": None}]) is None
    assert core("polygon", [{"label": "t", "points": [], "score": float("nan")}]) is None


def test_the_least_sure_image_is_offered_first_and_unpredicted_ones_last(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=8, overlap=1)
    images = images_of(project)
    sure = {
        images[0]: 0.9,
        images[1]: 0.6,
        images[2]: 0.99,
        images[3]: 0.75,
        images[4]: 0.52,
        images[5]: 0.8,
    }  # fmt: skip  images 6 and 7: no prediction
    boss = api_as(manager)
    predict(boss, project, {i: [box(s), box(0.97, x=100)] for i, s in sure.items()})
    patched = boss.patch(
        f"/api/v1/projects/{project.pk}/", {"task_order": "uncertain_first"}, format="json"
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["task_order"] == "uncertain_first"
    order = [lease["task"]["image"] for lease in walk(api_as(WorkerFactory.create()), project, 8)]
    assert order == [*sorted(sure, key=lambda i: sure[i]), images[6], images[7]]

    # The default order is the oldest first, predictions or not.
    other = project_with_tasks(manager, tasks=5, overlap=1)
    predict(boss, other, {i: [box(s)] for i, s in zip(images_of(other), [0.9, 0.5, 0.7, 0.6, 0.8], strict=True)})  # fmt: skip
    assert boss.get(f"/api/v1/projects/{other.pk}/").json()["task_order"] == "default"
    order = [lease["task"]["image"] for lease in walk(api_as(WorkerFactory.create()), other, 5)]
    assert order == images_of(other)


def test_closest_to_done_and_priority_come_before_the_model(manager, api_as) -> None:
    project = project_with_tasks(manager, tasks=4, overlap=2)
    a, b, c, d = images_of(project)
    boss = api_as(manager)
    predict(boss, project, {a: [box(0.95)], b: [box(0.55)], c: [box(0.8)], d: [box(0.7)]})
    project_update(project=project, data={"task_order": "uncertain_first"})
    Task.objects.filter(image_id=c).update(priority=5)
    # Priority first: c, then the least sure: b.
    first = walk(api_as(WorkerFactory.create()), project, 2)
    assert [lease["task"]["image"] for lease in first] == [c, b]
    # c and b now need one answer each: a new worker finishes them before starting d.
    second = walk(api_as(WorkerFactory.create()), project, 3)
    assert [lease["task"]["image"] for lease in second] == [c, b, d]


def test_a_new_model_version_reorders_and_images_it_did_not_predict_go_last(
    manager, api_as
) -> None:
    project = project_with_tasks(manager, tasks=4, overlap=1)
    a, b, c, d = images_of(project)
    boss = api_as(manager)
    project_update(project=project, data={"task_order": "uncertain_first"})
    predict(boss, project, {a: [box(0.9)], b: [box(0.6)], c: [box(0.7)], d: [box(0.8)]})
    got = dict(Task.objects.filter(project=project).values_list("image_id", "model_confidence"))
    assert got == pytest.approx({a: 0.9, b: 0.6, c: 0.7, d: 0.8})
    # Version 2 predicts three images: the fourth has no prediction of the current version.
    predict(boss, project, {a: [box(0.5)], c: [box(0.99)], d: [box(0.3)]}, version="v2")
    got = dict(Task.objects.filter(project=project).values_list("image_id", "model_confidence"))
    assert got[b] is None
    assert {k: got[k] for k in (a, c, d)} == pytest.approx({a: 0.5, c: 0.99, d: 0.7})
    order = [lease["task"]["image"] for lease in walk(api_as(WorkerFactory.create()), project, 4)]
    assert order == [a, d, c, b]
    # Predicting the same version again updates the images it names only.
    predict(boss, project, {b: [box(0.51)]}, version="v2")
    assert Task.objects.get(image_id=b).model_confidence == pytest.approx(0.51)
    assert Task.objects.get(image_id=a).model_confidence == pytest.approx(0.5)


def test_a_version_made_current_again_brings_back_its_earlier_predictions(manager, api_as) -> None:
    """Every image the version predicted takes its prediction's confidence again, those of
    earlier imports as well as the one just stored; images only the displaced version
    predicted have none."""
    project = project_with_tasks(manager, tasks=4, overlap=1)
    a, b, c, d = images_of(project)
    boss = api_as(manager)
    predict(boss, project, {a: [box(0.9)], b: [box(0.6)]}, version="v1")
    predict(boss, project, {c: [box(0.7)]}, version="v2")
    got = dict(Task.objects.filter(project=project).values_list("image_id", "model_confidence"))
    assert got == pytest.approx({a: None, b: None, c: 0.7, d: None})
    predict(boss, project, {d: [box(0.2), box(0.95, x=100)]}, version="v1")
    got = dict(Task.objects.filter(project=project).values_list("image_id", "model_confidence"))
    assert got == pytest.approx({a: 0.9, b: 0.6, c: None, d: 0.8})


def test_bad_task_orders_are_refused_and_change_nothing(manager, api_as) -> None:
    boss = api_as(manager)
    created = boss.post(
        "/api/v1/projects/",
        {"name": "P", "kind": "bbox", "labels": ["car"], "task_order": "random"},
        format="json",
    )
    assert created.status_code == 400, created.content
    assert "task_order" in created.json()["errors"]
    project = project_with_tasks(manager, tasks=2, overlap=1)
    for value in ("random", "", None, 3, ["uncertain_first"]):
        response = boss.patch(
            f"/api/v1/projects/{project.pk}/", {"task_order": value, "gold_rate": 0.3},
            format="json",
        )  # fmt: skip
        assert response.status_code == 400, (value, response.content)
        assert "task_order" in response.json()["errors"]
    project.refresh_from_db()
    assert (project.task_order, project.gold_rate) == ("default", 0.0)
    # A worker may not set it.
    worker = api_as(WorkerFactory.create())
    response = worker.patch(
        f"/api/v1/projects/{project.pk}/", {"task_order": "uncertain_first"}, format="json"
    )
    assert response.status_code in (403, 404)
    project.refresh_from_db()
    assert project.task_order == "default"


def test_the_claim_costs_the_same_queries_either_way(manager) -> None:
    counts = {}
    for order in ("default", "uncertain_first"):
        project = project_with_tasks(manager, tasks=6, overlap=2)
        Task.objects.filter(project=project).update(model_confidence=0.7)
        project_update(project=project, data={"task_order": order})
        project.refresh_from_db()
        worker = WorkerFactory.create()
        lease = routing.assignment_next(project=project, worker=worker, rand=lambda: 1.0)
        assert lease is not None
        routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=[])
        with CaptureQueriesContext(connection) as queries:
            assert routing.assignment_next(project=project, worker=worker, rand=lambda: 1.0)
        counts[order] = len(queries)
    assert counts["uncertain_first"] == counts["default"]


def test_every_routing_rule_holds_under_uncertain_first(manager) -> None:
    """Overlap, no worker twice, one lease per worker, expiry returning the slot, gold at its
    rate, and the budget checked in the claim, with many workers and random actions."""
    project = project_with_tasks(manager, tasks=30, overlap=3)
    rng = random.Random(3)
    Task.objects.filter(project=project).update(model_confidence=None)
    for task in Task.objects.filter(project=project)[:24]:
        Task.objects.filter(pk=task.pk).update(model_confidence=rng.random())
    for image in Image.objects.filter(project=project).order_by("pk")[:6]:
        tasks_mark_gold(image=image)
    project = project_update(
        project=project, data={"task_order": "uncertain_first", "gold_rate": 0.2,
                               "reward": "0.10", "budget": "9.00"},
    )  # fmt: skip
    workers = [WorkerFactory.create() for _ in range(12)]
    got = 0
    for step in range(400):
        worker = rng.choice(workers)
        lease = routing.assignment_next(project=project, worker=worker, rand=rng.random)
        if lease is None:
            continue
        got += 1
        action = rng.random()
        if action < 0.1:
            routing.assignment_skip(assignment_id=lease.pk, worker=worker)
        elif action < 0.2:
            # The lease runs out: its slot returns to the task.
            Assignment.objects.filter(pk=lease.pk).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
        else:
            routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=[])
        if step % 50 == 0:
            assert_counters_match_recount(project)
            assert_no_worker_twice(project)
    assert got > 80
    assert_counters_match_recount(project)
    assert_no_worker_twice(project)
    # The budget (90 answers' worth at 0.10) was never passed by the work handed out.
    paid = Assignment.objects.filter(
        project=project, status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.LEASED,
                                     AssignmentStatus.APPROVED]
    ).count()  # fmt: skip
    assert paid <= 90
    gold = Assignment.objects.filter(project=project, task__is_gold=True).count()
    assert gold > 0


def _gap_auc(leases_by_worker: list[list[tuple[bool, float]]]) -> float:
    """How well "this lease's confidence is far from its neighbours'" tells gold leases from
    real ones (the area under the ROC curve: 0.5 is no better than a coin)."""
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for seq in leases_by_worker:
        real = [i for i, (gold, _) in enumerate(seq) if not gold]
        for i, (gold, c) in enumerate(seq):
            before = [j for j in real if j < i]
            after = [j for j in real if j > i]
            if before and after:
                around = (seq[before[-1]][1] + seq[after[0]][1]) / 2
                gaps[gold].append(abs(c - around))
    pairs = [(g > r) + 0.5 * (g == r) for g in gaps[True] for r in gaps[False]]
    assert len(gaps[True]) >= 20, "the walk met too little gold"
    return sum(pairs) / len(pairs)


def _gold_walk(manager, api_as, monkeypatch, seed: int) -> list[list[tuple[bool, float]]]:
    """Workers walk an ``uncertain_first`` project with pre-labels on every task through the
    API, each reading the model's confidence off the pre-labels' scores as anyone could.
    Routing's draws (gold or not, and which gold) are seeded too, so a walk is the same in
    every run."""
    rng = random.Random(seed)
    monkeypatch.setattr(routing.random, "random", random.Random(f"routing:{seed}").random)
    project = project_with_tasks(manager, tasks=96, overlap=2)
    images = images_of(project)
    boss = api_as(manager)
    predict(boss, project, {i: [box(rng.uniform(0.5, 1.0))] for i in images})
    for image in Image.objects.filter(pk__in=rng.sample(images, 24)):
        tasks_mark_gold(image=image)
    project_update(project=project, data={"task_order": "uncertain_first", "gold_rate": 0.25,
                                          "prelabels": True, "prelabel_holdout": 0.0})  # fmt: skip
    project = project_transition(project=project, action="pause")
    project = project_transition(project=project, action="start")
    gold_tasks = set(
        Task.objects.filter(project=project, is_gold=True).values_list("pk", flat=True)
    )
    apis = [api_as(WorkerFactory.create()) for _ in range(8)]
    seqs: list[list[tuple[bool, float]]] = [[] for _ in apis]
    for _ in range(14):
        for k, api in enumerate(apis):
            for lease in walk(api, project, 1):
                sure = prelabel_core.confidence("bbox", lease["prelabels"])
                assert sure is not None
                seqs[k].append((lease["task"]["id"] in gold_tasks, sure))
    return seqs


def test_gold_cannot_be_told_by_its_place_in_the_order(manager, api_as, monkeypatch) -> None:
    """Real tasks come least sure first; a gold task is the unseen one nearest the next real
    task's confidence, so its pre-labels' scores do not stand out from its neighbours'. The
    same walk with gold drawn at random (as the default order draws it) shows why: there the
    gap to the neighbours gives gold away."""
    nearest = _gap_auc(_gold_walk(manager, api_as, monkeypatch, seed=1))
    monkeypatch.setattr(routing, "_frontier", lambda project, worker: None)
    at_random = _gap_auc(_gold_walk(manager, api_as, monkeypatch, seed=1))
    assert nearest < 0.7
    assert at_random > 0.85
