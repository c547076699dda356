"""Worker scores and status: gold scoring, suspension, reinstatement, exams, consensus."""

from __future__ import annotations

import pytest

from qa.models import GoldResult, WorkerScore, WorkerStatus
from qa.reliability import PROBATION_GOLD
from tasks import routing
from tasks.models import Assignment, AssignmentStatus, Task, TaskState
from tasks.routing import NotEligible
from tasks.services import project_transition
from tests.factories import WorkerFactory
from tests.qa.helpers import (
    always,
    answer,
    classification_project,
    gold_draw,
    no_gold,
    truthfully,
)

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


def next_url(project) -> str:
    return f"/api/v1/projects/{project.pk}/assignments/next/"


def test_gold_answers_are_scored_and_counted(manager, worker) -> None:
    project, truth = classification_project(manager, gold=4, images=0)
    right = truthfully(truth)

    def wrong(assignment):
        return [{"label": "cat" if truth[assignment.task.image_id] != "cat" else "dog"}]

    for label_for in (right, right, wrong):
        assert answer(project, worker, label_for, rand=gold_draw) is not None
    row = WorkerScore.objects.get(project=project, worker=worker)
    results = list(GoldResult.objects.filter(worker=worker).order_by("pk"))
    assert [r.passed for r in results] == [True, True, False]
    assert (row.gold_seen, row.gold_passed, row.gold_score_sum) == (3, 2, 2.0)
    assert row.score == pytest.approx((1 + 2) / (2 + 3))  # Beta(1, 1) prior
    assert row.status == WorkerStatus.PROBATION


def test_a_worker_below_the_minimum_is_suspended_and_sees_why(api_as, manager, worker) -> None:
    project, _ = classification_project(manager, gold=12, images=5, min_worker_score=0.6)
    client = api_as(worker)
    for _ in range(12):
        if answer(project, worker, always("fish"), rand=gold_draw) is None:
            break
        row = WorkerScore.objects.get(project=project, worker=worker)
        if row.status == WorkerStatus.SUSPENDED:
            break
    row = WorkerScore.objects.get(project=project, worker=worker)
    assert row.status == WorkerStatus.SUSPENDED
    assert row.gold_seen >= PROBATION_GOLD
    response = client.post(next_url(project))
    assert response.status_code == 403
    assert response.json()["code"] == "not_eligible"
    assert "below this project's minimum of 60%" in response.json()["detail"]
    mine = client.get(f"/api/v1/projects/{project.pk}/me/").json()
    assert mine["status"] == "suspended"
    assert mine["reason"] == response.json()["detail"]
    assert client.get("/api/v1/me/").json()["suspensions"] == [
        {"project": project.pk, "reason": mine["reason"]}
    ]


def test_manager_suspends_and_reinstates_through_the_api(
    api_as, manager, worker, django_capture_on_commit_callbacks
) -> None:
    project, _ = classification_project(manager, gold=2, images=5)
    lease = routing.assignment_next(project=project, worker=worker, rand=no_gold)
    assert lease is not None
    url = f"/api/v1/projects/{project.pk}/workers/{worker.pk}/"
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(manager).post(
            url + "suspend/", {"reason": "Copies answers."}, format="json"
        )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "suspended"
    assert response.json()["suspended_by"] == manager.username
    # The open lease went back to the pool; the worker sees the reason on their next ask.
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.EXPIRED
    assert Task.objects.get(pk=lease.task_id).open_leases == 0
    response = api_as(worker).post(next_url(project))
    assert (response.status_code, response.json()["detail"]) == (403, "Copies answers.")

    response = api_as(manager).post(url + "reinstate/")
    assert response.status_code == 200
    assert response.json()["status"] == "probation"
    assert api_as(worker).post(next_url(project)).status_code == 201
    # Reinstating someone who is not suspended is a conflict; unknown workers are 404.
    assert api_as(manager).post(url + "reinstate/").status_code == 409
    other = WorkerFactory.create()
    missing = f"/api/v1/projects/{project.pk}/workers/{other.pk}/suspend/"
    assert api_as(manager).post(missing, {"reason": "x"}, format="json").status_code == 404


def test_only_the_projects_managers_see_and_act_on_its_workers(
    api_as, manager, worker, client_user
) -> None:
    from tests.factories import ManagerFactory

    project, _ = classification_project(manager, gold=1, images=1)
    answer(project, worker, always("cat"))
    base = f"/api/v1/projects/{project.pk}/workers/"
    for user in (ManagerFactory.create(), client_user):
        assert api_as(user).get(base).status_code in (403, 404)
        assert api_as(user).post(f"{base}{worker.pk}/suspend/", {}).status_code in (403, 404)
    assert api_as(worker).get(base).status_code == 403
    listed = api_as(manager).get(base).json()
    assert [w["worker"] for w in listed] == [worker.pk]
    assert set(listed[0]) >= {
        "worker", "score", "gold_seen", "gold_passed", "agreement", "status", "submitted",
        "earned",
    }  # fmt: skip


def test_reinstatement_judges_only_new_evidence(manager, worker) -> None:
    from qa.services import worker_reinstate

    project, truth = classification_project(manager, gold=14, images=0, min_worker_score=0.6)
    while (
        WorkerScore.objects.get_or_create(
            project=project, worker=worker, defaults={"status": WorkerStatus.PROBATION}
        )[0].status
        != WorkerStatus.SUSPENDED
    ):
        assert answer(project, worker, always("fish"), rand=gold_draw) is not None
    worker_reinstate(project=project, worker_id=worker.pk, by=manager)
    # Good answers from now on keep them working, whatever the old evidence says.
    for _ in range(PROBATION_GOLD):
        if answer(project, worker, truthfully(truth), rand=gold_draw) is None:
            break
    row = WorkerScore.objects.get(project=project, worker=worker)
    assert row.status == WorkerStatus.ACTIVE


class TestExam:
    def test_starting_needs_as_many_gold_images_as_the_exam(self, api_as, manager) -> None:
        project, _ = classification_project(manager, gold=2, images=3, start=False, exam_tasks=3)
        response = api_as(manager).post(f"/api/v1/projects/{project.pk}/start/")
        assert response.status_code == 409
        assert response.json()["code"] == "not_enough_gold"

    def test_real_tasks_only_after_passing(self, manager, worker) -> None:
        project, truth = classification_project(manager, gold=5, images=5, exam_tasks=3)
        for _ in range(3):
            # Even a draw that never picks gold gets gold during the exam.
            assignment = answer(project, worker, truthfully(truth), rand=no_gold)
            assert assignment is not None
            assert Task.objects.get(pk=assignment.task_id).is_gold
            assert WorkerScore.objects.get(worker=worker).status in ("exam", "probation")
        assert WorkerScore.objects.get(worker=worker).status == WorkerStatus.PROBATION
        assignment = answer(project, worker, truthfully(truth), rand=no_gold)
        assert assignment is not None
        assert not Task.objects.get(pk=assignment.task_id).is_gold

    def test_failing_the_exam_blocks_with_the_reason(self, manager, worker) -> None:
        project, _ = classification_project(manager, gold=5, images=5, exam_tasks=3)
        for _ in range(3):
            answer(project, worker, always("fish"), rand=no_gold)
        with pytest.raises(NotEligible, match="did not pass this project's qualification"):
            routing.assignment_next(project=project, worker=worker)

    def test_workers_from_before_the_exam_are_not_examined(self, manager, worker) -> None:
        project, truth = classification_project(manager, gold=5, images=5)
        answer(project, worker, truthfully(truth), rand=no_gold)
        project.exam_tasks = 3
        project.save()
        assignment = answer(project, worker, truthfully(truth), rand=no_gold)
        assert assignment is not None
        assert not Task.objects.get(pk=assignment.task_id).is_gold


def test_suspended_workers_answers_stop_counting_in_consensus(manager) -> None:
    from qa.services import worker_suspend

    project, _ = classification_project(
        manager, gold=0, images=1, min_overlap=2, max_overlap=3, agreement_threshold=0.9
    )
    spammer, a, b = (WorkerFactory.create() for _ in range(3))
    answer(project, spammer, always("fish"))
    worker_suspend(project=project, worker_id=spammer.pk, by=manager, reason="Spam.")
    answer(project, a, always("cat"))
    # Two answers are in, but one does not count: the task asks for another.
    task = Task.objects.get()
    assert (task.state, task.required_overlap) == (TaskState.OPEN, 3)
    answer(project, b, always("cat"))
    task.refresh_from_db()
    assert task.state == TaskState.DONE
    # The two counted answers agree; newcomers (right 80% of the time, 4 labels) make the
    # posterior 12^2 / (12^2 + 3).
    assert task.confidence == pytest.approx(144 / 147)
    assert not task.low_confidence
    agreement = dict(
        WorkerScore.objects.filter(project=project).values_list("worker_id", "agreement_seen")
    )
    assert agreement == {spammer.pk: 0, a.pk: 1, b.pk: 1}


def test_shape_tasks_complete_on_geometric_agreement(manager) -> None:
    from tests.factories import image_ready, project_create

    project = project_create(
        manager, kind="bbox", labels=["car"], gold_rate=0.0, min_overlap=2, max_overlap=3,
        agreement_threshold=0.8, tile_size=0,
    )  # fmt: skip
    image_ready(project, width=320, height=240)
    project = project_transition(project=project, action="start")
    box = [{"label": "car", "bbox": [10, 10, 100, 80]}]
    near = [{"label": "car", "bbox": [12, 11, 100, 80]}]
    far = [{"label": "car", "bbox": [200, 150, 50, 50]}]
    w1, w2, w3 = (WorkerFactory.create() for _ in range(3))
    answer(project, w1, lambda a: box)
    answer(project, w2, lambda a: far)
    task = Task.objects.get()
    assert (task.state, task.required_overlap) == (TaskState.OPEN, 3)  # they disagree
    answer(project, w3, lambda a: near)
    task.refresh_from_db()
    # Three answers, one far off: the merge keeps the box two of three marked, and the
    # answers' mean F1 against it, 2/3, stays below 0.8; max overlap completes the task as
    # low confidence.
    assert task.state == TaskState.DONE
    assert task.low_confidence
    assert task.confidence == pytest.approx(2 / 3)
