"""Set a simulated crowd to work on a project and measure what the product made of it.

The workers are :class:`qa.sim.crowd.SimWorker` objects; each works through a client that
speaks to the product the way a real worker's client does:

- ``services``: in this process, through the service functions the API's views call
  (``routing.assignment_next``, ``assignment_submit``, ``assignment_skip``); the fastest;
- ``http``: through the public API of a running server with token authentication: each
  worker registers (or logs in), asks ``POST /projects/{id}/assignments/next/``, submits with
  an ``Idempotency-Key`` or skips, backs off on 204, stops on 403 (suspended) or 404, counts
  409 (late), and waits out 429 and 503 for their ``Retry-After``.

A run is a discrete-event simulation: every worker has a time at which it next acts (ask for
a task, or hand in the answer it is working on), time per task is drawn from its behaviour,
and ``speed`` maps simulated seconds to real ones (0: as fast as possible). Events run in
simulated-time order on ``concurrency`` threads, so workers hold leases side by side as they
would. The run ends when the project's real tasks are done (or the share of them asked
for), when the answer limit is reached, when no worker is left, or when every remaining
worker has been told "nothing now" since the last change and no abandoned lease is still
waiting to expire.

The manager's part (creating the project from generated scenes, gold from their truth,
approving, a fresh consensus run) runs in this process through the services, whichever way
the workers go; so ``http`` needs the server's database. The truth of a simulated project is
kept beside the database in ``VAR_DIR/sim/<project>.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import requests
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, transaction
from django.db.models import Count, Q

from crowd.errors import Conflict, DomainError, Forbidden, NotFound
from crowd.models import Role, User
from crowd.money import format_amount
from crowd.services import user_create
from payouts.services import reviews_bulk
from qa import merge
from qa import services as qa_services
from qa.models import ConsensusResult, ConsensusRun, GoldAnswer, WorkerScore, WorkerStatus
from qa.sim import scenes
from qa.sim.crowd import Item, SimWorker, TaskView, crowd_make
from tasks import ingest, routing
from tasks.hooks import progress_contributions
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Image,
    ImageStatus,
    Kind,
    Project,
    ProjectState,
    Task,
    TaskState,
)
from tasks.schema import project_schema
from tasks.selectors import project_for_worker
from tasks.services import project_create, project_transition

# Settings of a project the simulator creates; the lease is short so that a dropout's
# abandoned task comes back soon.
PROJECT_DEFAULTS: dict[str, Any] = {
    "min_overlap": 2, "max_overlap": 4, "agreement_threshold": 0.9, "gold_rate": 0.2,
    "min_worker_score": 0.6, "assignment_seconds": 30, "reward": "0.05", "currency": "USD",
}  # fmt: skip
INSTRUCTIONS = {
    "classification": "Which shape is the large one in the middle: circle, square, triangle "
    "or star?",
    "bbox": "Draw a tight box around every shape, including shapes cut by the image's edge.",
    "polygon": "Outline every shape, including the visible part of shapes cut by the edge.",
    "keypoints": "Mark each shape's points: a circle's top, right, bottom and left; the "
    "corners of squares and triangles and the tips of stars, clockwise from the topmost. "
    "Points hidden under another shape are occluded (1); points outside the image absent (0).",
}
IDLE_BACKOFF = (2.0, 30.0)  # simulated seconds after a 204: first wait, longest wait
THINK_SECONDS = 0.5  # between handing in an answer and asking for the next task
REVIEW_EVERY = 25  # answers between the manager's reviews while the crowd works
HTTP_ATTEMPTS = 6
HTTP_TIMEOUT = 30.0
MAX_RETRY_AFTER = 120.0


class SimError(Exception):
    """The simulation cannot go on; the message says why and what to do."""


# --- Truth --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """The exact annotations of a simulated project's images, by image name."""

    project_id: int
    kind: str
    images: dict[str, list[Item]]


def truth_path(project_id: int) -> Path:
    return Path(settings.VAR_DIR) / "sim" / f"{project_id}.json"


def truth_save(truth: Truth) -> Path:
    path = truth_path(truth.project_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(
        json.dumps({"project": truth.project_id, "kind": truth.kind, "images": truth.images})
    )
    os.replace(partial, path)  # readers never see half a file
    return path


def truth_load(project: Project) -> Truth:
    path = truth_path(project.pk)
    try:
        data = json.loads(path.read_text())
        truth = Truth(int(data["project"]), str(data["kind"]), dict(data["images"]))
    except FileNotFoundError:
        raise SimError(
            f"Project {project.pk} has no simulator truth ({path} is missing): only projects "
            f"created by the simulator can be simulated. Use --create KIND instead."
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SimError(f"{path} is not a simulator truth file ({exc}).") from None
    if truth.project_id != project.pk or truth.kind != project.kind:
        raise SimError(
            f"{path} belongs to a {truth.kind} project {truth.project_id}, not to this "
            f"{project.kind} project {project.pk} (was the database reset?)."
        )
    names = set(Image.objects.filter(project=project).values_list("name", flat=True))
    unknown = names - set(truth.images)
    if unknown:
        raise SimError(
            f"{len(unknown)} images of project {project.pk} are not in {path} (e.g. "
            f"{sorted(unknown)[0]!r}); the simulator knows the truth only of images it made."
        )
    return truth


# --- Accounts and projects ----------------------------------------------------------------------


def sim_password(username: str) -> str:
    """The password of a simulated account: derived from the site's secret key, so a later
    run (in-process or over HTTP, with the same key) can log in again, and nobody else can."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"crowdsim:{username}".encode(), hashlib.sha256
    ).hexdigest()
    return f"sim-{digest[:24]}"


def account_ensure(username: str, role: str, *, password: str | None = None) -> tuple[User, bool]:
    """The account, created if missing (returns whether it was); it must have ``role``."""
    user = User.objects.filter(username__iexact=username).first()
    if user is not None:
        if user.role != role:
            raise SimError(f"{user.username!r} exists but is a {user.role}, not a {role}.")
        return user, False
    try:
        user = user_create(
            username=username, password=password or sim_password(username),
            email=f"{username}@sim.invalid", role=role,
        )  # fmt: skip
    except DomainError as exc:
        raise SimError(f"Cannot create {username!r}: {exc.errors or exc.detail}") from None
    return user, True


def sim_project_create(
    *,
    kind: str,
    images: int,
    gold: int,
    manager: User,
    seed: int = 0,
    name: str = "",
    width: int = 480,
    height: int = 360,
    overrides: dict[str, Any] | None = None,
) -> tuple[Project, Truth]:
    """A started project of generated scenes with gold from their truth, and that truth.

    One transaction: a failure leaves no project behind. The images go through the real
    upload service; their processing job is run here, inside the transaction, so the jobs
    queued for after the commit find them done.
    """
    if kind not in scenes.KINDS:
        raise SimError(f"Unknown kind {kind!r}; one of {', '.join(scenes.KINDS)}.")
    if not 1 <= images <= 10_000:
        raise SimError("Between 1 and 10000 images.")
    if not 0 <= gold < images:
        raise SimError("Gold must be at least 0 and fewer than the images (some must be work).")
    files = scenes.scenes_write(images, seed=seed, kind=kind, width=width, height=height)
    data: dict[str, Any] = {
        "name": name or f"Simulated {kind}: {images} images, seed {seed}",
        "kind": kind,
        "labels": scenes.labels_json()
        if kind == Kind.KEYPOINTS
        else [{"name": x["name"], "color": x["color"]} for x in scenes.labels_json()],
        "instructions": INSTRUCTIONS[kind],
        **PROJECT_DEFAULTS,
        **(overrides or {}),
    }
    with transaction.atomic():
        try:
            project = project_create(owner=manager, data=data)
        except DomainError as exc:
            raise SimError(f"The project was refused: {exc.errors or exc.detail}") from None
        uploads = [SimpleUploadedFile(f.name, f.data) for f in files]
        report = ingest.images_upload(project=project, user=manager, files=uploads)
        created = [row for row in report.files if row.result == "created" and row.id]
        if len(created) != images:
            problems = [f"{row.name}: {row.result} {row.error or ''}" for row in report.files]
            raise SimError(f"Not every generated image was accepted: {problems}")
        for row in created:
            assert row.id is not None
            ingest.image_process(image_id=row.id)
        ingest.near_duplicates_scan(project_id=project.pk)
        ids = dict(
            Image.objects.filter(project=project, status=ImageStatus.READY).values_list(
                "name", "pk"
            )
        )
        if len(ids) != images:
            raise SimError("Some generated images failed processing.")
        truth = Truth(project.pk, kind, {f.name: f.scene.truth(kind) for f in files})
        for image_name in random.Random(f"gold:{seed}").sample(sorted(truth.images), gold):
            qa_services.gold_set(
                project=project,
                image_id=ids[image_name],
                annotations=truth.images[image_name],
                user=manager,
            )
        project = project_transition(project=project, action="start")
        truth_save(truth)
    return project, truth


# --- Clients ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    id: int
    image_id: int
    region: list[float]
    width: int
    height: int
    expires_at: float  # seconds since the epoch


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
        )  # fmt: skip

    def submit(
        self, lease: Lease, annotations: list[Item], *, key: str, time_spent_ms: int
    ) -> bool:
        assert self.user is not None
        try:
            routing.assignment_submit(
                assignment_id=lease.id, worker=self.user, annotations=annotations,
                idempotency_key=key, time_spent_ms=time_spent_ms,
            )  # fmt: skip
        except Conflict:
            return False  # late, and the task no longer needs an answer
        except DomainError as exc:
            raise SimError(f"{self.name}'s answer was refused: {exc.errors or exc.detail}") from exc
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
        )  # fmt: skip

    def submit(
        self, lease: Lease, annotations: list[Item], *, key: str, time_spent_ms: int
    ) -> bool:
        response = self._request(
            "submit", "POST", f"/assignments/{lease.id}/submit/",
            {"annotations": annotations, "time_spent_ms": time_spent_ms},
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


# --- The run ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    sim: SimWorker
    client: Client
    ready_at: float = 0.0
    lease: Lease | None = None
    pending: list[Item] | None = None
    seconds: float = 0.0
    idle_version: int = -1
    idle_streak: int = 0
    stopped: str = ""
    answers: int = 0
    skipped: int = 0
    abandoned: int = 0
    late: int = 0


@dataclass
class RunStats:
    via: str
    seconds: float = 0.0
    answers: int = 0
    skipped: int = 0
    abandoned: int = 0
    late: int = 0
    ended: str = ""
    workers: list[dict[str, Any]] = field(default_factory=list)
    http: dict[str, int] = field(default_factory=dict)


Progress = Callable[[int, int, int, str], None]  # done, total, answers, note


def _real_tasks(project_id: int) -> tuple[int, int]:
    counts = Task.objects.filter(project_id=project_id, is_gold=False).aggregate(
        total=Count("pk"), done=Count("pk", filter=Q(state=TaskState.DONE))
    )
    return int(counts["done"]), int(counts["total"])


class CrowdRun:
    """One run of a crowd on a project (see the module's docstring)."""

    def __init__(
        self,
        *,
        project: Project,
        truth: Truth,
        workers: Sequence[SimWorker],
        clients: Sequence[Client],
        speed: float = 0.0,
        concurrency: int = 1,
        max_answers: int = 0,
        until_done: float = 1.0,
        progress: Progress | None = None,
        review: Callable[[], int] | None = None,
    ) -> None:
        self.project_id = project.pk
        schema = project_schema(project)
        self.kind = project.kind
        self.keypoints = {label: list(names) for label, names in schema.keypoints.items()}
        names = dict(Image.objects.filter(project=project).values_list("pk", "name"))
        self.truth_of = {pk: truth.images[name] for pk, name in names.items()}
        self.workers = [_Worker(w, c) for w, c in zip(workers, clients, strict=True)]
        self.speed = speed
        self.concurrency = max(1, concurrency)
        self.max_answers = max_answers
        self.until_done = until_done
        self.progress = progress
        # The manager's review while the crowd works: returns how many answers it rejected
        # (their tasks reopen and ask the crowd for another answer).
        self.review = review
        self.review_lock = threading.Lock()
        self.reviewed_at = 0
        self.key = uuid.uuid4().hex[:12]
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, _Worker]] = []
        self.parked: list[tuple[float, _Worker]] = []
        self.order = itertools.count()
        self.version = 0  # bumped whenever work may have become available
        self.busy = 0
        self.reserved = 0  # answers handed in or being worked on
        self.answers = 0
        self.abandoned: list[float] = []  # expiry times of abandoned leases
        self.error: BaseException | None = None
        self.ended = ""
        self.note = ""
        self.start = 0.0
        self.last_tick = 0.0

    # The heap and every counter above are guarded by ``cond``.

    def run(self) -> RunStats:
        self.start = time.monotonic()
        for w in self.workers:
            w.client.connect()
            w.ready_at = w.sim.rng.uniform(0, 2)  # workers arrive within two seconds
            heapq.heappush(self.heap, (w.ready_at, next(self.order), w))
        if self.concurrency == 1:
            self._loop()
        else:
            threads = [
                threading.Thread(target=self._loop, args=(True,), daemon=True)
                for _ in range(self.concurrency)
            ]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                self._tick(force=True)
                for thread in threads:
                    thread.join(timeout=0.25)
        for w in self.workers:
            w.client.close()
        if self.error is not None:
            raise self.error
        self._tick(force=True)
        return self._stats()

    def _loop(self, threaded: bool = False) -> None:
        try:
            while (picked := self._pick()) is not None:
                worker, at = picked
                if self.speed > 0:
                    time.sleep(max(0.0, self.start + at * self.speed - time.monotonic()))
                try:
                    if worker.pending is None:
                        self._ask(worker, at)
                    else:
                        self._hand_in(worker, at)
                finally:
                    with self.cond:
                        self.busy -= 1
                        if not worker.stopped:
                            heapq.heappush(self.heap, (worker.ready_at, next(self.order), worker))
                        self.cond.notify_all()
                if not threaded:
                    self._tick()
        except BaseException as exc:
            with self.cond:
                self.error = self.error or exc
                self.cond.notify_all()
        finally:
            if threaded:
                connections.close_all()  # this thread's connections only

    def _pick(self) -> tuple[_Worker, float] | None:
        """The next worker to act and when, or None when the run is over.

        A worker told "nothing now" is parked until something changes (an answer, a skip, a
        worker stopping): asking again before that would get the same answer. When every
        worker left is parked and nobody is acting, the run is over, unless an abandoned
        lease will expire and return its task: then it waits for that.
        """
        with self.cond:
            while True:
                if self.error is not None or self.ended:
                    return None
                if all(w.stopped for w in self.workers):
                    self._end("every worker stopped")
                    return None
                while self.heap:
                    at, _, worker = heapq.heappop(self.heap)
                    if worker.pending is None and worker.idle_version == self.version:
                        self.parked.append((at, worker))
                        continue
                    self.busy += 1
                    return worker, at
                if self.busy:
                    self.cond.wait(timeout=0.5)  # another thread's step may change things
                    continue
                if self._reviewed():
                    continue  # rejected answers reopened tasks: workers ask again
                now = time.time()
                self.abandoned = [t for t in self.abandoned if t > now]
                if not self.abandoned:
                    self._end("no work left for these workers")
                    return None
                wait = min(self.abandoned) - now + 0.5
                self.note = f"waiting {wait:.0f}s for abandoned leases to expire"
                self.cond.wait(timeout=wait)
                self.note = ""
                self._changed()

    def _changed(self) -> None:
        """Work may have become available: parked workers ask again. Caller holds ``cond``."""
        self.version += 1
        for at, worker in self.parked:
            heapq.heappush(self.heap, (at, next(self.order), worker))
        self.parked.clear()
        self.cond.notify_all()

    def _end(self, why: str) -> None:
        self.ended = self.ended or why
        self.cond.notify_all()

    def _ask(self, w: _Worker, at: float) -> None:
        done, total = _real_tasks(self.project_id)
        if total and done >= self.until_done * total:
            with self.cond:
                if self._reviewed():
                    return  # rejected answers reopened tasks
                # Only gold would be left to hand out: the project's work is done.
                self._end(f"{done}/{total} real tasks done")
            return
        with self.cond:
            if self.max_answers and self.reserved >= self.max_answers:
                w.stopped = "answer limit reached"
                if self.answers >= self.max_answers:
                    self._end(f"{self.max_answers} answers given (--max-answers)")
                return
            self.reserved += 1
            version = self.version
        try:
            lease = w.client.next()
        except WorkerStopped as exc:
            w.stopped = str(exc) or "refused"
            self._release(changed=True)
            return
        if lease is None:
            w.idle_version = version
            w.idle_streak += 1
            first, longest = IDLE_BACKOFF
            w.ready_at = at + min(longest, first * 2 ** min(w.idle_streak - 1, 8))
            self._release(changed=False)
            return
        w.idle_streak = 0
        if w.sim.abandons():
            w.abandoned += 1
            w.stopped = "dropped out, leaving a leased task unanswered"
            with self.cond:
                self.abandoned.append(lease.expires_at)
            self._release(changed=False)
            return
        if w.sim.skips():
            w.client.skip(lease)
            w.skipped += 1
            w.ready_at = at + THINK_SECONDS
            self._release(changed=True)
            return
        view = TaskView(
            kind=self.kind, keypoints=self.keypoints, width=lease.width, height=lease.height,
            region=lease.region,
        )  # fmt: skip
        truth = self.truth_of.get(lease.image_id)
        if truth is None:
            raise SimError(f"Image {lease.image_id} has no simulator truth.")
        w.lease, w.pending = lease, w.sim.answer(view, truth)
        w.seconds = w.sim.seconds()
        w.ready_at = at + w.seconds

    def _release(self, *, changed: bool) -> None:
        with self.cond:
            self.reserved -= 1
            if changed:
                self._changed()

    def _hand_in(self, w: _Worker, at: float) -> None:
        assert w.lease is not None
        assert w.pending is not None
        accepted = w.client.submit(
            w.lease, w.pending, key=f"sim-{self.key}-{w.lease.id}",
            time_spent_ms=int(w.seconds * 1000),
        )  # fmt: skip
        with self.cond:
            if accepted:
                self.answers += 1
                w.answers += 1
            else:
                self.reserved -= 1
                w.late += 1
            self._changed()
        w.lease, w.pending = None, None
        w.ready_at = at + THINK_SECONDS
        if self.review is not None and self.answers - self.reviewed_at >= REVIEW_EVERY:
            with self.cond:
                self._reviewed()

    def _reviewed(self) -> bool:
        """The manager reviews what came in since the last review; True if that rejected
        answers (and so reopened tasks). Caller holds ``cond``."""
        if self.review is None or not self.review_lock.acquire(blocking=False):
            return False
        try:
            self.reviewed_at = self.answers
            if self.review() == 0:
                return False
            self._changed()
            return True
        finally:
            self.review_lock.release()

    def _tick(self, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_tick < 0.2:
            return
        self.last_tick = now
        done, total = _real_tasks(self.project_id)
        self.progress(done, total, self.answers, self.note)

    def _stats(self) -> RunStats:
        return RunStats(
            via="",
            seconds=round(time.monotonic() - self.start, 2),
            answers=self.answers,
            skipped=sum(w.skipped for w in self.workers),
            abandoned=sum(w.abandoned for w in self.workers),
            late=sum(w.late for w in self.workers),
            ended=self.ended,
            workers=[
                {"worker": w.sim.name, "behaviour": w.sim.behaviour.name, "answers": w.answers,
                 "skipped": w.skipped, "abandoned": w.abandoned, "late": w.late,
                 "stopped": w.stopped or None}
                for w in self.workers
            ],
        )  # fmt: skip


def crowd_work(
    *,
    project: Project,
    truth: Truth,
    crowd: Sequence[tuple[str, int]],
    via: str = "services",
    url: str = "",
    seed: int = 0,
    speed: float = 0.0,
    concurrency: int = 1,
    max_answers: int = 0,
    until_done: float = 1.0,
    progress: Progress | None = None,
    manager: User | None = None,
) -> RunStats:
    """Run the crowd on the project until it runs out of work, gives ``max_answers``
    answers, or has done ``until_done`` of the project's real tasks. With a ``manager``, the
    manager rejects suspended workers' answers while the crowd works (a rejected answer
    stops counting, so its task asks the crowd for another)."""
    if project.state != ProjectState.ACTIVE:
        raise SimError(f"Project {project.pk} is {project.state}; start it first.")
    workers = crowd_make(crowd, seed=seed)
    stats = HttpStats()
    clients: list[Client]
    if via == "http":
        if not url:
            raise SimError("--via http needs the server's --url.")
        clients = [HttpClient(w.name, project.pk, base_url=url, stats=stats) for w in workers]
    elif via == "services":
        clients = [ServicesClient(w.name, project.pk, seed=seed) for w in workers]
    else:
        raise SimError(f"Unknown --via {via!r}; services or http.")
    run = CrowdRun(
        project=project, truth=truth, workers=workers, clients=clients, speed=speed,
        concurrency=concurrency, max_answers=max_answers, until_done=until_done,
        progress=progress,
        review=None if manager is None else lambda: reviews_suspended(project=project, by=manager),
    )  # fmt: skip
    result = run.run()
    result.via = via
    result.http = stats.as_json()
    return result


# --- The manager's part -------------------------------------------------------------------------


SUSPENDED_REASON = "Suspended for low accuracy on check tasks; these answers are not paid."


def _submitted(project: Project) -> list[tuple[int, int]]:
    return list(
        Assignment.objects.filter(project=project, status=AssignmentStatus.SUBMITTED)
        .order_by("pk")
        .values_list("pk", "worker_id")
    )


def reviews_suspended(*, project: Project, by: User) -> int:
    """The manager rejects the submitted answers of suspended workers; returns how many."""
    # The simulator plays the manager too, through the review service the review API calls.
    suspended = qa_services.suspended_workers(project_id=project.pk)
    ids = [pk for pk, worker in _submitted(project) if worker in suspended]
    if not ids:
        return 0
    result = reviews_bulk(
        project=project, by=by, approve=False, reason=SUSPENDED_REASON, assignment_ids=ids
    )
    return len(result["done"])


def reviews_finish(*, project: Project, manager: User) -> dict[str, int]:
    """The manager reviews every submitted answer: suspended workers' are rejected, the rest
    approved, which credits their rewards (and any automatic bonus) to the ledger. Counts
    the rejections made while the crowd worked too."""
    suspended = qa_services.suspended_workers(project_id=project.pk)
    submitted = _submitted(project)
    approved = reviews_bulk(
        project=project, by=manager, approve=True, reason="",
        assignment_ids=[pk for pk, worker in submitted if worker not in suspended],
    )  # fmt: skip
    rejected = reviews_bulk(
        project=project, by=manager, approve=False, reason=SUSPENDED_REASON,
        assignment_ids=[pk for pk, worker in submitted if worker in suspended],
    )  # fmt: skip
    return {
        "approved": len(approved["done"]),
        "rejected": Assignment.objects.filter(
            project=project, status=AssignmentStatus.REJECTED, reviewed_by=manager
        ).count(),
        "refused": len(approved["refused"]) + len(rejected["refused"]),
    }


def consensus_fresh(*, project: Project, user: User | None) -> ConsensusRun:
    """A consensus run requested as ``POST /projects/{id}/consensus/`` does, computed here
    before its job starts (the job then finds it done), so the results are there on return."""
    with transaction.atomic():
        run = merge.consensus_run_request(project=project, user=user)
        done = merge.consensus_compute(run_id=run.pk)
    assert done is not None
    return done


def jobs_settle(timeout: float = 30.0) -> None:
    """Embedded default: let the in-process job worker finish the jobs queued so far (they
    find their work done), then stop it, so that a command exits cleanly. Delayed messages
    (the periodic sweep) are left to the server's own worker."""
    from crowd.jobs import in_process_worker

    middleware = in_process_worker()
    if middleware is None or middleware.worker is None:
        return
    import dramatiq

    broker = dramatiq.get_broker()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        queue.unfinished_tasks for name, queue in broker.queues.items() if not name.endswith(".DQ")
    ):
        time.sleep(0.05)
    quiet = logging.getLogger("dramatiq.worker")  # no "Shutting down..." in the output
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        middleware.worker.stop(timeout=int(max(1.0, deadline - time.monotonic()) * 1000))
    finally:
        quiet.setLevel(level)
    middleware.worker = None


# --- Measuring ----------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def quality_measure(*, project: Project, truth: Truth, run: ConsensusRun) -> dict[str, Any]:
    """The run's merged labels against the truth, over the real images whose tasks are all
    done. Shapes are matched the way gold is scored (``qa.services.answer_compare``)."""
    images = {
        pk: (name, w, h)
        for pk, name, w, h in Image.objects.filter(project=project).values_list(
            "pk", "name", "width", "height"
        )
    }
    gold = set(GoldAnswer.objects.filter(project=project).values_list("image_id", flat=True))
    open_tasks = (
        Task.objects.filter(project=project, is_gold=False)
        .values("image_id")
        .annotate(still_open=Count("pk", filter=Q(state=TaskState.OPEN)))
    )
    done = sorted(
        row["image_id"]
        for row in open_tasks
        if row["still_open"] == 0 and row["image_id"] not in gold
    )
    merged = dict(
        ConsensusResult.objects.filter(run=run, image_id__in=done).values_list(
            "image_id", "annotations"
        )
    )
    result: dict[str, Any] = {"images": len(done)}
    if project.kind == Kind.CLASSIFICATION:
        right = 0
        for image_id in done:
            answer = merged.get(image_id) or []
            expected = truth.images[images[image_id][0]][0]["label"]
            right += bool(answer) and answer[0]["label"] == expected
        result["accuracy"] = _ratio(right, len(done))
        return result
    matched = truth_items = answer_items = 0
    similarity = 0.0
    for image_id in done:
        name, width, height = images[image_id]
        score = qa_services.answer_compare(
            project=project, reference=truth.images[name], answer=merged.get(image_id) or [],
            width=width, height=height,
        )  # fmt: skip
        matched += score.matched
        truth_items += score.matched + score.missed + score.wrong_label
        answer_items += score.matched + score.extra + score.wrong_label
        similarity += (score.mean_iou or 0.0) * score.matched
    precision, recall = _ratio(matched, answer_items), _ratio(matched, truth_items)
    f1 = (
        round(2 * precision * recall / (precision + recall), 4)
        if precision and recall
        else (0.0 if done else None)
    )
    mean = "mean_oks" if project.kind == Kind.KEYPOINTS else "mean_iou"
    result.update(
        {"f1": f1, "precision": precision, "recall": recall, mean: _ratio(similarity, matched),
         "objects": truth_items, "threshold": project.iou_threshold}
    )  # fmt: skip
    return result


def crowd_report(
    *,
    project: Project,
    truth: Truth,
    stats: RunStats,
    run: ConsensusRun,
    reviews: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Everything the command prints, as JSON-able data."""
    project.refresh_from_db()
    done, total = _real_tasks(project.pk)
    answered = Assignment.objects.filter(project=project, status__in=AssignmentStatus.answered())
    real_answers = answered.filter(task__is_gold=False)
    done_answers = real_answers.filter(task__state=TaskState.DONE).count()
    names = {w["worker"]: w for w in stats.workers}
    users = dict(User.objects.filter(username__in=list(names)).values_list("pk", "username"))
    scores = {
        users[row.worker_id]: row
        for row in WorkerScore.objects.filter(project=project, worker_id__in=list(users))
    }
    behaviours: dict[str, dict[str, Any]] = {}
    suspended = []
    for name, w in names.items():
        row = scores.get(name)
        entry = behaviours.setdefault(
            w["behaviour"],
            {"behaviour": w["behaviour"], "workers": 0, "answers": 0, "gold_seen": 0,
             "gold_passed": 0, "score_sum": 0.0, "suspended": 0},
        )  # fmt: skip
        entry["workers"] += 1
        entry["answers"] += w["answers"]
        if row is None:
            continue
        entry["gold_seen"] += row.gold_seen
        entry["gold_passed"] += row.gold_passed
        entry["score_sum"] += row.score
        if row.status == WorkerStatus.SUSPENDED:
            entry["suspended"] += 1
            suspended.append(
                {"worker": name, "behaviour": w["behaviour"], "score": round(row.score, 3),
                 "gold_seen": row.gold_seen, "gold_passed": row.gold_passed,
                 "reason": row.status_reason}
            )  # fmt: skip
    for entry in behaviours.values():
        entry["mean_score"] = round(entry.pop("score_sum") / entry["workers"], 3)
    spend = progress_contributions.collect(project)
    submitted = answered.count()
    currency = project.currency
    return {
        "project": {"id": project.pk, "name": project.name, "kind": project.kind,
                    "images": len(truth.images),
                    "gold": GoldAnswer.objects.filter(project=project).count()},
        "run": {"via": stats.via, "seconds": stats.seconds, "answers": stats.answers,
                "gold_answers": answered.filter(task__is_gold=True).count(),
                "skipped": stats.skipped, "abandoned": stats.abandoned, "late": stats.late,
                "ended": stats.ended, **({"http": stats.http} if stats.http else {})},
        "tasks": {"total": total, "done": done,
                  "answers_per_done_task": _ratio(done_answers, done),
                  "answers_to_real_tasks": real_answers.count()},
        "consensus": {"run": run.pk, "method": run.method, "status": run.status},
        "quality": quality_measure(project=project, truth=truth, run=run),
        "cost": {"currency": currency, "reward": format_amount(project.reward, currency),
                 "answers": submitted,
                 "submitted_rewards": format_amount(submitted * project.reward, currency),
                 "spent": spend["spent"]["amount"], "committed": spend["committed"]["amount"]},
        "reviews": reviews,
        "behaviours": sorted(behaviours.values(), key=lambda e: e["behaviour"]),
        "suspended": suspended,
        "workers": stats.workers,
    }  # fmt: skip


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_text(report: dict[str, Any]) -> str:
    """The report as a few aligned lines and a table per behaviour."""
    p, r, t, q, c = (report[k] for k in ("project", "run", "tasks", "quality", "cost"))
    lines = [
        f"Project   {p['id']} {p['name']!r} ({p['kind']}): {p['images']} images, {p['gold']} gold",
        f"Run       via {r['via']}, {r['seconds']} s, {r['answers']} answers "
        f"({r['gold_answers']} gold), {r['skipped']} skipped, {r['abandoned']} abandoned, "
        f"{r['late']} late; ended: {r['ended']}",
        f"Tasks     {t['done']}/{t['total']} real tasks done, "
        f"{_fmt(t['answers_per_done_task'], 2)} answers per done task",
    ]
    if p["kind"] == "classification":
        lines.append(f"Quality   accuracy {_fmt(q['accuracy'])} over {q['images']} done images")
    else:
        similar = "mean OKS" if p["kind"] == "keypoints" else "mean IoU"
        value = q.get("mean_oks", q.get("mean_iou"))
        lines.append(
            f"Quality   F1@{q['threshold']} {_fmt(q['f1'])} (precision {_fmt(q['precision'])}, "
            f"recall {_fmt(q['recall'])}), {similar} {_fmt(value)} of matches, over "
            f"{q['images']} done images ({q['objects']} objects)"
        )
    lines.append(
        f"Cost      reward {c['reward']} {c['currency']}; {c['answers']} answers submitted = "
        f"{c['submitted_rewards']}; spent (ledger) {c['spent']}, committed {c['committed']}"
    )
    if report["reviews"]:
        v = report["reviews"]
        lines.append(f"Reviews   {v['approved']} approved, {v['rejected']} rejected")
    if r.get("http"):
        lines.append("HTTP      " + ", ".join(f"{k}: {n}" for k, n in r["http"].items()))
    header = ("behaviour", "workers", "answers", "gold seen", "gold passed", "mean score",
              "suspended")  # fmt: skip
    rows = [header] + [
        (e["behaviour"], e["workers"], e["answers"], e["gold_seen"], e["gold_passed"],
         _fmt(e["mean_score"]), e["suspended"])
        for e in report["behaviours"]
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines.append("")
    lines += ["  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)) for row in rows]
    if report["suspended"]:
        lines.append("")
        lines.append("Suspended:")
        lines += [
            f"  {s['worker']} ({s['behaviour']}): score {s['score']}, {s['gold_passed']}/"
            f"{s['gold_seen']} gold passed. {s['reason']}"
            for s in report["suspended"]
        ]
    return "\n".join(lines)


class ProgressBar:
    """A one-line progress bar for a terminal (a plain line every few seconds otherwise)."""

    def __init__(self, write: Callable[[str], object], *, tty: bool, width: int = 30) -> None:
        self.write = write
        self.tty = tty
        self.width = width
        self.start = time.monotonic()
        self.last_line = 0.0
        self.shown = False

    def __call__(self, done: int, total: int, answers: int, note: str) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        filled = int(self.width * done / total) if total else self.width
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} tasks  "
            f"{answers} answers  {answers / elapsed:.1f}/s"
        ) + (f"  {note}" if note else "")
        if self.tty:
            self.write("\r" + line.ljust(100))
            self.shown = True
        elif time.monotonic() - self.last_line >= 5:
            self.write(line + "\n")
            self.last_line = time.monotonic()

    def close(self) -> None:
        if self.shown:
            self.write("\n")
