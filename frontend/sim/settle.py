"""The end of a command under the embedded default: the in-process Dramatiq worker finishes
the jobs the run queued, then stops, so that the process exits. Kept apart from the
simulation because it reaches into the stub broker's queues and the worker's shutdown (and
not named ``jobs``: in this project a ``jobs`` module holds Dramatiq actors)."""

from __future__ import annotations

import logging
import time


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
