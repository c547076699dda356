"""PostgreSQL plans the claim as the first row of the routing index, also in a project whose
tasks came after the last ANALYZE: starting a project and adding tasks refresh the statistics
(``tasks.planner_stats``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from django.utils import timezone

from crowd.models import User
from qa.models import WorkerScore, WorkerStatus
from tasks import jobs, planner_stats, routing
from tasks.hooks import routing_policy
from tasks.models import Assignment, AssignmentStatus, Project, Task
from tests.factories import (
    WorkerFactory,
    answers_counted,
    image_ready,
    project_create,
    project_with_tasks,
)

pytestmark = pytest.mark.django_db


def _plan_nodes(project: Project, worker: User | None = None) -> list[dict[str, Any]]:
    """Every node of the claim's plan, as run: the claim after an answer, which checks the
    worker's admission itself (an admitted worker's: a new one unless ``worker``)."""
    now = timezone.now()
    if worker is None:
        worker = WorkerFactory.create()
        WorkerScore.objects.create(project=project, worker=worker, status=WorkerStatus.ACTIVE)
    params: dict[str, Any] = {"project": project.pk, "worker": worker.pk, "now": now,
              "expires": now}  # fmt: skip
    claim = routing._claim_sql("default", routing_policy().admitted_sql())
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {claim}", params)
        plan = cursor.fetchone()[0][0]["Plan"]

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    return list(nodes(plan))


def _claim_plan(project: Project) -> list[tuple[str, str | None]]:
    """The node types (and indexes) of the claim's plan, as run."""
    return [(node["Node Type"], node.get("Index Name")) for node in _plan_nodes(project)]


@pytest.fixture
def stale_statistics(manager) -> None:
    """Statistics taken when the tasks table held one small project."""
    project_with_tasks(manager, tasks=50, overlap=2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task, tasks_assignment")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        jobs.routing_tables_analyze, "send_with_options", lambda **kw: calls.append(kw)
    )
    cache.delete(planner_stats.PENDING)
    return calls


@pytest.mark.postgres
@pytest.mark.usefixtures("stale_statistics")
def test_without_fresh_statistics_a_new_project_is_claimed_by_sorting_all_its_tasks(
    manager,
) -> None:
    """Why the statistics are refreshed: the plan the stale ones give."""
    project = project_with_tasks(manager, tasks=3000, overlap=2)  # start's ANALYZE not run
    assert ("Sort", None) in _claim_plan(project)


@pytest.mark.postgres
@pytest.mark.usefixtures("stale_statistics")
def test_a_started_project_is_claimed_on_the_routing_index(
    manager, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        project = project_with_tasks(manager, tasks=3000, overlap=2)
    plan = _claim_plan(project)
    assert ("Index Scan", "task_routing_order") in plan, plan
    assert ("Sort", None) not in plan, plan


@pytest.mark.postgres
@pytest.mark.usefixtures("stale_statistics")
def test_added_tasks_queue_one_analysis_at_a_time_which_fixes_the_plan(
    manager, settings, sent, django_capture_on_commit_callbacks
) -> None:
    settings.ROUTING_ANALYZE_SECONDS = 10
    project = project_with_tasks(manager, tasks=3000, overlap=2)
    with django_capture_on_commit_callbacks(execute=True):
        for seed in range(3):
            image_ready(project, seed=5000 + seed)
    assert sent == [{"delay": 10_000}]
    jobs.routing_tables_analyze.fn()
    plan = _claim_plan(project)
    assert ("Index Scan", "task_routing_order") in plan, plan
    assert ("Sort", None) not in plan, plan
    # The job lets the next tasks queue the next analysis.
    with django_capture_on_commit_callbacks(execute=True):
        image_ready(project, seed=5003)
    assert sent == [{"delay": 10_000}] * 2


@pytest.mark.postgres
def test_the_claim_starts_past_the_tasks_awaiting_their_decision(
    manager, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        project = project_with_tasks(manager, tasks=1000, overlap=2)
    # The oldest 400 have all their answers and wait for the decision job: closest to done,
    # they come first in the routing order, and none has a slot to claim.
    due = Task.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)[:400]
    Task.objects.filter(pk__in=list(due)).update(answers=F("required_overlap"))
    (scan,) = [node for node in _plan_nodes(project)
               if node.get("Index Name") == "task_routing_order"]  # fmt: skip
    assert "(required_overlap - answers) > 0" in scan["Index Cond"]
    # Not one of them read only to be dropped.
    assert scan.get("Rows Removed by Filter", 0) == 0, scan
    assert routing.assignment_next(project=project, worker=WorkerFactory.create()) is not None


@pytest.mark.postgres
def test_a_worker_with_many_answered_open_tasks_is_claimed_by_one_probe_a_task(
    manager, django_capture_on_commit_callbacks
) -> None:
    """The worker's own answered tasks that still need others' answers sort first (closest
    to done), and the claim reads past each. Whatever the statistics say of the worker (here
    taken when others had answered 3,000 tasks and they none), each is left out by one probe
    of that task's assignments, never by a scan of all the worker's: at 400 such tasks the
    plan those statistics chose compared each with each, 80,200 rows."""
    other = project_with_tasks(manager, tasks=1000, overlap=3)
    for _ in range(3):
        answers_counted(other, WorkerFactory.create(), list(Task.objects.filter(project=other)), [])
    with django_capture_on_commit_callbacks(execute=True):
        project = project_with_tasks(manager, tasks=1000, overlap=3)  # analyses both tables
    worker = WorkerFactory.create()
    WorkerScore.objects.create(project=project, worker=worker, status=WorkerStatus.ACTIVE)
    answered = list(Task.objects.filter(project=project).order_by("pk")[:400])
    answers_counted(project, worker, answered, [])
    nodes = _plan_nodes(project, worker)  # the claim, run
    probes = [node for node in nodes
              if node.get("Relation Name") == "tasks_assignment" and "Scan" in node["Node Type"]]  # fmt: skip
    assert probes
    # One probe a skipped task and one for the task claimed, each reading at most its row.
    for node in probes:
        assert node["Actual Loops"] <= 401, node
        assert node["Actual Rows"] + node.get("Rows Removed by Filter", 0) <= 1, node
    lease = Assignment.objects.get(worker=worker, status=AssignmentStatus.LEASED)
    assert lease.task_id not in {t.pk for t in answered}


@pytest.mark.postgres
def test_no_analysis_is_queued_when_turned_off(
    manager, settings, sent, django_capture_on_commit_callbacks
) -> None:
    settings.ROUTING_ANALYZE_SECONDS = 0
    project = project_create(manager)
    with django_capture_on_commit_callbacks(execute=True):
        image_ready(project, seed=1)
    assert sent == []


def test_sqlite_plans_on_the_index_and_queues_nothing(
    manager, sent, django_capture_on_commit_callbacks
) -> None:
    project = project_create(manager)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        image_ready(project, seed=1)
        planner_stats.routing_tables_analyze_on_commit()
    assert sent == []
    assert not any(getattr(c, "__name__", "") == "run" for c in callbacks)
