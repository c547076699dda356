"""The routing policy's admission said in SQL (``QaRoutingPolicy.admitted_sql``), which the
claim after an answer checks in its own statement, holds exactly when ``worker_admission``
admits the worker to every task with nothing to write."""

from __future__ import annotations

import pytest
from django.db import connection

from qa.models import WorkerScore, WorkerStatus
from qa.policy import QaRoutingPolicy
from qa.services import worker_admission
from tasks.hooks import ADMITTED
from tasks.models import Task
from tasks.services import tasks_mark_gold
from tests.factories import WorkerFactory, project_with_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


def _holds(project_id: int, worker_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 WHERE {QaRoutingPolicy().admitted_sql()}",
            {"project": project_id, "worker": worker_id},
        )
        return cursor.fetchone() is not None


@pytest.mark.parametrize(
    "status", [WorkerStatus.ACTIVE, WorkerStatus.PROBATION, WorkerStatus.SUSPENDED,
               WorkerStatus.EXAM, None],
)  # fmt: skip
def test_the_condition_holds_exactly_when_the_worker_is_admitted(manager, status) -> None:
    project = project_with_tasks(manager, tasks=3, overlap=1)
    tasks_mark_gold(image=Task.objects.filter(project=project)[0].image)
    project.exam_tasks = 1
    project.save()
    worker = WorkerFactory.create()
    if status is not None:
        WorkerScore.objects.create(project=project, worker=worker, status=status)
    holds = _holds(project.pk, worker.pk)
    rows_before = WorkerScore.objects.filter(project=project, worker=worker).count()
    admitted = worker_admission(project=project, worker=worker) == ADMITTED
    assert holds == (status in (WorkerStatus.ACTIVE, WorkerStatus.PROBATION))
    assert holds == (admitted and rows_before == 1)
