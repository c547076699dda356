"""Who may call what: every route under /api/ (and /healthz), every method its view
implements, as every role, against the status the table below expects.

The routes come from the URL conf, not from the table: a route or method the table does not
list fails with its name, so no endpoint ships without a decision about who may call it.

Roles: ``anonymous``; ``worker`` (may work on the project, holds a lease on ``image`` and a
submitted answer); ``other_manager`` and ``other_client`` (of another project); ``owner``
(the project's manager); ``client`` (the project's client); ``operator`` (a staff manager,
checked on the operators' payout routes). Another's project, image, export or assignment is
404 (its existence is not revealed); a role that may never call a route is 403 (401 when
anonymous). Every request that writes runs in a savepoint that is rolled back, so each
expectation holds on its own. Where a write is allowed the table gives its exact status:
2xx with a minimal valid body, or the one 409 the world's state makes the right answer
(e.g. a worker with no balance asking for a payout).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from crowd.models import User
from tests import images
from tests.factories import PASSWORD, ClientFactory, ManagerFactory, WorkerFactory, token_for
from tests.security.world import World

pytestmark = pytest.mark.django_db

CORE_ROLES = ("anonymous", "worker", "other_manager", "other_client", "owner")
ROLES = (*CORE_ROLES, "client", "operator")
IGNORED_METHODS = {"options", "head", "trace"}


@dataclass(frozen=True)
class Case:
    expect: dict[str, int]
    body: Callable[[World], Any] | None = None
    format: str = "json"
    settings: dict[str, Any] = field(default_factory=dict)
    transactional: bool = False


# --- Role profiles -----------------------------------------------------------------------------


def anyone(ok: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, ok)


def any_user(ok: int) -> dict[str, int]:
    return {**anyone(ok), "anonymous": 401}


def managers(ok: int) -> dict[str, int]:
    """Any manager (what they make is their own)."""
    return {"anonymous": 401, "worker": 403, "other_manager": ok, "other_client": 403,
            "client": 403, "owner": ok}  # fmt: skip


def managers_of_the_project(ok: int) -> dict[str, int]:
    return {"anonymous": 401, "worker": 403, "other_manager": 404, "other_client": 403,
            "client": 403, "owner": ok}  # fmt: skip


def members_of_the_project(ok: int) -> dict[str, int]:
    """Managers and clients of the project; for other managers and clients it does not exist."""
    return {"anonymous": 401, "worker": 403, "other_manager": 404, "other_client": 404,
            "client": ok, "owner": ok}  # fmt: skip


def managers_and_clients(ok: int) -> dict[str, int]:
    """Any manager or client (each sees only their own)."""
    return {"anonymous": 401, "worker": 403, "other_manager": ok, "other_client": ok,
            "client": ok, "owner": ok}  # fmt: skip


def workers(ok: int) -> dict[str, int]:
    return {"anonymous": 401, "worker": ok, "other_manager": 403, "other_client": 403,
            "client": 403, "owner": 403}  # fmt: skip


def operators(ok: int) -> dict[str, int]:
    return {"anonymous": 401, "worker": 403, "other_manager": 403, "other_client": 403,
            "client": 403, "owner": 403, "operator": ok}  # fmt: skip


def one_jpeg(world: World) -> dict[str, Any]:
    return {"files": [SimpleUploadedFile("new.jpg", images.jpeg(seed=99))]}


# --- The table: URL name -> method -> the status each role gets ----------------------------------

MATRIX: dict[str, dict[str, Case]] = {
    # Accounts
    "auth-register": {
        "post": Case(
            anyone(201),
            lambda w: {"username": "newcomer", "password": "a-fresh-pass-77", "email": ""},
        )
    },
    "auth-token": {
        "post": Case(anyone(200), lambda w: {"username": w.a.owner.username, "password": PASSWORD})
    },
    "auth-token-rotate": {"post": Case(any_user(200))},
    "auth-login": {
        "post": Case(anyone(200), lambda w: {"username": w.a.owner.username, "password": PASSWORD})
    },
    "auth-logout": {"post": Case(anyone(204))},
    "me": {"get": Case(any_user(200))},
    "client-create": {
        "post": Case(
            managers(201),
            lambda w: {"username": "acme", "password": "a-fresh-pass-77"},
        )
    },
    # Projects
    "projects": {
        "get": Case(any_user(200)),
        "post": Case(
            managers(201),
            lambda w: {"name": "Birds", "kind": "classification", "labels": ["owl", "hawk"]},
        ),
    },
    "project": {
        # Workers read the active projects they may work on (without the manager's settings).
        "get": Case({**members_of_the_project(200), "worker": 200}),
        "patch": Case(managers_of_the_project(200), lambda w: {"name": "Renamed"}),
        # Workers have earned money in it: the ledger keeps it, so it cannot go.
        "delete": Case(managers_of_the_project(409)),
    },
    # Its task has an answer: the image stays.
    "project-image": {"delete": Case(managers_of_the_project(409))},
    "project-start": {"post": Case(managers_of_the_project(200))},  # already active: harmless
    "project-pause": {"post": Case(managers_of_the_project(200))},
    "project-images": {
        "get": Case(members_of_the_project(200)),
        "post": Case(managers_of_the_project(201), one_jpeg, format="multipart"),
    },
    # With the files on local disk there is no bucket to import from: 409 once allowed.
    "project-images-import": {
        "post": Case(managers_of_the_project(409), lambda w: {"prefix": "incoming/"})
    },
    "project-images-import-detail": {"get": Case(managers_of_the_project(200))},
    # Model in the loop: the project's managers only.
    "project-predictions": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(
            managers_of_the_project(201),
            lambda w: {
                "model_version": "v1",
                "predictions": [{"image": w.a.image.pk, "annotations": []}],
            },
        ),
    },
    "project-predictions-file": {
        "post": Case(
            managers_of_the_project(201),
            lambda w: {
                "file": SimpleUploadedFile(
                    "p.json", b'{"model_version": "v1", "predictions": []}', "application/json"
                )
            },
            format="multipart",
        )
    },
    # The project names no ML backend: 409 once allowed.
    "project-predictions-run": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(managers_of_the_project(409)),
    },
    "project-predictions-run-detail": {"get": Case(managers_of_the_project(200))},
    "project-predictions-run-cancel": {"post": Case(managers_of_the_project(409))},
    # A signed link is the only credential: without one, nobody.
    "image-signed": {"get": Case(anyone(403))},
    "project-progress": {"get": Case(members_of_the_project(200))},
    "project-stalled-tasks": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(managers_of_the_project(200), lambda w: {"action": "close"}),
    },
    "project-clients": {
        "post": Case(managers_of_the_project(201), lambda w: {"username": w.b.client.username})
    },
    # Image bytes: the project's managers and clients, and the worker leasing a task of it.
    "image-file": {"get": Case({**members_of_the_project(200), "worker": 200})},
    "image-thumbnail": {"get": Case({**members_of_the_project(200), "worker": 200})},
    # Work
    "assignment-next": {"post": Case(workers(201))},  # the open lease again
    "assignment-submit": {"post": Case(workers(200), lambda w: {"annotations": []})},
    "assignment-skip": {"post": Case(workers(200))},
    "my-assignments": {"get": Case(workers(200))},
    "project-my-status": {"get": Case(workers(200))},
    # Quality
    "project-gold": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(
            managers_of_the_project(201), lambda w: {"image": w.a.spare_image.pk, "annotations": []}
        ),
    },
    "project-gold-bulk": {
        "post": Case(
            managers_of_the_project(201),
            lambda w: {"gold": [{"image": w.a.spare_image.pk, "annotations": []}]},
        )
    },
    "project-gold-file": {
        "post": Case(
            managers_of_the_project(201),
            lambda w: {
                "file": SimpleUploadedFile(
                    "g.json",
                    f'{{"gold": [{{"image": {w.a.spare_image.pk}, "annotations": []}}]}}'.encode(),
                    "application/json",
                )
            },
            format="multipart",
        )
    },
    "project-gold-detail": {"delete": Case(managers_of_the_project(204))},
    "project-workers": {"get": Case(managers_of_the_project(200))},
    "project-worker": {"get": Case(managers_of_the_project(200))},
    "project-worker-suspend": {
        "post": Case(managers_of_the_project(200), lambda w: {"reason": "Random boxes"})
    },
    # The worker is not suspended: 409 not_suspended once the manager may ask at all.
    "project-worker-reinstate": {"post": Case(managers_of_the_project(409))},
    "project-agreement": {"get": Case(managers_of_the_project(200))},
    "project-models": {"get": Case(managers_of_the_project(200))},
    "project-auto-accept": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(managers_of_the_project(202)),
    },
    # Nothing the model labelled alone in the world: 0 images reopened.
    "project-auto-accept-reopen": {
        "post": Case(managers_of_the_project(200), lambda w: {"all": True})
    },
    "project-prelabel-effect": {"get": Case(managers_of_the_project(200))},
    "task-reference": {"get": Case(managers_of_the_project(200))},
    "project-throughput": {"get": Case(members_of_the_project(200))},
    "project-consensus": {
        "get": Case(members_of_the_project(200)),
        "post": Case(managers_of_the_project(202)),
    },
    "project-consensus-results": {"get": Case(members_of_the_project(200))},
    # Datasets: the project's managers and clients
    "project-exports": {
        "get": Case(members_of_the_project(200)),
        "post": Case(members_of_the_project(202), lambda w: {"format": "coco"}),
    },
    "exports": {"get": Case(managers_and_clients(200))},
    "export": {"get": Case(members_of_the_project(200))},
    "export-download": {"get": Case(members_of_the_project(200))},
    # Only a failed version is built again: 409 for the world's finished one.
    "export-retry": {"post": Case(members_of_the_project(409))},
    # Reviews and money
    "assignment-approve": {"post": Case(managers_of_the_project(200), lambda w: {})},
    "assignment-reject": {
        "post": Case(managers_of_the_project(200), lambda w: {"reason": "Boxes miss the cars"})
    },
    "project-reviews": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(
            managers_of_the_project(200),
            lambda w: {"assignments": [w.a.submitted.pk], "action": "approve"},
        ),
    },
    "project-bonuses": {
        "get": Case(managers_of_the_project(200)),
        "post": Case(
            managers_of_the_project(201),
            lambda w: {"worker": w.a.worker.pk, "amount": "1.00", "reason": "Careful work"},
        ),
    },
    "my-ledger": {"get": Case(workers(200))},
    "my-payouts": {
        "get": Case(workers(200)),
        "post": Case(workers(409), lambda w: {}),  # the worker's balance is below the minimum
    },
    "my-payout-account": {
        "get": Case(workers(200)),
        # The manual provider has no account to set up.
        "post": Case(
            workers(409),
            lambda w: {
                "refresh_url": "https://example.org/r",
                "return_url": "https://example.org/d",
            },
        ),
    },
    "payouts": {"get": Case(operators(200))},
    "payout-batches": {"post": Case(operators(201), lambda w: {"currency": "USD"})},
    "payout-batch-csv": {"get": Case(operators(200))},
    "payout-batch-paid": {"post": Case(operators(200))},
    "payout-failed": {"post": Case(operators(200), lambda w: {"reason": "The bank refused it"})},
    # Stripe signs its events; nobody's session or token stands in for the signature.
    "payout-webhook-stripe": {
        "post": Case(
            anyone(400),
            lambda w: {"id": "evt_1", "type": "transfer.created"},
            settings={"STRIPE_WEBHOOK_SECRET": "whsec_test"},
        )
    },
    # Schema, docs, health: public
    "schema": {"get": Case(anyone(200))},
    "api-docs": {"get": Case(anyone(200))},
    "api-redoc": {"get": Case(anyone(200))},
    # The health check manages its own connection: it runs outside a test transaction.
    "healthz": {"get": Case(anyone(200), transactional=True)},
}


# --- Routes from the URL conf ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str  # like "api/v1/projects/<int:project_id>/"
    methods: tuple[str, ...]


def _methods(pattern: URLPattern) -> tuple[str, ...]:
    view_class = getattr(pattern.callback, "view_class", None) or getattr(
        pattern.callback, "cls", None
    )
    if view_class is None:
        return ("get",)  # a function view: read-only by convention here (healthz)
    return tuple(
        m
        for m in view_class.http_method_names
        if m not in IGNORED_METHODS and hasattr(view_class, m)
    )


def routes() -> list[Route]:
    found: list[Route] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                full = prefix + str(p.pattern)
                if full.startswith("api/") or full == "healthz":
                    found.append(Route(p.name or full, full, _methods(p)))

    walk(get_resolver().url_patterns, "")
    return sorted(found, key=lambda r: r.pattern)


ROUTES = routes()
CASES = [(r, m) for r in ROUTES for m in r.methods]


def _param(route: Route, method: str) -> Any:
    case = MATRIX.get(route.name, {}).get(method)
    marks = [pytest.mark.django_db(transaction=True)] if case and case.transactional else []
    return pytest.param(route, method, id=f"{route.name}-{method}", marks=marks)


def _ids(world: World, route: Route) -> dict[str, int]:
    a = world.a
    return {
        "project_id": a.project.pk,
        "image_id": a.gold_image.pk if route.name.startswith("project-gold") else a.image.pk,
        "assignment_id": a.lease.pk if route.name in ("assignment-submit", "assignment-skip") else a.submitted.pk,
        "worker_id": a.worker.pk,
        "task_id": a.submitted.task_id,
        "export_id": a.export.pk,
        "import_id": a.image_import.pk,
        "run_id": a.prediction_run.pk,
        "batch_id": world.batch.pk,
        "payout_id": world.payout.pk,
    }  # fmt: skip


def url_for(world: World, route: Route) -> str:
    ids = _ids(world, route)
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(ids[str(m.group(1))]), route.pattern)


def role_users(world: World) -> dict[str, User]:
    return {
        "worker": world.a.worker, "other_manager": world.b.owner, "other_client": world.b.client,
        "owner": world.a.owner, "client": world.a.client, "operator": world.operator,
    }  # fmt: skip


def bare_role_users() -> dict[str, User]:
    """Users of each role and nothing else, for routes that touch no project."""
    return {
        "worker": WorkerFactory.create(), "other_manager": ManagerFactory.create(),
        "other_client": ClientFactory.create(), "owner": ManagerFactory.create(),
        "client": ClientFactory.create(), "operator": ManagerFactory.create(is_staff=True),
    }  # fmt: skip


def clients(users: dict[str, User]) -> dict[str, APIClient]:
    out = {"anonymous": APIClient()}
    for role, user in users.items():
        out[role] = APIClient()
        out[role].credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return out


def send(client: APIClient, method: str, url: str, body: Any, fmt: str) -> int:
    """One request; a write runs in a savepoint that is rolled back afterwards."""
    if method == "get":
        return client.get(url).status_code
    with transaction.atomic():
        response = getattr(client, method)(url, body, format=fmt)
        transaction.set_rollback(True)
    return response.status_code


def test_every_route_and_method_has_an_entry() -> None:
    missing = [
        f"{r.name} {m.upper()} ({r.pattern})" for r, m in CASES if m not in MATRIX.get(r.name, {})
    ]
    assert not missing, "No expected statuses for: " + "; ".join(missing) + ". Add them to MATRIX."


def test_no_entry_for_a_route_that_is_gone() -> None:
    present = {(r.name, m) for r, m in CASES}
    stale = [f"{n} {m.upper()}" for n, ms in MATRIX.items() for m in ms if (n, m) not in present]
    assert not stale, "MATRIX lists routes the URL conf no longer has: " + "; ".join(stale)


def test_the_walk_found_the_api() -> None:
    names = {r.name for r in ROUTES}
    assert {"me", "projects", "assignment-submit", "export-download", "schema", "healthz"} <= names
    assert len(CASES) >= 55


@pytest.mark.parametrize(("route", "method"), [_param(r, m) for r, m in CASES])
def test_route_as_every_role(request: pytest.FixtureRequest, route: Route, method: str) -> None:
    case = MATRIX.get(route.name, {}).get(method)
    if case is None:
        pytest.fail(f"{route.name} {method.upper()} ({route.pattern}) has no entry in MATRIX")
    assert set(CORE_ROLES) <= set(case.expect), f"{route.name}: every core role needs a status"
    if case.transactional:
        # Committed writes would publish live frames built after the test; these routes
        # need no project, so no world is built.
        assert "<" not in route.pattern
        assert case.body is None
        world, by_role, url = None, clients(bare_role_users()), "/" + route.pattern
    else:
        world = request.getfixturevalue("world")
        by_role, url = clients(role_users(world)), url_for(world, route)
    got: dict[str, int] = {}
    with override_settings(**case.settings):
        # Roles expected to be refused go first; none of them may change anything anyway.
        for role in sorted(case.expect, key=lambda r: case.expect[r] < 400):
            body = case.body(world) if case.body and world else None
            got[role] = send(by_role[role], method, url, body, case.format)
    assert got == case.expect, f"{method.upper()} {url}"
