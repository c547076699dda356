"""An ASGI process restarted under load: nothing a worker was told is lost, nothing is
counted twice.

``make serve`` runs uvicorn with ``--workers``: a supervisor holds the listening socket and
its worker processes accept from it, replacing any that dies. The simulated crowd (32
workers, each with its own token and keep-alive connection) talks to that one port the whole
time, the way clients talk to a deployment's address; when one process is killed, the
requests it was serving are cut off (connection reset, or no response), the clients retry
them with the same ``Idempotency-Key``, and the other process serves them until the
supervisor has started a replacement. Both a crash (SIGKILL) and a graceful stop (SIGTERM:
uvicorn finishes the requests in flight, then exits) are tested.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.reliability.crowd_client import Connection, CrowdRecord, answer_for, run_crowd
from tests.reliability.processes import web_server
from tests.reliability.seeding import seed_in

pytestmark = pytest.mark.postgres

WORKERS = 32
TASKS = 200
OVERLAP = 3
ANSWERS = TASKS * OVERLAP


def _wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_web_process_restarted_under_load_loses_and_doubles_nothing(
    services_env: dict[str, str], db_conn: psycopg.Connection, sig: signal.Signals
) -> None:
    seeded = seed_in(
        services_env, f"seeding.crowd(workers={WORKERS}, tasks={TASKS}, overlap={OVERLAP})"
    )
    tokens, project = seeded["workers"], seeded["project"]
    by_worker = {f"w{i}": token for i, token in enumerate(tokens)}
    record = CrowdRecord()
    stop = threading.Event()
    with web_server(services_env, workers=2) as server:
        serving = server.worker_pids()
        crowd = run_crowd(
            base_url=server.url, tokens=tokens, project_id=project, record=record, stop=stop
        )
        try:
            _wait_for("a quarter of the answers", lambda: record.acks() >= ANSWERS // 4, 120)
            victim = serving[0]
            os.kill(victim, sig)
            acked_at_restart = record.acks()
            replaced = server.wait_serving(exclude=frozenset({victim}))
            for worker in crowd:
                worker.join(timeout=120)
            assert not [w.name for w in crowd if w.is_alive()], "clients still running"
        finally:
            stop.set()
        log = server.log_text()

        # A repeat of any acknowledged submit, even with another answer, returns the
        # original result and changes nothing.
        def resubmit(assignment: int) -> tuple[int, Any]:
            ack = record.acked[assignment]
            reply = Connection(server.url, by_worker[ack.worker]).request(
                "POST",
                f"/api/v1/assignments/{assignment}/submit/",
                {"annotations": [answer_for(assignment + 1)]},
                {"Idempotency-Key": ack.key},
            )
            return reply.status, reply.body

        with ThreadPoolExecutor(8) as pool:
            repeats = dict(zip(record.acked, pool.map(resubmit, record.acked), strict=True))

    # The restart happened mid-run, and the supervisor replaced the process.
    assert 0 < acked_at_restart < ANSWERS
    assert victim not in replaced
    assert serving[1] in replaced
    if sig == signal.SIGKILL:
        # Requests in flight on the killed process were cut off and retried.
        assert record.connection_errors > 0, record.counts
    assert record.failures == []
    assert record.unexpected == []
    assert record.server_errors == 0, (record.counts, log[-3000:])
    assert repeats == {a: (200, ack.body) for a, ack in record.acked.items()}

    # Every acknowledged answer is stored once, as first sent, under its key; nothing else.
    rows = db_conn.execute(
        "SELECT id, status, answer, idempotency_key FROM tasks_assignment WHERE project_id = %s",
        (project,),
    ).fetchall()
    submitted = {r[0]: r for r in rows if r[1] == "submitted"}
    assert len(rows) == len(submitted) == ANSWERS  # no lease left open, none expired
    assert set(submitted) == set(record.acked)
    for assignment, ack in record.acked.items():
        _, _, answer, key = submitted[assignment]
        assert [item["bbox"] for item in answer] == [ack.item["bbox"]]
        assert key == ack.key
        assert ack.body == {"id": assignment, "status": "submitted", "clipped": 0}

    # Each answer counted once on its task: the counters match the rows.
    def tasks() -> list[tuple[Any, ...]]:
        return db_conn.execute(
            "SELECT t.answers, t.open_leases, t.state, "
            "(SELECT count(*) FROM tasks_assignment a WHERE a.task_id = t.id "
            " AND a.status = 'submitted') FROM tasks_task t WHERE t.project_id = %s",
            (project,),
        ).fetchall()

    before_sweep = Counter(tasks())
    assert sum(before_sweep.values()) == TASKS
    # A completed task is decided off the request path, by a decision job (no job worker
    # runs here) or the periodic sweep, so until then it is due: open, with all its answers
    # and no lease, exactly as a process killed between an answer and its decision leaves
    # it, and never anything in between. The sweep decides every one.
    assert set(before_sweep) <= {(OVERLAP, 0, "done", OVERLAP), (OVERLAP, 0, "open", OVERLAP)}
    seed_in(services_env, "seeding.sweep()")
    assert Counter(tasks()) == {(OVERLAP, 0, "done", OVERLAP): TASKS}
