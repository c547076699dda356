"""How a simulated worker speaks to the product: the way a real worker's client does.

- ``ServicesClient``: in this process, through the service functions the API's views call
  (``routing.assignment_next``, ``assignment_submit``, ``assignment_skip``); the fastest, and
  the answers keep the simulated time the worker reports (see ``ServicesClient.submit``);
- ``HttpClient``: through the public API of a running server with token authentication: each
  worker registers (or logs in), asks ``POST /projects/{id}/assignments/next/``, submits with
  an ``Idempotency-Key`` or skips, backs off on 204, stops on 403 (suspended) or 404, counts
  409 (late), and waits out 429 and 503 for their ``Retry-After``; ``HttpStats`` counts the
  responses of a run's clients.

Both hand the engine a ``Lease`` and raise ``WorkerStopped`` when the product refuses the
worker more work.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import requests

from crowd.errors import Conflict, DomainError, Forbidden, NotFound
from crowd.models import Role, User
from frontend.sim.accounts import account_ensure, sim_password
from frontend.sim.errors import SimError
from qa.sim.crowd import Item
from tasks import prelabels, routing
from tasks.models import Assignment
from tasks.selectors import project_for_worker

HTTP_ATTEMPTS = 6
HTTP_TIMEOUT = 30.0
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True)
class Lease:
    id: int
    image_id: int
    region: list[float]
    width: int
    height: int
    expires_at: float  # seconds since the epoch
    # The model's objects the lease offers (empty: none, or the task is held out), and the
    # model version they are of, sent back with the answer.
    prelabels: list[Item] = field(default_factory=list)

    @property
    def prelabel_version(self) -> str | None:
        return str(self.prelabels[0]["model_version"]) if self.prelabels else None


class WorkerStopped(Exception):
    """The product refuses this worker more work (suspended, not qualified, project gone)."""


class Client(Protocol):
    name: str

    def connect(self) -> None: ...

    def next(self) -> Lease | None: ...

    def submit(
        self, lease: Lease, annotations: list[Item], *, key: str, time_spent_ms: int
    ) -> bool: ...

    def skip(self, lease: Lease) -> None: ...

    def close(self) -> None: ...


class ServicesClient:
    """A worker served in this process by the functions the API's views call."""

    def __init__(self, name: str, project_id: int, *, seed: int = 0) -> None:
        self.name = name
        self.project_id = project_id
        self.user: User | None = None
        # Routing's draw of gold or real work, seeded so that a run can be repeated.
        self.rand = random.Random(f"routing:{seed}:{name}").random

    def connect(self) -> None:
        self.user, _ = account_ensure(self.name, Role.WORKER)

    def next(self) -> Lease | None:
        assert self.user is not None
        try:
            project = project_for_worker(self.user, self.project_id)
            assignment = routing.assignment_next(project=project, worker=self.user, rand=self.rand)
        except (Forbidden, NotFound) as exc:
            raise WorkerStopped(exc.detail) from None
        if assignment is None:
            return None
        task = assignment.task
        return Lease(
            id=assignment.pk, image_id=task.image_id, region=[float(v) for v in task.region],
            width=task.image.width, height=task.image.height,
            expires_at=assignment.expires_at.timestamp(),
            prelabels=prelabels.lease_prelabels(project, task),
        )  # fmt: skip

    def submit(
        self, lease: Lease, annotations: list[Item], *, key: str, time_spent_ms: int
    ) -> bool:
        assert self.user is not None
        try:
            assignment = routing.assignment_submit(
                assignment_id=lease.id, worker=self.user, annotations=annotations,
                idempotency_key=key, time_spent_ms=time_spent_ms,
                prelabel_version=lease.prelabel_version,
            )  # fmt: skip
        except Conflict:
            return False  # late, and the task no longer needs an answer
        except DomainError as exc:
            raise SimError(f"{self.name}'s answer was refused: {exc.errors or exc.detail}") from exc
        if (assignment.time_spent_ms or 0) < time_spent_ms:
            # The server caps a reported time at the lease's age, so that a client cannot
            # claim more time than it held the task. In this process the crowd runs faster
            # than real time: the lease is milliseconds old when the answer comes, though the
            # worker spent ``time_spent_ms`` of simulated time on it. Record the time the
            # simulated client reports, as its server would after that long, or the project's
            # time per task and hourly rate would be those of the simulator, not of the work.
            Assignment.objects.filter(pk=assignment.pk).update(time_spent_ms=time_spent_ms)
        return True

    def skip(self, lease: Lease) -> None:
        assert self.user is not None
        with contextlib.suppress(Conflict):  # answered or gone meanwhile
            routing.assignment_skip(assignment_id=lease.id, worker=self.user)

    def close(self) -> None:
        pass


class HttpStats:
    """Responses by endpoint and status, shared by the HTTP clients of a run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.counts[f"{endpoint} {status}"] += 1

    def as_json(self) -> dict[str, int]:
        with self.lock:
            return dict(sorted(self.counts.items()))


class HttpClient:
    """A worker speaking to a running server through the public API, with a token."""

    def __init__(self, name: str, project_id: int, *, base_url: str, stats: HttpStats) -> None:
        self.name = name
        self.project_id = project_id
        self.base = base_url.rstrip("/") + "/api/v1"
        self.stats = stats
        self.session = requests.Session()
        self.session.trust_env = False  # talk to the server named, not through a proxy

    def _request(
        self,
        endpoint: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One call, retried with the same body and headers (so the same Idempotency-Key)
        after a dropped connection, a 429 or a 503."""
        for attempt in range(HTTP_ATTEMPTS):
            try:
                response = self.session.request(
                    method, self.base + path, json=body, headers=headers, timeout=HTTP_TIMEOUT
                )
            except requests.RequestException as exc:
                if attempt == HTTP_ATTEMPTS - 1:
                    raise SimError(f"{self.name}: {method} {path} failed: {exc}") from None
                time.sleep(0.5 * 2**attempt)
                continue
            self.stats.add(endpoint, response.status_code)
            if response.status_code in (429, 503) and attempt < HTTP_ATTEMPTS - 1:
                time.sleep(self._retry_after(response, attempt))
                continue
            return response
        raise AssertionError("unreachable")

    @staticmethod
    def _retry_after(response: requests.Response, attempt: int) -> float:
        try:
            wait = float(response.headers.get("Retry-After", ""))
        except ValueError:
            wait = 2.0**attempt
        return min(max(wait, 0.1), MAX_RETRY_AFTER)

    def _fail(self, what: str, response: requests.Response) -> SimError:
        return SimError(
            f"{self.name}: {what} answered {response.status_code}: {response.text[:300]}"
        )

    def connect(self) -> None:
        password = sim_password(self.name)
        credentials = {"username": self.name, "password": password}
        registered = self._request(
            "register", "POST", "/auth/register/",
            {**credentials, "email": f"{self.name}@sim.invalid"},
        )  # fmt: skip
        if registered.status_code not in (201, 400):
            raise self._fail("registration", registered)
        token = self._request("token", "POST", "/auth/token/", credentials)
        if token.status_code != 200:
            raise self._fail("log-in", token)
        self.session.headers["Authorization"] = f"Token {token.json()['token']}"

    def next(self) -> Lease | None:
        response = self._request("next", "POST", f"/projects/{self.project_id}/assignments/next/")
        if response.status_code == 204:
            return None
        if response.status_code in (403, 404):
            raise WorkerStopped(response.json().get("detail", "refused"))
        if response.status_code != 201:
            raise self._fail("next", response)
        data = response.json()
        task = data["task"]
        return Lease(
            id=int(data["id"]), image_id=int(task["image"]),
            region=[float(v) for v in task["region"]], width=int(task["width"]),
            height=int(task["height"]),
            expires_at=datetime.fromisoformat(data["expires_at"]).timestamp(),
            prelabels=list(data.get("prelabels") or []),
        )  # fmt: skip

    def submit(
        self, lease: Lease, annotations: list[Item], *, key: str, time_spent_ms: int
    ) -> bool:
        body: dict[str, Any] = {"annotations": annotations, "time_spent_ms": time_spent_ms}
        if lease.prelabel_version is not None:
            body["prelabel_version"] = lease.prelabel_version
        response = self._request(
            "submit", "POST", f"/assignments/{lease.id}/submit/", body,
            headers={"Idempotency-Key": key},
        )  # fmt: skip
        if response.status_code == 200:
            return True
        if response.status_code in (403, 404, 409):
            return False
        raise self._fail("submit", response)

    def skip(self, lease: Lease) -> None:
        response = self._request("skip", "POST", f"/assignments/{lease.id}/skip/")
        if response.status_code not in (200, 404, 409):
            raise self._fail("skip", response)

    def close(self) -> None:
        self.session.close()
