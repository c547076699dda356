"""Routing throughput on PostgreSQL: service level, over HTTP, and the bare-SQL ceiling.

(a) claim+submit cycles/s through the routing services, 16 client processes, with the default
    task order and with ``task_order: uncertain_first``;
(b) next+submit cycles/s over HTTP, 64 concurrent asyncio clients against several web
    processes, with p50/p99 latency per request: as ``make serve`` runs them (the launcher
    hands each connection to the process with the fewest), as ``uvicorn --workers`` does (one
    shared socket: often an uneven split), and one process a port with the connections
    split evenly (a least-connections balancer in front);
(c) the machine's ceiling: the same claim and submit as bare SQL (psycopg, no Django) on the
    same tables and indexes, 16 client processes;
(d) one claim at a time (then a skip) by a worker far ahead of the crowd, whose ``AHEAD``
    answered tasks still need others' answers and sort first, under statistics taken before
    anyone answered, beside a new worker in the same project: the product's claim (one probe
    of each task's assignments) and the same claim with a plain ``NOT EXISTS``, for
    comparison (p50/p99 a claim).
Each phase runs on its own project, after the routing tables are vacuumed and analysed;
afterwards duplicates and over-assignments are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import percentile

NAME = "routing"
DESCRIPTION = "next+submit cycles/s on PostgreSQL: services, HTTP, bare SQL ceiling"
OVERLAP = 3
BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]


def _make_project(
    tasks: int, workers: int, tag: str, order: str = "default"
) -> tuple[int, list[tuple[int, str]]]:
    from rest_framework.authtoken.models import Token

    from crowd.models import Role, User
    from tasks.models import Task
    from tasks.services import project_update
    from tests.factories import project_with_tasks

    manager = User.objects.create(username=f"m-{tag}", role=Role.MANAGER)
    project = project_with_tasks(manager, tasks, OVERLAP)
    if order != "default":
        # A model's confidence on nine images in ten (the rest unpredicted), in no relation
        # to the tasks' age, so the claim's order is not the table's.
        rng = random.Random(tag)
        rows = list(Task.objects.filter(project=project))
        for task in rows:
            task.model_confidence = rng.random() if rng.random() < 0.9 else None
        Task.objects.bulk_update(rows, ["model_confidence"], batch_size=1000)
        project_update(project=project, data={"task_order": order})
    people = []
    for i in range(workers):
        worker = User.objects.create(username=f"w-{tag}-{i}", role=Role.WORKER)
        people.append((worker.pk, Token.objects.create(user=worker).key))
    return project.pk, people


def _integrity(project_id: int) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM tasks_task WHERE project_id = %s "
            "AND open_leases + answers > required_overlap",
            [project_id],
        )
        over = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM (SELECT task_id, worker_id FROM tasks_assignment "
            "WHERE project_id = %s GROUP BY 1, 2 HAVING count(*) > 1) d",
            [project_id],
        )
        duplicates = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM tasks_task t WHERE project_id = %s AND answers <> "
            "(SELECT count(*) FROM tasks_assignment a WHERE a.task_id = t.id "
            "AND a.status = 'submitted')",
            [project_id],
        )
        miscounted = cursor.fetchone()[0]
    return {"over_assigned": over, "duplicates": duplicates, "miscounted": miscounted}


# --- (a) service level ------------------------------------------------------------------------


def _service_client(args: tuple[int, int, float, Any]) -> int:
    project_id, worker_id, seconds, _ = args
    import django
    from django.db import connections

    django.setup()
    connections.close_all()
    from crowd.models import User
    from tasks import routing
    from tasks.models import Project

    project = Project.objects.get(pk=project_id)
    worker = User.objects.get(pk=worker_id)
    cycles, deadline = 0, time.monotonic() + seconds
    answered = False  # as submit?next=1 asks for the next task: right after an answer
    while time.monotonic() < deadline:
        lease = routing.assignment_next(
            project=project, worker=worker, rand=lambda: 1.0, after_answer=answered
        )
        if lease is None:
            break
        routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=BOX)
        answered = True
        cycles += 1
    connections.close_all()
    return cycles


# --- (c) bare SQL -----------------------------------------------------------------------------

CLAIM = """
SELECT t.id FROM tasks_task t
WHERE t.project_id = %(p)s AND t.state = 'open' AND NOT t.is_gold
  AND t.required_overlap - t.answers > 0 AND t.open_leases < t.required_overlap - t.answers
  AND NOT EXISTS (SELECT 1 FROM tasks_assignment a WHERE a.task_id = t.id AND a.worker_id = %(w)s)
ORDER BY t.required_overlap - t.answers, t.priority DESC, t.id
LIMIT 1 FOR UPDATE OF t SKIP LOCKED
"""


def _sql_client(args: tuple[int, int, float, str]) -> int:
    project_id, worker_id, seconds, url = args
    import psycopg

    cycles, deadline = 0, time.monotonic() + seconds
    with psycopg.connect(url, autocommit=False) as conn:
        while time.monotonic() < deadline:
            with conn.transaction():
                row = conn.execute(CLAIM, {"p": project_id, "w": worker_id}).fetchone()
                if row is None:
                    break
                conn.execute("UPDATE tasks_task SET open_leases = open_leases + 1 WHERE id = %s",
                             [row[0]])  # fmt: skip
                inserted = conn.execute(
                    "INSERT INTO tasks_assignment (task_id, project_id, worker_id, status, "
                    "leased_at, expires_at, idempotency_key, counted) VALUES "
                    "(%s, %s, %s, 'leased', now(), now() + interval '10 minutes', '', true) "
                    "RETURNING id",
                    [row[0], project_id, worker_id],
                ).fetchone()
                assert inserted is not None
                assignment = inserted[0]
            with conn.transaction():
                conn.execute("SELECT id FROM tasks_assignment WHERE id = %s FOR UPDATE",
                             [assignment])  # fmt: skip
                conn.execute(
                    "UPDATE tasks_assignment SET status = 'submitted', submitted_at = now(), "
                    "answer = %s WHERE id = %s",
                    [json.dumps(BOX), assignment],
                )
                conn.execute(
                    "UPDATE tasks_task SET answers = answers + 1, open_leases = open_leases - 1, "
                    "state = CASE WHEN answers + 1 >= required_overlap THEN 'done' ELSE state END "
                    "WHERE id = %s",
                    [row[0]],
                )
            cycles += 1
    return cycles


def _run_processes(target: Any, args: list[tuple[Any, ...]]) -> tuple[int, float]:
    from django.db import connections

    connections.close_all()
    context = multiprocessing.get_context("fork")
    with context.Pool(len(args)) as pool:
        started = time.perf_counter()
        counts = pool.map(target, args)
        elapsed = time.perf_counter() - started
    return sum(counts), elapsed


# --- Processor time ---------------------------------------------------------------------------


def _tree_seconds(pid: int) -> float:
    """Processor seconds of a process and its descendants so far, those that exited and were
    reaped included (a PostgreSQL backend's time passes to the postmaster when it ends).
    Linux's /proc."""
    ticks, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            threads = list(Path(f"/proc/{current}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += sum(int(value) for value in stat[11:15])  # utime stime cutime cstime
        for thread in threads:
            with contextlib.suppress(FileNotFoundError):
                stack.extend(int(c) for c in (thread / "children").read_text().split())
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_now(**trees: int) -> dict[str, float]:
    """Processor seconds so far: of each named process tree, and of this process's reaped
    children ("forked": the client processes)."""
    forked = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = {name: _tree_seconds(pid) for name, pid in trees.items()}
    now["forked"] = forked.ru_utime + forked.ru_stime
    return now


def _cpu_per_cycle(
    before: dict[str, float], after: dict[str, float], cycles: int, app: str
) -> dict[str, float | None]:
    """Processor milliseconds a cycle: of the app (``app``: the web processes, or the client
    processes that call the services), the database server and the job worker."""

    def per_cycle(name: str) -> float | None:
        if name not in after or not cycles:
            return None
        return round(1000 * (after[name] - before[name]) / cycles, 2)

    return {"app_cpu_ms": per_cycle(app), "db_cpu_ms": per_cycle("db"),
            "jobs_cpu_ms": per_cycle("jobs")}  # fmt: skip


# --- (b) HTTP ---------------------------------------------------------------------------------


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, token: str, body: bytes
) -> tuple[int, bytes]:
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    payload = await reader.readexactly(length) if length else b""
    return int(status_line.split()[1]), payload


async def _http_clients(
    ports: list[int], project_id: int, tokens: list[str], seconds: float
) -> dict:
    """Each client takes its first lease with ``next/``, then submits with ``?next=1``: the
    answer and the next lease in one round trip, as the workspace does. Client i keeps one
    connection to ``ports[i % len(ports)]``. Latencies are also given without the first
    second: the 64 clients connect and ask for their first task at the same instant."""
    latencies: list[float] = []
    settled: list[float] = []  # of requests sent after the first second
    errors = cycles = 0
    deadline = time.monotonic() + seconds
    warm = time.perf_counter() + 1.0
    submit_body = json.dumps({"annotations": BOX}).encode()

    def took(started: float) -> None:
        latency = time.perf_counter() - started
        latencies.append(latency)
        if started >= warm:
            settled.append(latency)

    async def client(token: str, port: int) -> None:
        nonlocal errors, cycles
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            lease = None
            while time.monotonic() < deadline:
                started = time.perf_counter()
                if lease is None:
                    path = f"/api/v1/projects/{project_id}/assignments/next/"
                    status, payload = await _request(reader, writer, path, token, b"")
                    took(started)
                    if status == 204:
                        return
                    if status != 201:
                        errors += 1
                        continue
                    lease = json.loads(payload)
                    continue
                path = f"/api/v1/assignments/{lease['id']}/submit/?next=1"
                status, payload = await _request(reader, writer, path, token, submit_body)
                took(started)
                if status != 200:
                    errors += 1
                    lease = None
                    continue
                cycles += 1
                lease = json.loads(payload)["next"]
                if lease is None:
                    return
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(t, ports[i % len(ports)]) for i, t in enumerate(tokens)))
    elapsed = time.perf_counter() - started
    return {
        "cycles": cycles, "seconds": elapsed, "errors": errors,
        "p50_ms": statistics.median(latencies) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
        "p99_after_1s_ms": percentile(settled, 0.99) * 1000 if settled else None,
    }  # fmt: skip


def _settle() -> None:
    """Vacuum and analyse the routing tables before a phase: each phase then starts from the
    same state, rather than the one after the last one's writes paying for their autovacuum
    while it runs."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) tasks_task, tasks_assignment")


# How long a completed task waited for its decision: from its last counted answer to done_at.
_DECISION_WAITS = """
SELECT EXTRACT(EPOCH FROM t.done_at - max(a.submitted_at)) * 1000
FROM tasks_task t JOIN tasks_assignment a ON a.task_id = t.id AND a.status = 'submitted'
WHERE t.project_id = %s AND t.done_at IS NOT NULL GROUP BY t.id, t.done_at
"""


def _decided(project_id: int, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the project has no task due (its decision jobs caught up), then the
    decision waits' p50/p99 and how many were left due when the wait timed out."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM tasks_task WHERE project_id = %s AND state = 'open' "
                "AND NOT is_gold AND answers >= required_overlap",
                [project_id],
            )
            due = cursor.fetchone()[0]
            if not due or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        cursor.execute(_DECISION_WAITS, [project_id])
        waits = sorted(float(row[0]) for row in cursor.fetchall())
    if not waits:
        return {"decided": 0, "left_due": due, "decide_p50_ms": None, "decide_p99_ms": None}
    return {
        "decided": len(waits), "left_due": due,
        "decide_p50_ms": statistics.median(waits),
        "decide_p99_ms": percentile(waits, 0.99),
    }  # fmt: skip


# The embedded default runs in its own VAR_DIR (SQLite): its project is made, and its
# counts read, by manage.py shell in that environment.
_EMBEDDED_SETUP = """
import json
from rest_framework.authtoken.models import Token
from crowd.models import Role, User
from tests.factories import project_with_tasks
manager = User.objects.create(username="m-embedded", role=Role.MANAGER)
project = project_with_tasks(manager, {tasks}, {overlap})
tokens = []
for i in range({workers}):
    worker = User.objects.create(username=f"w-embedded-{{i}}", role=Role.WORKER)
    tokens.append(Token.objects.create(user=worker).key)
print(json.dumps({{"project": project.pk, "tokens": tokens}}))
"""
_EMBEDDED_COUNTS = """
import json
from django.db.models import F
from tasks.models import Task
from bench.bench_routing import _integrity
due = Task.objects.filter(project_id={project}, state="open", is_gold=False,
                          answers__gte=F("required_overlap")).count()
waits = []
for task in Task.objects.filter(project_id={project}, done_at__isnull=False):
    last = max(a.submitted_at for a in task.assignments.filter(status="submitted"))
    waits.append((task.done_at - last).total_seconds() * 1000)
print(json.dumps({{**_integrity({project}), "due": due, "waits": sorted(waits)}}))
"""


def _embedded(tasks: int, clients: int, seconds: float) -> dict[str, Any]:
    """The embedded default as ``make demo`` serves it: SQLite, one uvicorn process,
    in-process jobs."""
    import tempfile

    from tests.e2e.server import live_server, manage, server_env

    env = server_env(
        VAR_DIR=tempfile.mkdtemp(prefix="crowd-bench-embedded-"), THROTTLE_NEXT="1000000/second"
    )
    manage(env, "migrate", "--noinput", "-v", "0")
    made = json.loads(
        manage(env, "shell", "-c", _EMBEDDED_SETUP.format(
            tasks=tasks, overlap=OVERLAP, workers=clients)).strip().splitlines()[-1]
    )  # fmt: skip
    with live_server(env, workers=1) as live:
        result = asyncio.run(_http_clients([live.port], made["project"], made["tokens"], seconds))
        deadline = time.monotonic() + 120
        while True:  # the server's jobs decide what its last answers completed
            counts = json.loads(
                manage(env, "shell", "-c", _EMBEDDED_COUNTS.format(project=made["project"]))
                .strip()
                .splitlines()[-1]
            )
            if not counts["due"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    waits = counts.pop("waits")
    return {
        **result, **counts,
        "decided": len(waits), "left_due": counts.pop("due"),
        "decide_p50_ms": statistics.median(waits) if waits else None,
        "decide_p99_ms": percentile(waits, 0.99) if waits else None,
    }  # fmt: skip


AHEAD = 2000


def _far_ahead(tasks: int, picks: int) -> list[dict[str, Any]]:
    from crowd.models import User
    from tasks import routing
    from tasks.models import Project, Task
    from tests.factories import answers_counted

    project_id, people = _make_project(tasks, 2, "ahead")
    _settle()  # the statistics: before anyone answered
    project = Project.objects.get(pk=project_id)
    ahead, new = (User.objects.get(pk=w) for w, _ in people)
    answered = list(Task.objects.filter(project=project).order_by("pk")[:AHEAD])
    answers_counted(project, ahead, answered, BOX)
    product = routing._CLAIM_TEMPLATE
    plain = product.replace(routing._CLAIMABLE_PG, routing._CLAIMABLE)
    rows = []
    try:
        for form, template in (("one probe a task", product), ("plain NOT EXISTS", plain)):
            routing._CLAIM_TEMPLATE = template
            routing._claim_sql.cache_clear()
            for who, worker in ((f"{AHEAD} answered still open", ahead), ("new", new)):
                times = []
                for _ in range(picks):
                    started = time.perf_counter()
                    lease = routing.assignment_next(project=project, worker=worker)
                    times.append(time.perf_counter() - started)
                    assert lease is not None
                    routing.assignment_skip(assignment_id=lease.pk, worker=worker)
                rows.append(_row(
                    f"claim alone, a worker {who}, {form}", 1, picks, sum(times), None,
                    p50_ms=statistics.median(times) * 1000,
                    p99_ms=percentile(times, 0.99) * 1000,
                ))  # fmt: skip
    finally:
        routing._CLAIM_TEMPLATE = product
        routing._claim_sql.cache_clear()
    return rows


def _row(path: str, clients: int, cycles: int, seconds: float, ceiling: float | None,
         **figures: Any) -> dict[str, Any]:  # fmt: skip
    """``ceiling`` None: a figure that is not a share of the bare-SQL cycles."""
    row: dict[str, Any] = {
        "path": path, "clients": clients, "cycles": cycles, "cycles_per_s": cycles / seconds,
        "of_ceiling_pct": 100 * cycles / seconds / ceiling if ceiling else None,
        "p50_ms": None, "p99_ms": None,
        "p99_after_1s_ms": None, "app_cpu_ms": None, "db_cpu_ms": None, "jobs_cpu_ms": None,
        "http_errors": None, "decided": None, "decide_p50_ms": None,
        "decide_p99_ms": None, "left_due": None, "over_assigned": None, "duplicates": None,
        "miscounted": None,
    }  # fmt: skip
    row.update({k: v for k, v in figures.items() if k in row})
    return row


def run(quick: bool = False) -> list[dict[str, Any]]:
    from tests.plugins.services import start

    server = start("postgres")
    redis_server = start("redis")
    import psycopg

    admin = server.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE crowd")
    from bench.django_env import setup
    from tests.e2e.server import LiveServer, live_server, server_env
    from tests.reliability.processes import job_worker

    # The production layout (`make serve` and `make worker`): PostgreSQL, Redis for the cache,
    # the channel layer and the job broker, and a job worker process that decides completed
    # tasks. No periodic sweep: routing releases expired leases itself.
    # The service clients are forked from this process, so each keeps a connection of its
    # own rather than sharing a pool opened before the fork.
    setup(DATABASE_URL=server.url, REDIS_URL=redis_server.url, LEASE_SWEEP_SECONDS="0",
          DATABASE_POOL="false")  # fmt: skip
    # Each HTTP client asks for work as fast as the server answers: far beyond the per-worker
    # throttle on next, which would measure the throttle instead of the routing.
    env = server_env(
        DATABASE_URL=server.url, REDIS_URL=redis_server.url, VAR_DIR=os.environ["VAR_DIR"],
        DATABASE_POOL="true", THROTTLE_NEXT="1000000/second", LEASE_SWEEP_SECONDS="0",
    )  # fmt: skip
    seconds = 5.0 if quick else 15.0
    tasks = 3000 if quick else 10000
    rows = []

    sql_project, sql_people = _make_project(tasks, 16, "sql")
    _settle()
    before = _cpu_now(db=server.process.pid)
    cycles, elapsed = _run_processes(
        _sql_client, [(sql_project, w, seconds, server.url) for w, _ in sql_people]
    )
    cpu = _cpu_per_cycle(before, _cpu_now(db=server.process.pid), cycles, "forked")
    ceiling = cycles / elapsed
    rows.append(_row("bare SQL (psycopg)", 16, cycles, elapsed, ceiling, **cpu,
                     **_integrity(sql_project)))  # fmt: skip

    jobs = job_worker(env).wait_ready()
    trees = {"db": server.process.pid, "jobs": jobs.pid}
    try:
        # The services, with the default task order and with uncertain_first (the claim
        # orders by the model's confidence under its own index).
        for path, tag, order in (("services (routing, 16 processes) + jobs", "svc", "default"),
                                 ("services, task_order uncertain_first", "unsure",
                                  "uncertain_first")):  # fmt: skip
            project_id, people = _make_project(tasks, 16, tag, order)
            _settle()
            before = _cpu_now(**trees)
            cycles, elapsed = _run_processes(
                _service_client, [(project_id, w, seconds, None) for w, _ in people]
            )
            decided = _decided(project_id)  # the job worker's time includes the catching up
            cpu = _cpu_per_cycle(before, _cpu_now(**trees), cycles, "forked")
            rows.append(_row(path, 16, cycles, elapsed, ceiling, **cpu, **decided,
                             **_integrity(project_id)))  # fmt: skip

        rows += _far_ahead(tasks, 30 if quick else 100)

        processes = int(os.environ.get("BENCH_WEB_PROCESSES", "2"))
        # The clients' connections live for the whole run, so however they are split among
        # the web processes at the start, the split lasts. `make serve` (crowd.serve): the
        # launcher accepts and hands each connection to the process with the fewest; beside
        # it `uvicorn --workers` (one socket, each connection to whichever process accepts
        # first) and the ideal split with no launcher (one process a port, the clients split
        # alike).
        layouts: list[tuple[str, Callable[[contextlib.ExitStack], list[LiveServer]]]] = [
            (f"make serve (crowd.serve x{processes}, least connections)",
             lambda stack: [stack.enter_context(live_server(env, workers=processes))]),
            (f"uvicorn --workers {processes} (one shared socket)",
             lambda stack: [stack.enter_context(
                 live_server(env, workers=processes, shared_socket=True))]),
            (f"{processes} x uvicorn, connections spread evenly",
             lambda stack: [stack.enter_context(live_server(env, workers=1))
                            for _ in range(processes)]),
        ]  # fmt: skip
        for number, (layout, serve) in enumerate(layouts):
            http_project, http_people = _make_project(tasks, 64, f"http{number}")
            _settle()
            with contextlib.ExitStack() as stack:
                servers = serve(stack)
                web = {f"web{k}": live.process.pid for k, live in enumerate(servers)}
                before = _cpu_now(**trees, **web)
                result = asyncio.run(_http_clients(
                    [live.port for live in servers], http_project,
                    [t for _, t in http_people], seconds,
                ))  # fmt: skip
                decided = _decided(http_project)
                after = _cpu_now(**trees, **web)
            for cpu_now in (before, after):
                cpu_now["web"] = sum(cpu_now.pop(name) for name in web)
            cpu = _cpu_per_cycle(before, after, result["cycles"], "web")
            rows.append(_row(f"HTTP submit?next=1, {layout} + jobs, PostgreSQL+Redis", 64,
                             result["cycles"], result["seconds"], ceiling,
                             p50_ms=result["p50_ms"], p99_ms=result["p99_ms"],
                             p99_after_1s_ms=result["p99_after_1s_ms"], **cpu,
                             http_errors=result["errors"], **decided,
                             **_integrity(http_project)))  # fmt: skip
    finally:
        jobs.stop()
        redis_server.stop()

    embedded = _embedded(tasks, 64, seconds)
    rows.append(_row("HTTP submit?next=1, embedded default (SQLite, uvicorn x1)", 64,
                     embedded["cycles"], embedded["seconds"], ceiling,
                     **{k: v for k, v in embedded.items() if k not in ("cycles", "seconds")},
                     http_errors=embedded["errors"]))  # fmt: skip
    return rows
