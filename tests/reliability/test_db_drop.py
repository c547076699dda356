"""The web process's PostgreSQL connections cut (``pg_terminate_backend``): during a submit,
between requests, and with the database refusing new connections for a while.

A request the database dropped is answered 503 with the API's JSON error and a
``Retry-After`` (never a 500), leaves nothing half-written, and the next request succeeds:
dead pooled connections are replaced rather than handed out again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from tests.reliability.crowd_client import Connection, CrowdRecord, Reply, call_until_answered
from tests.reliability.processes import WebServer, web_server
from tests.reliability.seeding import seed_in

pytestmark = pytest.mark.postgres

ITEM = {"label": "car", "bbox": [10, 10, 200, 200]}


def _seed(env: dict[str, str]) -> dict[str, Any]:
    return seed_in(env, "seeding.crowd(workers=1, tasks=3, overlap=1)")


def _terminate_backends(db_conn: psycopg.Connection, *spare: int) -> int:
    """Cut every connection to the test's database but this one and ``spare``, and wait
    until each backend has gone. ``pg_terminate_backend`` alone only signals it: on a busy
    machine the next request could take a connection whose server is still ending, and
    lose it mid-request (a 503, as it must be), which is not a cut between requests."""
    rows = db_conn.execute(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
        (list(spare),),
    ).fetchall()
    return len(rows)


def _assert_unavailable(reply: Reply) -> None:
    assert reply.status == 503, reply
    assert reply.headers["content-type"] == "application/json", reply
    assert reply.body == {
        "detail": "The service is briefly unavailable; retry shortly.",
        "code": "unavailable",
        "errors": {},
    }
    assert int(reply.headers["retry-after"]) > 0


def _state(db_conn: psycopg.Connection, assignment: int) -> tuple[Any, ...]:
    """What a submit writes: the assignment, its task's counters, the ledger."""
    row = db_conn.execute(
        "SELECT a.status, a.answer, a.idempotency_key, t.answers, t.open_leases, "
        "(SELECT count(*) FROM payouts_ledgerentry) "
        "FROM tasks_assignment a JOIN tasks_task t ON t.id = a.task_id WHERE a.id = %s",
        (assignment,),
    ).fetchone()
    assert row is not None
    return tuple(row)


@contextmanager
def _task_locked(database_url: str, assignment: int) -> Iterator[int]:
    """Hold the row lock on the assignment's task (a concurrent writer would): a submit
    blocks inside its statement until the lock goes. Yields the locking backend's pid."""
    with psycopg.connect(database_url) as locker:
        locker.execute(
            "SELECT t.id FROM tasks_task t JOIN tasks_assignment a ON a.task_id = t.id "
            "WHERE a.id = %s FOR UPDATE OF t",
            (assignment,),
        )
        try:
            yield locker.info.backend_pid
        finally:
            locker.rollback()


def _wait_blocked(db_conn: psycopg.Connection, locker: int) -> int:
    """The pid of the backend waiting on ``locker``'s lock (the submit in progress)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = db_conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND %s = ANY(pg_blocking_pids(pid))",
            (locker,),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the submit never reached the locked task row")


def _lease(server: WebServer, token: str, project: int) -> int:
    reply = Connection(server.url, token).request(
        "POST", f"/api/v1/projects/{project}/assignments/next/"
    )
    assert reply.status == 201, reply
    return int(reply.body["id"])


def test_a_submit_cut_off_mid_statement_is_a_503_and_writes_nothing(
    services_env: dict[str, str], database_url: str, db_conn: psycopg.Connection
) -> None:
    seeded = _seed(services_env)
    token, project = seeded["workers"][0], seeded["project"]
    with web_server(services_env) as server:
        assignment = _lease(server, token, project)
        before = _state(db_conn, assignment)
        assert before[:3] == ("leased", None, "")
        key = {"Idempotency-Key": "submit-once-42"}
        path = f"/api/v1/assignments/{assignment}/submit/"
        body = {"annotations": [ITEM]}
        replies: list[Reply] = []

        with _task_locked(database_url, assignment) as locker:
            submit = threading.Thread(
                target=lambda: replies.append(
                    Connection(server.url, token).request("POST", path, body, key)
                )
            )
            submit.start()
            _wait_blocked(db_conn, locker)
            # The web process's connections, the one running the submit among them.
            assert _terminate_backends(db_conn, locker) >= 1
            submit.join(timeout=30)
        assert len(replies) == 1
        _assert_unavailable(replies[0])
        assert _state(db_conn, assignment) == before

        # The client retries with the same key: the next request goes through.
        retry = Connection(server.url, token).request("POST", path, body, key)
        assert (retry.status, retry.body) == (
            200,
            {"id": assignment, "status": "submitted", "clipped": 0},
        )
        status, answer, stored_key, answers, open_leases, ledger = _state(db_conn, assignment)
        assert (status, stored_key, ledger) == ("submitted", "submit-once-42", before[5])
        assert [item["bbox"] for item in answer] == [ITEM["bbox"]]
        assert (answers, open_leases) == (before[3] + 1, before[4] - 1)


def _backends(db_conn: psycopg.Connection) -> int:
    """How many other connections the test's database has."""
    row = db_conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_connections_cut_between_requests_are_replaced_unseen(
    services_env: dict[str, str], db_conn: psycopg.Connection
) -> None:
    seeded = _seed(services_env)
    token, project = seeded["workers"][0], seeded["project"]
    pooled = 6
    with web_server({**services_env, "DATABASE_POOL_MIN": str(pooled)}) as server:
        client = Connection(server.url, token)
        # The pool, opened by the first request, fills itself to its minimum meanwhile.
        assert client.request("GET", "/api/v1/me/").status == 200
        deadline = time.monotonic() + 30
        while _backends(db_conn) < pooled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _terminate_backends(db_conn) >= pooled
        for _ in range(10):  # more requests than the pool had connections
            started = time.monotonic()
            reply = client.request("GET", "/api/v1/me/")
            assert reply.status == 200, reply
            # Not a back-off per dead connection (1 s, 2 s, 4 s, ...: 7 s for the first four).
            assert time.monotonic() - started < 3.0
        assignment = _lease(server, token, project)
        assert _terminate_backends(db_conn) >= 1
        reply = client.request(
            "POST", f"/api/v1/assignments/{assignment}/submit/", {"annotations": [ITEM]}
        )
        assert (reply.status, reply.body) == (
            200,
            {"id": assignment, "status": "submitted", "clipped": 0},
        )


def test_a_database_refusing_connections_is_a_503_until_it_is_back(
    services_env: dict[str, str], database_url: str, db_conn: psycopg.Connection
) -> None:
    seeded = _seed(services_env)
    token, project = seeded["workers"][0], seeded["project"]
    base, name = database_url.rsplit("/", 1)
    env = {**services_env, "DATABASE_POOL_TIMEOUT": "2"}
    with (
        web_server(env) as server,
        psycopg.connect(f"{base}/postgres", autocommit=True) as admin,
    ):
        client = Connection(server.url, token)
        assert client.request("GET", "/api/v1/me/").status == 200
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            _terminate_backends(db_conn)
            reply = client.request("POST", f"/api/v1/projects/{project}/assignments/next/")
            _assert_unavailable(reply)
            health = client.request("GET", "/healthz")
            assert health.status == 503, health
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        # A client that retries on 503 gets through once the database is back.
        record = CrowdRecord()
        reply, _ = call_until_answered(
            client, "POST", f"/api/v1/projects/{project}/assignments/next/",
            endpoint="next", record=record, give_up_after=30,
        )  # fmt: skip
        assert reply.status == 201, reply
        assert record.connection_errors == 0


def test_a_pooled_connection_is_asked_only_once_the_server_has_spoken(
    database_url: str, db_conn: psycopg.Connection
) -> None:
    """The pool's check on checkout sends no query while the connection is quiet; one the
    server cut reads as ready within moments, and is then checked (and replaced)."""
    from crowd.postgresql.base import _quiet

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert _quiet(conn)
        conn.execute("SELECT 1").fetchall()
        assert _quiet(conn)  # a finished query leaves nothing behind
        pid = conn.info.backend_pid
        db_conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 5
        while _quiet(conn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _quiet(conn)
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")  # a transaction left open is not quiet
        assert not _quiet(conn)
