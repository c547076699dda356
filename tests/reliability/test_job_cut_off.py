"""A job worker cut off from Redis (not from the database) past the broker's heartbeat
timeout: its job is delivered again, to another worker, while it still runs. The second copy
finds the version claimed by a live copy and leaves it, without an error the broker would
retry; the first finishes it: one version, built once, into one file.

Real processes: two ``manage.py rundramatiq`` workers on PostgreSQL and Redis, the first one
talking to Redis through a proxy the test can cut. The first copy is held inside its build by
a lock the test takes on the consensus results' table, so the second arrives while it runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.plugins.services import Server
from tests.reliability.processes import job_worker, running
from tests.reliability.seeding import seed_in

pytestmark = pytest.mark.postgres

IMAGES = 50
BOXES_PER_IMAGE = 5
# Short, so that the test is: the broker redelivers after this...
HEARTBEAT_TIMEOUT_MS = 3000
# ...and the claim is renewed every second.
LEASE_SECONDS = 3


class CuttableProxy:
    """A TCP proxy to one server; ``cut()`` holds every byte either way (the connections stay
    open, as behind a network partition) until ``restore()``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        for s in (source, sink):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.restore()
        self.listener.close()
        for s in self.sockets:
            with suppress(OSError):
                s.close()


@contextmanager
def proxy_to(server: Server) -> Iterator[CuttableProxy]:
    url = urlsplit(server.url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 6379)
    try:
        yield proxy
    finally:
        proxy.close()


def _wait(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def test_an_export_redelivered_while_its_worker_is_cut_off_from_redis_is_built_once(
    services_env: dict[str, str],
    redis_server: Server,
    database_url: str,
    db_conn: psycopg.Connection,
) -> None:
    env = {
        **services_env,
        "JOB_HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_TIMEOUT_MS),
        "JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    seeded = seed_in(
        env,
        f"s = seeding.answered(images={IMAGES}); "
        "seeding.export_queue(project_id=s['project'], user_id=s['manager'])",
    )
    project, export = seeded["project"], seeded["export"]

    def export_row() -> tuple[Any, ...]:
        row = db_conn.execute(
            "SELECT status, attempts, error, file, sha256, claim_token "
            "FROM qa_datasetexport WHERE id = %s",
            (export,),
        ).fetchone()
        assert row is not None
        return tuple(row)

    def build_waits_for_the_lock() -> bool:
        row = db_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
        return row is not None and row[0] > 0

    with (
        proxy_to(redis_server) as proxy,
        closing(psycopg.connect(database_url)) as locker,
    ):
        # Writers of consensus results wait; readers do not.
        locker.execute("LOCK TABLE qa_consensusresult IN EXCLUSIVE MODE")
        first_env = {**env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
        with running(job_worker(first_env)) as first:
            first.wait_ready()
            _wait("the first copy inside its build", build_waits_for_the_lock, timeout=60)
            assert export_row()[:2] == ("running", 1)
            proxy.cut()
            with running(job_worker(env)) as second:
                second.wait_ready()
                # The broker gives the silent worker's job to this one, which finds the
                # version claimed and renewed by the first copy, and leaves it.
                _wait(
                    "the job delivered again",
                    lambda: (
                        "is being built by another copy" in second.log_text() or export_row()[1] > 1
                    ),
                    timeout=HEARTBEAT_TIMEOUT_MS / 1000 + 30,
                )
                assert export_row()[:2] == ("running", 1), "the second copy built it too"
                locker.rollback()  # the first copy goes on
                proxy.restore()
                _wait("the build finished", lambda: export_row()[0] != "running", timeout=60)
                time.sleep(1.0)  # room for a wrong retry to show up in the second's log
                second_log = second.log_text()
            first_log = first.log_text()

    status, attempts, error, file_name, sha256, claim_token = export_row()
    assert (status, attempts, error, claim_token) == ("done", 1, "", ""), first_log[-4000:]
    assert "Traceback" not in second_log, second_log[-4000:]
    assert "Retrying" not in second_log
    runs = db_conn.execute(
        "SELECT id, status, images_total FROM qa_consensusrun WHERE project_id = %s", (project,)
    ).fetchall()
    assert [(status, total) for _, status, total in runs] == [("done", IMAGES)]
    results = db_conn.execute(
        "SELECT count(*), count(DISTINCT image_id), sum(jsonb_array_length(annotations)) "
        "FROM qa_consensusresult WHERE run_id = %s",
        (runs[0][0],),
    ).fetchone()
    assert results == (IMAGES, IMAGES, IMAGES * BOXES_PER_IMAGE)
    media = Path(env["VAR_DIR"]) / "media"
    files = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
    assert files == [file_name]
    assert sha256
