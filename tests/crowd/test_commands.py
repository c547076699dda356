from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from crowd.models import Role, User
from frontend.management.commands.seed_demo import DEMO_ACCOUNTS, DEMO_PROJECTS
from payouts.models import EntryKind, LedgerEntry
from qa.models import ConsensusRun, DatasetExport, RunStatus, WorkerScore, WorkerStatus
from tasks import routing
from tasks.models import Project, ProjectState, Task, TaskState

pytestmark = pytest.mark.django_db


def test_createuser_makes_a_manager_who_can_log_in() -> None:
    call_command("createuser", "boss", "--role", "manager", "--password", "a-strong-pass-77")
    user = User.objects.get(username="boss")
    assert user.role == Role.MANAGER
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "boss", "password": "a-strong-pass-77"}
    )
    assert response.status_code == 200


def test_createuser_refuses_a_duplicate_and_a_weak_password() -> None:
    call_command("createuser", "boss", "--role", "client", "--password", "a-strong-pass-77")
    with pytest.raises(CommandError, match="already exists"):
        call_command("createuser", "Boss", "--role", "manager", "--password", "a-strong-pass-77")
    with pytest.raises(CommandError, match="password"):
        call_command("createuser", "other", "--role", "worker", "--password", "123")
    assert User.objects.count() == 1


def _demo_projects() -> list[Project]:
    names = [name for _, name in DEMO_PROJECTS]
    return list(Project.objects.filter(name__in=names, owner__username="manager").order_by("pk"))


def test_seed_demo_is_idempotent_and_seeds_a_worked_project_of_each_kind(monkeypatch) -> None:
    monkeypatch.delenv("PORT", raising=False)  # the printed links default to port 8000
    call_command("seed_demo", stdout=io.StringIO())
    first = [p.pk for p in _demo_projects()]
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    # Run again: nothing is duplicated.
    projects = _demo_projects()
    assert [p.pk for p in projects] == first
    assert Project.objects.count() == len(DEMO_PROJECTS)
    assert sorted(p.kind for p in projects) == sorted(kind for kind, _ in DEMO_PROJECTS)
    assert DatasetExport.objects.count() == len(DEMO_PROJECTS)
    assert User.objects.filter(username__in=[u for u, _, _ in DEMO_ACCOUNTS]).count() == 5
    client = User.objects.get(username="client")
    worker1 = User.objects.get(username="worker1")
    for project in projects:
        assert project.state == ProjectState.ACTIVE
        export = DatasetExport.objects.get(project=project)
        assert (export.status, export.format, export.version) == (RunStatus.DONE, "coco", 1)
        assert ConsensusRun.objects.filter(project=project, status=RunStatus.DONE).exists()
        assert project.members.filter(user=client, role="client").exists()
        # Worked part of the way, paid, and a spammer caught by gold.
        real = Task.objects.filter(project=project, is_gold=False)
        assert 0 < real.filter(state=TaskState.DONE).count() < real.count(), project.kind
        assert LedgerEntry.objects.filter(project=project, kind=EntryKind.REWARD).exists()
        suspended = WorkerScore.objects.filter(project=project, status=WorkerStatus.SUSPENDED)
        assert [s.worker.username for s in suspended] == ["sim-spammer-1"], project.kind
        # A demo worker logging in finds work.
        assert routing.assignment_next(project=project, worker=worker1) is not None
    for username, role, password in DEMO_ACCOUNTS:
        assert User.objects.get(username=username).role == role
        token = APIClient().post(
            "/api/v1/auth/token/", {"username": username, "password": password}
        )
        assert token.status_code == 200, username
    text = out.getvalue()
    for page in ("/work/", "/manage/", "/client/", "/api/docs/"):
        assert f"http://localhost:8000{page}" in text
    assert "worker1  / demo-worker-pass" in text

    # --reset: fresh demo projects; the paid ones cannot be deleted (the ledger is
    # append-only), so they are renamed and paused.
    call_command("seed_demo", "--reset", stdout=io.StringIO())
    fresh = _demo_projects()
    assert len(fresh) == len(DEMO_PROJECTS)
    assert not {p.pk for p in fresh} & set(first)
    old = Project.objects.filter(pk__in=first)
    assert all(p.state == ProjectState.PAUSED and "(replaced" in p.name for p in old)
