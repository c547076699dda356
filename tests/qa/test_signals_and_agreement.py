"""Spam signals with their evidence, and agreement metrics, as managers see them."""

from __future__ import annotations

import pytest

from qa import agreement as stats
from tasks import routing
from tasks.models import Assignment
from tasks.services import project_transition
from tests.factories import WorkerFactory, image_ready, project_create
from tests.qa.helpers import answer, classification_project, gold_draw, no_gold

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


def flags_of(api_as, manager, project, worker) -> dict[str, dict]:
    listed = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/").json()
    row = next(w for w in listed if w["worker"] == worker.pk)
    return {f["signal"]: f for f in row["flags"]}


def crowd_of_three(manager):
    """Two honest workers and one who answers "cat" to everything, fast."""
    project, truth = classification_project(
        manager, gold=0, images=12, min_overlap=3, max_overlap=3, agreement_threshold=0.5
    )
    honest = [WorkerFactory.create() for _ in range(2)]
    spammer = WorkerFactory.create()
    for _ in range(12):
        for w in honest:
            answer(project, w, lambda a: [{"label": truth[a.task.image_id]}], rand=no_gold)
        answer(project, spammer, lambda a: [{"label": "cat"}], rand=no_gold)
    Assignment.objects.filter(project=project).update(time_spent_ms=8000)
    Assignment.objects.filter(project=project, worker=spammer).update(time_spent_ms=700)
    return project, truth, honest, spammer


def test_fast_identical_answers_are_flagged_with_evidence(api_as, manager) -> None:
    project, _, honest, spammer = crowd_of_three(manager)
    flags = flags_of(api_as, manager, project, spammer)
    assert set(flags) == {"too_fast", "identical_answers"}
    assert flags["too_fast"]["worker_median_ms"] == 700
    assert flags["too_fast"]["project_median_ms"] == 8000
    assert flags["identical_answers"]["answer"] == [{"label": "cat"}]
    assert flags["identical_answers"]["share"] == 1.0
    for w in honest:
        assert flags_of(api_as, manager, project, w) == {}
    detail = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/{spammer.pk}/").json()
    assert {f["signal"] for f in detail["flags"]} == {"too_fast", "identical_answers"}


def test_empty_answers_where_gold_has_objects_are_flagged(api_as, manager, worker) -> None:
    from qa.services import gold_set

    project = project_create(manager, kind="bbox", labels=["car"], gold_rate=0.5, tile_size=0)
    for seed in range(4):
        image = image_ready(project, seed=seed)
        gold_set(
            project=project,
            image_id=image.pk,
            annotations=[{"label": "car", "bbox": [10, 10, 50, 50]}],
            user=manager,
        )
    image_ready(project, seed=99)
    project = project_transition(project=project, action="start")
    for _ in range(3):
        answer(project, worker, lambda a: [], rand=gold_draw)
    flags = flags_of(api_as, manager, project, worker)
    assert flags["empty_on_gold"]["count"] == 3
    assert flags["empty_on_gold"]["of"] == 3
    history = api_as(manager).get(f"/api/v1/projects/{project.pk}/workers/{worker.pk}/").json()
    assert len(history["gold_history"]) == 3
    assert history["gold_history"][0]["details"]["recall"] == 0.0


def test_classification_agreement_matches_the_statistics(api_as, manager) -> None:
    project, _, honest, spammer = crowd_of_three(manager)
    response = api_as(manager).get(f"/api/v1/projects/{project.pk}/agreement/")
    assert response.status_code == 200
    data = response.json()
    triples = list(
        Assignment.objects.filter(project=project).values_list("task_id", "worker_id", "answer")
    )
    triples = [(t, w, a[0]["label"]) for t, w, a in triples if a]
    assert data["krippendorff_alpha"] == pytest.approx(
        stats.krippendorff_alpha_from_triples(triples), abs=1e-6
    )
    assert data["tasks"] == 12
    kappas = {tuple(p["workers"]): p["kappa"] for p in data["pairs"]}
    # The honest pair agrees perfectly; anyone paired with "always cat" gets no better than
    # chance.
    assert kappas[tuple(sorted(w.pk for w in honest))] == 1.0
    per_worker = {w["worker"]: w["mean_kappa"] for w in data["workers"]}
    assert {w["username"] for w in data["workers"]} == {w.username for w in [*honest, spammer]}
    assert all(len(p["usernames"]) == 2 and all(p["usernames"]) for p in data["pairs"])
    assert per_worker[spammer.pk] <= 0.0 < per_worker[honest[0].pk]
    assert -1 <= data["fleiss_kappa"] <= 1


def test_shape_agreement_gives_iou_and_a_confusion_matrix(api_as, manager) -> None:
    project = project_create(
        manager, kind="bbox", labels=["car", "tree"], gold_rate=0.0, min_overlap=2,
        max_overlap=2, tile_size=0,
    )  # fmt: skip
    image_ready(project, seed=1)
    project = project_transition(project=project, action="start")
    a, b = WorkerFactory.create(), WorkerFactory.create()
    boxes = [
        {"label": "car", "bbox": [10, 10, 40, 40]},
        {"label": "tree", "bbox": [100, 100, 20, 20]},
    ]
    other = [
        {"label": "car", "bbox": [10, 10, 40, 40]},
        {"label": "car", "bbox": [100, 100, 20, 20]},
    ]
    for worker, items in ((a, boxes), (b, other)):
        lease = routing.assignment_next(project=project, worker=worker, rand=no_gold)
        assert lease is not None
        routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=items)
    data = api_as(manager).get(f"/api/v1/projects/{project.pk}/agreement/").json()
    assert data["mean_pairwise_iou"] == 1.0
    assert data["confusion"]["labels"] == ["car", "tree", "(nothing)"]
    assert data["confusion"]["nothing"] == 2
    assert {w["username"] for w in data["workers"]} == {a.username, b.username}
    matrix = data["confusion"]["matrix"]
    assert matrix[0][0] == 1  # car / car
    assert matrix[0][1] == matrix[1][0] == 1  # one car that the other called a tree
    assert data["mean_pairwise_f1"] == 0.5
