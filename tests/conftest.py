from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from django.core.cache import cache
from dramatiq.brokers.stub import StubBroker
from rest_framework.test import APIClient

from crowd.jobs import wait_for_jobs
from crowd.models import User
from tests.factories import ClientFactory, ManagerFactory, WorkerFactory, token_for
from tests.plugins.services import Server, services_required, start


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Throttle counters live in the cache; one test's log-ins must not throttle the next's.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _release_looks_forgotten() -> None:
    """When routing last looked for a project's expired leases is the process's memory: a
    project id a rolled-back test used before is a new project in the next."""
    from tasks import routing

    routing._release_looked.clear()


@pytest.fixture(autouse=True)
def _decisions(request: pytest.FixtureRequest, settings: Any) -> None:
    """Tests decide a completed task in the submitting request, where they can see it at
    once inside their rolled-back transaction; those marked ``deferred_decisions`` run the
    default, where a job decides it after commit."""
    if request.node.get_closest_marker("deferred_decisions") is None:
        settings.TASK_DECISIONS = "inline"


@pytest.fixture(autouse=True)
def _jobs_finish_within_their_test() -> Iterator[None]:
    """Jobs a test caused run (and fail) inside that test, never in the next one."""
    yield
    broker = dramatiq.get_broker()
    if isinstance(broker, StubBroker):
        try:
            wait_for_jobs()
        finally:
            broker.flush_all()


@pytest.fixture
def seeded_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """The draws made with the server's key (the tasks the pre-label holdout withholds, the
    images auto-accept spot-checks) made instead from a fixed key and each row's place in its
    project, so that a seeded run draws the same in every session and on either database:
    each test session has its own ``SECRET_KEY``, and PostgreSQL's id sequences run on
    across tests."""
    from django.db.models import Min

    from qa import auto_accept
    from tasks import prelabel_core, prelabels
    from tasks.models import Image, Task

    def by_place(model: Any, salt: bytes) -> Any:
        first: dict[int, int] = {}

        def value(project_id: int, pk: int) -> float:
            if project_id not in first:
                rows = model.objects.filter(project_id=project_id)
                first[project_id] = rows.aggregate(first=Min("pk"))["first"]
            return prelabel_core.holdout_value(salt, 0, pk - first[project_id])

        return value

    monkeypatch.setattr(prelabels, "holdout_value", by_place(Task, b"seeded holdout"))
    monkeypatch.setattr(auto_accept, "spot_check_value", by_place(Image, b"seeded spot checks"))


@pytest.fixture(scope="session")
def redis_server() -> Server:
    """A private Redis server for this test session (fails, not skips, with REQUIRE_SERVICES=1)."""
    try:
        return start("redis")
    except (FileNotFoundError, RuntimeError) as exc:
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but Redis cannot start: {exc}")
        pytest.skip(f"Redis not available: {exc}")


@pytest.fixture(scope="session")
def seaweedfs_server() -> Server:
    """A private SeaweedFS (S3) server for this test session (fails, not skips, with
    REQUIRE_SERVICES=1)."""
    try:
        return start("seaweedfs")
    except (FileNotFoundError, RuntimeError) as exc:
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but SeaweedFS cannot start: {exc}")
        pytest.skip(f"SeaweedFS not available: {exc}")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def api_as() -> Callable[[User], APIClient]:
    """An API client authenticated with the user's token, as a script would be."""

    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make


@pytest.fixture
def worker(db: None) -> User:
    return WorkerFactory.create()


@pytest.fixture
def manager(db: None) -> User:
    return ManagerFactory.create()


@pytest.fixture
def client_user(db: None) -> User:
    return ClientFactory.create()
