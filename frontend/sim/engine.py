"""The event engine: a simulated crowd works a project until the run should stop.

A run is a discrete-event simulation: every worker has a time at which it next acts (ask for
a task, or hand in the answer it is working on), time per task is drawn from its behaviour,
and ``speed`` maps simulated seconds to real ones (0: as fast as possible). Events run in
simulated-time order on ``concurrency`` threads, so workers hold leases side by side as they
would. The run ends when the project's real tasks are done (or the share of them asked
for), when the answer limit is reached, when no worker is left, or when every remaining
worker has been told "nothing now" since the last change and no abandoned lease is still
waiting to expire. That wait is in real time (the server's clock expires the lease), so the
progress note counts it down, refreshed every second.

Each worker acts through a client (``frontend.sim.clients``); with a manager, the manager's
review (``frontend.sim.manager``) runs while the crowd works. ``crowd_work`` is the entry
point.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.models import Count, F, Q

from crowd.models import User
from frontend.sim.clients import Client, HttpClient, HttpStats, Lease, ServicesClient, WorkerStopped
from frontend.sim.errors import SimError
from frontend.sim.manager import reviews_suspended
from frontend.sim.truth import Truth
from qa.sim.crowd import Item, SimWorker, TaskView, crowd_make, kept, marks
from tasks.models import Image, Project, ProjectState, Task, TaskState
from tasks.schema import project_schema

IDLE_BACKOFF = (2.0, 30.0)  # simulated seconds after a 204: first wait, longest wait
THINK_SECONDS = 0.5  # between handing in an answer and asking for the next task
REVIEW_EVERY = 25  # answers between the manager's reviews while the crowd works
LEASE_GRACE = 0.5  # real seconds after an abandoned lease's expiry before workers ask again


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
    # The assignments whose answers this run handed in and the product accepted: the report
    # counts them in the database (gold among them, which the workers cannot tell).
    assignment_ids: list[int] = field(default_factory=list)


Progress = Callable[[int, int, int, str], None]  # done, total, answers, note


def lease_wait_note(expiries: Sequence[float], now: float) -> tuple[float, str]:
    """How many real seconds until the first abandoned lease expires (with its grace), and
    the progress note that says so, rounded up so that it reaches 1s, not 0s, last."""
    wait = max(0.0, min(expiries) + LEASE_GRACE - now)
    return wait, f"waiting {math.ceil(wait)}s for abandoned leases to expire"


# How long the run waits, once nobody has work, for tasks whose last answer is in but whose
# decision (a job, after commit) is not yet made: a decision may ask for one more answer.
DECISION_WAIT_SECONDS = 60.0


def tasks_due(project_id: int) -> int:
    """Real tasks with all their answers in and no decision yet."""
    return Task.objects.filter(
        project_id=project_id, is_gold=False, state=TaskState.OPEN,
        answers__gte=F("required_overlap"),
    ).count()  # fmt: skip


def real_tasks(project_id: int) -> tuple[int, int]:
    """How many of the project's real (not gold) tasks are done, and of how many."""
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
        clock: Callable[[], float] = time.time,
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
        self.clock = clock  # the epoch seconds that leases' expiry times are in
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
        self.accepted: list[int] = []  # assignment ids of accepted answers
        self.abandoned: list[float] = []  # expiry times of abandoned leases
        self.deciding_since: float | None = None  # when everyone first waited on decisions
        self.error: BaseException | None = None
        self.ended = ""
        self.note = ""
        self.start = 0.0
        self.last_tick = 0.0
        self.threaded = self.concurrency > 1

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

    def _deciding(self) -> bool:
        """Whether tasks still wait for their decision (then wait a moment for it, and let
        the parked workers ask again). Caller holds ``cond``. Gives up after
        ``DECISION_WAIT_SECONDS`` without progress, so a server with no job worker cannot
        hold the run forever."""
        if not tasks_due(self.project_id):
            self.deciding_since = None
            return False
        now = time.monotonic()
        if self.deciding_since is None:
            self.deciding_since = now
        if now - self.deciding_since > DECISION_WAIT_SECONDS:
            return False
        self.cond.wait(timeout=0.2)
        self._changed()
        return True

    def _pick(self) -> tuple[_Worker, float] | None:
        """The next worker to act and when, or None when the run is over.

        A worker told "nothing now" is parked until something changes (an answer, a skip, a
        worker stopping): asking again before that would get the same answer. When every
        worker left is parked and nobody is acting, the run is over, unless an abandoned
        lease will expire and return its task: then it waits for that, a second at a time,
        so that the progress note counts down.
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
                if self._deciding():
                    continue  # a decision may ask for more: parked workers ask again
                if not self.abandoned:
                    self._end("no work left for these workers")
                    return None
                now = self.clock()
                if any(t + LEASE_GRACE <= now for t in self.abandoned):
                    # A task came back: parked workers ask again.
                    self.abandoned = [t for t in self.abandoned if t + LEASE_GRACE > now]
                    self.note = ""
                    self._changed()
                    continue
                wait, self.note = lease_wait_note(self.abandoned, now)
                if not self.threaded:
                    self._tick(force=True)  # the main thread ticks for a threaded run
                self.cond.wait(timeout=min(wait, 1.0))

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
        done, total = real_tasks(self.project_id)
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
        self.deciding_since = None  # work came: a later wait for decisions starts afresh
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
        w.lease, w.pending = lease, w.sim.answer(view, truth, lease.prelabels)
        w.seconds = w.sim.seconds(
            self.kind,
            marks(self.kind, w.pending, lease.prelabels),
            kept(w.pending, lease.prelabels),
        )
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
                self.accepted.append(w.lease.id)
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
        done, total = real_tasks(self.project_id)
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
            assignment_ids=list(self.accepted),
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
    anchoring: float = 0.0,
) -> RunStats:
    """Run the crowd on the project until it runs out of work, gives ``max_answers``
    answers, or has done ``until_done`` of the project's real tasks. With a ``manager``, the
    manager rejects suspended workers' answers while the crowd works (a rejected answer
    stops counting, so its task asks the crowd for another)."""
    if project.state != ProjectState.ACTIVE:
        raise SimError(f"Project {project.pk} is {project.state}; start it first.")
    workers = crowd_make(crowd, seed=seed, anchoring=anchoring)
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
