"""The decision job decides a project's due tasks in one batch: one merge of all their
shapes, decisions stored only for tasks still as they were read, agreement evidence summed
per worker. Each task's decision is the one it gets alone (with the same weights and model).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models import F, Sum

from qa import merge
from qa.models import ConsensusRun, WorkerScore
from qa.sim.scenes import CLASSES
from tasks import routing
from tasks.hooks import routing_policy
from tasks.models import Assignment, Project, Task
from tests.factories import project_create
from tests.qa.test_consensus_batch import ANSWERS_PER_TASK, seed

pytestmark = [pytest.mark.django_db]


def due_project(manager: Any, *, fitted: bool) -> Project:
    """A bbox project whose tasks all have their 4 answers (due), from a mixed crowd; with
    ``fitted``, after a consensus run has stored the worker model the decisions apply."""
    project = project_create(
        manager, kind="bbox", labels=list(CLASSES), gold_rate=0.0, min_overlap=4,
        max_overlap=5, agreement_threshold=0.8, tile_size=0,
    )  # fmt: skip
    seed(project, images=40)
    Task.objects.filter(project=project).update(
        answers=ANSWERS_PER_TASK, required_overlap=ANSWERS_PER_TASK
    )
    if fitted:
        run = merge.consensus_compute(run_id=ConsensusRun.objects.create(project=project).pk)
        assert run is not None
        assert run.method == "box_em"
    return project


def read(project: Project) -> tuple[list[Task], list[list[Assignment]]]:
    tasks = list(Task.objects.filter(project=project).select_related("image").order_by("pk"))
    for task in tasks:
        task.project = project
    answers = [list(Assignment.objects.filter(task=task).order_by("pk")) for task in tasks]
    return tasks, answers


@pytest.mark.parametrize("fitted", [False, True], ids=["quorum", "worker model"])
def test_the_batch_consensus_of_each_task_is_its_consensus_alone(manager, fitted: bool) -> None:
    project = due_project(manager, fitted=fitted)
    tasks, answers = read(project)
    batch = merge.tasks_consensus(project, tasks, answers)
    alone = [merge.task_consensus(project, t, a) for t, a in zip(tasks, answers, strict=True)]
    # The same up to the order of floating-point sums (the batch's model holds more workers).
    assert [c.agreement for c in batch] == [c.agreement for c in alone]
    assert [c.confidence for c in batch] == pytest.approx([c.confidence for c in alone])
    assert [rounded(c.annotations) for c in batch] == [rounded(c.annotations) for c in alone]
    assert len({round(c.confidence, 6) for c in batch}) > 10  # not one value for all


def rounded(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (item["label"], item.get("num_votes"), *(round(v, 6) for v in item.get("bbox", [])))
        for item in items
    ]


def test_the_job_stores_every_due_decision_and_sums_the_evidence(manager) -> None:
    project = due_project(manager, fitted=True)
    tasks, answers = read(project)
    expected = routing_policy().decide_many(project=project, tasks=tasks, answers=answers)
    complete = {t.pk for t, d in zip(tasks, expected, strict=True) if d.complete}
    assert 0 < len(complete) < len(tasks)  # some agree, some ask for one more answer

    assert routing.tasks_decide_due(project_id=project.pk) == len(tasks)
    for task, decision in zip(tasks, expected, strict=True):
        now = Task.objects.get(pk=task.pk)
        if decision.complete:
            assert (now.state, now.low_confidence) == ("done", False)
            assert now.confidence == pytest.approx(decision.confidence)
        else:
            assert (now.state, now.required_overlap) == ("open", ANSWERS_PER_TASK + 1)
    # Each answer to a completed task is one agreement in its worker's evidence.
    seen = WorkerScore.objects.filter(project=project).aggregate(n=Sum("agreement_seen"))["n"]
    assert seen == ANSWERS_PER_TASK * len(complete)
    assert routing.tasks_decide_due(project_id=project.pk) == 0  # nothing due any more


def test_a_task_that_moved_while_the_batch_was_decided_is_left_for_the_next_look(
    manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = due_project(manager, fitted=False)
    tasks, _ = read(project)
    moved = tasks[0]
    policy = routing_policy()
    decide_many = policy.decide_many

    def meanwhile(**kwargs: Any) -> Any:
        decisions = decide_many(**kwargs)
        # A rejected answer is withdrawn while the batch is being decided.
        Task.objects.filter(pk=moved.pk).update(answers=F("answers") - 1)
        return decisions

    monkeypatch.setattr(policy, "decide_many", meanwhile)
    routing.tasks_decide_due(project_id=project.pk)
    now = Task.objects.get(pk=moved.pk)
    assert (now.state, now.answers, now.required_overlap, now.done_at) == (
        "open",
        ANSWERS_PER_TASK - 1,
        ANSWERS_PER_TASK,
        None,
    )
    assert Task.objects.filter(project=project, state="open", answers__gte=4).count() < len(tasks)
