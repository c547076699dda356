"""Background jobs: the Dramatiq broker set-up shared by every app.

Production uses the Redis broker and ``manage.py rundramatiq`` workers. The embedded default
uses the stub broker, whose messages live in this process; :class:`InProcessWorker` starts a
Dramatiq worker here on the first message so that background work still happens with no
services installed. Actors live in each app's ``jobs.py`` and take ids, never model instances.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from django.conf import settings
from django.db import transaction
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware


class InProcessWorker(Middleware):
    """Broker middleware for the embedded default: runs enqueued messages in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.worker: dramatiq.Worker | None = None

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int
    ) -> None:
        self.ensure_started(broker)

    def ensure_started(self, broker: dramatiq.Broker) -> dramatiq.Worker:
        with self._lock:
            if self.worker is None:
                worker = dramatiq.Worker(
                    broker, worker_threads=settings.JOB_WORKER_THREADS, worker_timeout=100
                )
                worker.start()
                self.worker = worker
            return self.worker


def send_on_commit(actor: dramatiq.Actor, *args: Any, **kwargs: Any) -> None:
    """Enqueue after the surrounding transaction commits, so the job sees the rows it is sent."""
    transaction.on_commit(lambda: actor.send(*args, **kwargs))


def in_process_worker() -> InProcessWorker | None:
    broker = dramatiq.get_broker()
    for middleware in broker.middleware:
        if isinstance(middleware, InProcessWorker):
            return middleware
    return None


def wait_for_jobs(timeout: float = 30.0) -> None:
    """Block until every queued in-process job has run (embedded default only).

    For tests and for ``seed_demo``, which must see the results of the jobs they caused.
    Raises the first job failure, like ``StubBroker.join``.
    """
    broker = dramatiq.get_broker()
    if not isinstance(broker, StubBroker):
        raise RuntimeError("wait_for_jobs() needs the embedded stub broker")
    deadline = time.monotonic() + timeout
    # Jobs may enqueue further jobs: join every queue until one pass finds them all idle.
    while True:
        for queue_name in list(broker.get_declared_queues()):
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            broker.join(queue_name, timeout=remaining_ms)
        worker = in_process_worker()
        if worker is not None and worker.worker is not None:
            worker.worker.join()
        if all(not broker.queues[q].unfinished_tasks for q in broker.queues):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("background jobs did not finish in time")
