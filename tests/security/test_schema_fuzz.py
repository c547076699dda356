"""The API fuzzed against its own OpenAPI schema, as each role, in process (WSGI, no network).

For every operation of ``/api/schema/``, schemathesis generates requests (bodies, query
strings; path ids are the real objects of the manager's project, so requests reach the
views' logic instead of stopping at a 404) and every response must be: not a 5xx, a status
the schema documents, of a documented media type, and a body that matches the schema. Every
request runs in a savepoint rolled back afterwards, so each one meets the same world.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.test import override_settings
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crowd.models import User
from tests.factories import token_for
from tests.security.world import World

pytestmark = pytest.mark.django_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 15


@pytest.fixture
def in_test_connection() -> Iterator[None]:
    """Requests share the test's database connection, as Django's test client arranges: the
    WSGI handler would otherwise close it when each request finishes."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@functools.cache
def api_schema() -> Any:
    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


def path_ids(world: World, path: str) -> dict[str, int]:
    a = world.a
    return {
        "project_id": a.project.pk,
        "image_id": a.gold_image.pk if "/gold/" in path else a.image.pk,
        "assignment_id": a.lease.pk if path.endswith(("/submit/", "/skip/")) else a.submitted.pk,
        "worker_id": a.worker.pk,
        "task_id": a.submitted.task_id,
        "export_id": a.export.pk,
        "import_id": a.image_import.pk,
        "run_id": a.prediction_run.pk,
        "batch_id": world.batch.pk,
        "payout_id": world.payout.pk,
    }


def fuzz(operation: Any, world: World, user: User | None) -> list[str]:
    """Run one operation's examples; returns the failures, one line each."""
    headers = {"Authorization": f"Token {token_for(user)}"} if user else {}
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, do not minimise
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        ids = path_ids(world, operation.path)
        if case.path_parameters:
            case.path_parameters = {name: ids[name] for name in case.path_parameters}
        with transaction.atomic():
            response = case.call(headers=headers)
            transaction.set_rollback(True)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except BaseExceptionGroup as exc:  # schemathesis: a FailureGroup of every failed check
            summary = " ".join(str(exc).split())[:400]
            failures.append(f"{operation.label}: {response.status_code} {summary}")

    run()
    return failures


@pytest.mark.parametrize("role", ["anonymous", "worker", "manager", "client"])
def test_every_operation_as_each_role(world: World, role: str, in_test_connection: None) -> None:
    user = {"anonymous": None, "worker": world.a.worker, "manager": world.a.owner,
            "client": world.a.client}[role]  # fmt: skip
    operations = [result.ok() for result in api_schema().get_all_operations()]
    assert len(operations) >= 55
    # FUZZ_PATHS=regex narrows a run to some operations while working on them.
    only = re.compile(os.environ.get("FUZZ_PATHS", ""))
    operations = [op for op in operations if only.search(f"{op.method.upper()} {op.path}")]
    failures: list[str] = []
    # A configured webhook secret, so Stripe's route runs its signature check (and refuses).
    with override_settings(STRIPE_WEBHOOK_SECRET="whsec_test"):
        for operation in operations:
            failures.extend(fuzz(operation, world, user))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(sorted(set(failures)))
