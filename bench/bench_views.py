"""The worker's two hot endpoints with and without DRF's view machinery, in one process.

Processor time a request of ``next/`` and of ``submit/?next=1`` (the workspace's Enter), on
PostgreSQL with Redis for the cache and the live layer, as the production layout has them:

- through Django's handler: the middleware, then the DRF view (what a web process runs,
  without the ASGI server and its hand-over to the request's thread);
- the DRF view alone (``APIView.dispatch``: its request wrapper, authentication,
  permissions, throttles, content negotiation, the input serializers, the renderer);
- a plain Django view doing the same work without DRF: the token's user by the same cached
  lookup, the role checked, the body parsed and its fields checked by hand, the same
  services, the same JSON out. It exists only here: it gives none of the documented error
  bodies, throttles or schema, so it measures what DRF costs rather than offering a path;
- the routing services alone (no request at all): the floor.

The four run in turn, round after round, on the same workers and project, so that a change
in the machine's speed falls on all of them alike; each figure is the median of the rounds
(and the fastest round beside it).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

NAME = "views"
DESCRIPTION = "next/ and submit?next=1 per request: middleware+DRF, DRF view, plain view, services"
WORKERS = 16
BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]


def _plain_views() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``next/`` and ``submit/?next=1`` as plain Django views (see the module's docstring)."""
    import orjson
    from django.http import HttpResponse, JsonResponse

    from crowd.models import Role
    from crowd.tokens import CachedTokenAuthentication
    from tasks import routing, selectors
    from tasks.apis import _next_after, assignment_json

    auth = CachedTokenAuthentication()

    def worker_of(request: Any) -> Any:
        kind, _, key = request.headers.get("Authorization", "").partition(" ")
        if kind != "Token" or not key:
            return None
        user, _ = auth.authenticate_credentials(key)
        return user if user.role == Role.WORKER else None

    def next_view(request: Any, project_id: int) -> HttpResponse:
        worker = worker_of(request)
        if worker is None:
            return JsonResponse({"detail": "forbidden"}, status=403)
        project = selectors.project_for_worker(worker, project_id)
        lease = routing.assignment_next(project=project, worker=worker)
        if lease is None:
            return HttpResponse(status=204)
        lease.project = project
        return HttpResponse(orjson.dumps(assignment_json(lease)), status=201,
                            content_type="application/json")  # fmt: skip

    def submit_view(request: Any, assignment_id: int) -> HttpResponse:
        worker = worker_of(request)
        if worker is None:
            return JsonResponse({"detail": "forbidden"}, status=403)
        want_next = request.GET.get("next") in ("1", "true", "True")
        data = orjson.loads(request.body)
        spent = data.get("time_spent_ms")
        version = data.get("prelabel_version")
        if not isinstance(data, dict) or "annotations" not in data:
            return JsonResponse({"detail": "invalid"}, status=400)
        if spent is not None and not (isinstance(spent, int) and 0 <= spent <= 86_400_000):
            return JsonResponse({"detail": "invalid"}, status=400)
        if version is not None and not (isinstance(version, str) and len(version) <= 200):
            return JsonResponse({"detail": "invalid"}, status=400)
        assignment = routing.assignment_submit(
            assignment_id=assignment_id, worker=worker, annotations=data["annotations"],
            idempotency_key=request.headers.get("Idempotency-Key", ""),
            time_spent_ms=spent, prelabel_version=version,
        )  # fmt: skip
        body: dict[str, Any] = {"id": assignment.pk, "status": assignment.status,
                                "clipped": assignment.clipped}  # fmt: skip
        if want_next:
            body.update(_next_after(worker, assignment.project))
        return HttpResponse(orjson.dumps(body), content_type="application/json")

    return next_view, submit_view


def run(quick: bool = False) -> list[dict[str, Any]]:
    from tests.plugins.services import start

    server = start("postgres")
    redis_server = start("redis")
    try:
        import psycopg

        admin = server.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE crowd")
        from bench.django_env import setup

        setup(DATABASE_URL=server.url, REDIS_URL=redis_server.url, LEASE_SWEEP_SECONDS="0",
              DATABASE_POOL="false", THROTTLE_NEXT="1000000/second")  # fmt: skip
        return _measure(rounds=3 if quick else 8, per_round=100 if quick else 300)
    finally:
        redis_server.stop()
        server.stop()


def _measure(rounds: int, per_round: int) -> list[dict[str, Any]]:
    from django.conf import settings
    from django.core.handlers.base import BaseHandler
    from django.test import RequestFactory

    from bench.bench_routing import OVERLAP, _make_project
    from crowd.models import User
    from tasks import routing
    from tasks.apis import AssignmentNextApi, AssignmentSubmitApi
    from tasks.models import Project

    settings.ALLOWED_HOSTS = ["*"]
    # Every request takes one slot of a task (overlap 3): two endpoints, four variants.
    slots = 2 * 4 * (rounds * per_round + 2 * WORKERS)
    project_id, people = _make_project(slots // OVERLAP + 200, WORKERS, "views")
    project = Project.objects.get(pk=project_id)
    workers = [User.objects.get(pk=pk) for pk, _ in people]
    tokens = [token for _, token in people]
    factory = RequestFactory()
    handler = BaseHandler()
    handler.load_middleware()
    drf_next, drf_submit = AssignmentNextApi.as_view(), AssignmentSubmitApi.as_view()
    plain_next, plain_submit = _plain_views()
    body = json.dumps({"annotations": BOX})
    leases: list[int | None] = [None] * WORKERS

    def next_request(k: int) -> Any:
        return factory.post(f"/api/v1/projects/{project_id}/assignments/next/",
                            HTTP_AUTHORIZATION=f"Token {tokens[k]}")  # fmt: skip

    def submit_request(k: int) -> Any:
        return factory.post(f"/api/v1/assignments/{leases[k]}/submit/?next=1", body,
                            content_type="application/json",
                            HTTP_AUTHORIZATION=f"Token {tokens[k]}")  # fmt: skip

    def lease_of(response: Any, key: str | None) -> int:
        if hasattr(response, "render"):
            response.render()
        assert response.status_code in (200, 201), response.content
        payload = json.loads(response.content)
        return int(payload[key]["id"] if key else payload["id"])

    # Each variant: (what it does for worker k, returning their next lease's id).
    variants: dict[str, dict[str, Callable[[int], int]]] = {
        "middleware + DRF view": {
            "next": lambda k: lease_of(handler.get_response(next_request(k)), None),
            "submit": lambda k: lease_of(handler.get_response(submit_request(k)), "next"),
        },
        "DRF view": {
            "next": lambda k: lease_of(drf_next(next_request(k), project_id=project_id), None),
            "submit": lambda k: lease_of(
                drf_submit(submit_request(k), assignment_id=leases[k]), "next"
            ),
        },
        "plain Django view": {
            "next": lambda k: lease_of(plain_next(next_request(k), project_id), None),
            "submit": lambda k: lease_of(plain_submit(submit_request(k), leases[k]), "next"),
        },
        "services": {
            "next": lambda k: _services_next(routing, project, workers[k]),
            "submit": lambda k: _services_submit(routing, project, workers[k], leases[k]),
        },
    }

    def cycles(variant: dict[str, Callable[[int], int]], endpoint: str, n: int) -> float:
        """Processor seconds of ``n`` requests of ``endpoint``, round-robin over the workers.
        ``next`` alone: each worker's lease is answered (not timed) before they ask again."""
        spent = 0.0
        for i in range(n):
            k = i % WORKERS
            if endpoint == "next":
                held = leases[k]
                if held is not None:
                    routing.assignment_submit(assignment_id=held, worker=workers[k],
                                              annotations=BOX)  # fmt: skip
                started = time.process_time()
                leases[k] = variant["next"](k)
                spent += time.process_time() - started
            else:
                if leases[k] is None:
                    leases[k] = _services_next(routing, project, workers[k])
                started = time.process_time()
                leases[k] = variant["submit"](k)
                spent += time.process_time() - started
        return spent

    timings: dict[tuple[str, str], list[float]] = {}
    for endpoint in ("next", "submit"):
        for variant in variants.values():  # warm each path (prepared statements, caches)
            cycles(variant, endpoint, WORKERS * 2)
        for _ in range(rounds):
            for name, variant in variants.items():
                ms = 1000 * cycles(variant, endpoint, per_round) / per_round
                timings.setdefault((endpoint, name), []).append(ms)
    rows = []
    for endpoint, path in (("next", "POST /projects/{id}/assignments/next/"),
                           ("submit", "POST /assignments/{id}/submit/?next=1")):  # fmt: skip
        whole = statistics.median(timings[(endpoint, "middleware + DRF view")])
        for name in variants:
            values = timings[(endpoint, name)]
            median = statistics.median(values)
            rows.append({
                "endpoint": path, "through": name, "requests": rounds * per_round,
                "cpu_ms_median": round(median, 3), "cpu_ms_fastest_round": round(min(values), 3),
                "of_whole_pct": round(100 * median / whole, 1),
            })  # fmt: skip
    return rows


def _services_next(routing: Any, project: Any, worker: Any) -> int:
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None, "the project ran out of tasks"
    return int(lease.pk)


def _services_submit(routing: Any, project: Any, worker: Any, lease: int | None) -> int:
    assert lease is not None
    routing.assignment_submit(assignment_id=lease, worker=worker, annotations=BOX)
    following = routing.assignment_next(project=project, worker=worker, after_answer=True)
    assert following is not None, "the project ran out of tasks"
    return int(following.pk)
