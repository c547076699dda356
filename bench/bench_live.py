"""Live events: latency from commit to delivery over WebSocket, with many connected workers.

Every event carries ``at``, the commit time; a client's receive time minus ``at`` is the
delay a worker sees. Two set-ups, each with 1,000 worker connections (100 with --quick) and a
manager's dashboard:

(a) the embedded default: one uvicorn process, SQLite, the in-memory channel layer;
(b) production: two uvicorn processes on PostgreSQL and Redis, the clients split between them
    and every worker's HTTP requests sent to the process its WebSocket is not on, so every
    frame crosses the Redis channel layer.

A subset of the workers takes and submits tasks over HTTP at a steady rate (from a process of
its own, so the load does not share this process's event loop). Each lease is a ``lease``
event to its worker (direct); the counts that move go out as coalesced ``queue`` frames to
every connected worker and ``progress`` frames to the manager. Frames are counted per client:
a frame some clients got and others did not counts as dropped for those others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from bench import percentile

NAME = "live"
DESCRIPTION = "commit-to-delivery latency of live events over WebSocket (target p99 < 200 ms)"
TARGET_MS = 200.0
BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]
CONNECT_CONCURRENCY = 50
T = TypeVar("T")
LOG_ISSUE = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b|Traceback|over capacity|not delivered")

# Run with ``manage.py shell -c``: a manager, an active project with ready tasks (overlap 1)
# and the worker accounts with their tokens, made in bulk. Prints one JSON line.
SETUP = """
import json
from rest_framework.authtoken.models import Token
from crowd.models import Role, User
from tests.factories import project_with_tasks

manager = User.objects.create(username="bench-manager", role=Role.MANAGER)
project = project_with_tasks(manager, {tasks}, 1)
User.objects.bulk_create(
    User(username=f"bench-w{{i:05d}}", role=Role.WORKER) for i in range({workers})
)
workers = list(User.objects.filter(username__startswith="bench-w").order_by("username"))
Token.objects.bulk_create(
    Token(user=user, key=Token.generate_key()) for user in [manager, *workers]
)
keys = dict(Token.objects.values_list("user_id", "key"))
print(json.dumps({{"project": project.pk, "manager": keys[manager.pk],
                  "workers": [keys[w.pk] for w in workers]}}))
"""


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Uvicorn:
    port: int
    pid: int
    log: Path


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _uvicorn(env: dict[str, str], log_dir: Path, name: str) -> Iterator[Uvicorn]:
    """One uvicorn process as ``make serve`` runs it; its log stays in ``log_dir``."""
    import urllib.request

    from tests.e2e.server import ROOT
    from tests.plugins.services import free_port

    port = free_port()
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "crowd.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--lifespan", "off", "--ws-per-message-deflate", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Uvicorn(port, process.pid, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_issues(logs: list[Path]) -> list[str]:
    """Flagged server log lines; a traceback is reported by its innermost frame and its
    exception line."""
    issues = []
    for log in logs:
        lines: list[str] = []
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()
        frame = ""
        in_traceback = False
        for line in lines:
            if line.startswith("Traceback"):
                in_traceback, frame = True, ""
            elif in_traceback and line.startswith("  File "):
                frame = line.strip()
            elif in_traceback and line and not line[0].isspace():
                issues.append(f"{log.stem}: {line.strip()}  [at {frame}]")
                in_traceback = False
            elif not in_traceback and LOG_ISSUE.search(line):
                issues.append(f"{log.stem}: {line.strip()}")
    return issues


# --- HTTP load (a process of its own) ---------------------------------------------------------


async def _drive_async(
    plan: list[tuple[int, str, int]], project: int, seconds: float, rate: float
) -> dict[str, Any]:
    from bench.bench_routing import _request

    granted: list[tuple[int, int]] = []
    errors = cycles = 0
    interval = len(plan) / rate  # each worker's cycle period, for ``rate`` cycles/s in all
    submit_body = json.dumps({"annotations": BOX}).encode()
    started = time.monotonic()
    deadline = started + seconds

    async def worker(slot: int, index: int, token: str, port: int) -> None:
        nonlocal errors, cycles
        await asyncio.sleep(interval * slot / len(plan))  # spread the workers' cycles out
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (began := time.monotonic()) < deadline:
                status, payload = await _request(
                    reader, writer, f"/api/v1/projects/{project}/assignments/next/", token, b""
                )
                if status == 201:
                    assignment = json.loads(payload)["id"]
                    granted.append((index, assignment))
                    status, _ = await _request(
                        reader, writer, f"/api/v1/assignments/{assignment}/submit/", token,
                        submit_body,
                    )  # fmt: skip
                    cycles += status == 200
                errors += status not in (200, 204)
                await asyncio.sleep(max(began + interval - time.monotonic(), 0.0))
        finally:
            writer.close()

    await asyncio.gather(*(worker(slot, *entry) for slot, entry in enumerate(plan)))
    return {
        "granted": granted, "cycles": cycles, "errors": errors,
        "seconds": time.monotonic() - started,
    }  # fmt: skip


def _drive(
    plan: list[tuple[int, str, int]], project: int, seconds: float, rate: float
) -> dict[str, Any]:
    return _run_loop(_drive_async(plan, project, seconds, rate))


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    """On uvloop where it is installed (uvicorn's standard extras bring it, and the servers
    run on it): the bench's own processes then take less of the cores they share."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- WebSocket clients ------------------------------------------------------------------------


@dataclass
class Client:
    index: int
    wire: _Wire | None = None
    # (receive time, raw text): decoded after the run, so a frame costs the client little.
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    closed: int | None = None


class _Wire(asyncio.Protocol):
    """One client connection: the websockets library's sans-I/O protocol under a plain
    asyncio protocol. A frame is timestamped the moment its bytes reach this process, with
    no queue, task or wake-up per frame: a thousand clients share this process and its
    core with the servers, and a client that costs more per frame delays the frames it has
    not yet read and adds its own work to the latency measured."""

    def __init__(self, client: Client, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.client = client
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode

        received = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self.client.frames.append((received, event.data))
                    self.client.ready.set()  # the first frame follows the group joins
            elif self.protocol.handshake_exc is not None:
                self.client.closed = 1006
                self.client.ready.set()
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_rcvd is not None and not self.closing:
            # The server closed first: its code is what the bench reports.
            self.client.closed = self.protocol.close_rcvd.code
            self.client.ready.set()

    def close(self) -> None:
        self.closing = True
        self.protocol.send_close(1000)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.closed is None and not self.closing:
            self.client.closed = 1006  # no close frame: abnormal
        self.client.ready.set()
        self.client.done.set()


async def _open(client: Client, port: int, path: str, gate: asyncio.Semaphore) -> None:
    url = f"ws://127.0.0.1:{port}{path}"
    loop = asyncio.get_running_loop()
    async with gate:
        _, client.wire = await loop.create_connection(lambda: _Wire(client, url), "127.0.0.1", port)
        await asyncio.wait_for(client.ready.wait(), 60)


async def _close(client: Client) -> None:
    if client.wire is not None and not client.done.is_set():
        client.wire.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.done.wait(), 10)


def _stats(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


async def _measure(
    servers: list[Uvicorn], data: dict[str, Any], load_workers: int, seconds: float, rate: float
) -> dict[str, Any]:
    project, tokens = data["project"], data["workers"]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients = [Client(i) for i in range(len(tokens))]
    manager = Client(-1)

    def port(index: int) -> int:
        return servers[index % len(servers)].port

    connect_started = time.monotonic()
    await asyncio.gather(
        _open(manager, port(0), f"/ws/projects/{project}/?token={data['manager']}", gate),
        *(_open(c, port(c.index), f"/ws/worker/?token={tokens[c.index]}", gate)
          for c in clients),
    )  # fmt: skip
    connect_seconds = time.monotonic() - connect_started

    # Clients alternate between the processes; each load worker's HTTP goes to the process
    # its WebSocket is not on (the same one when there is only one).
    plan = [
        (i, tokens[i], servers[(i + 1) % len(servers)].port)
        for i in range(min(load_workers, len(tokens)))
    ]
    pids = [s.pid for s in servers]
    cpu_before = [_cpu_seconds(p) for p in pids]
    own_before, wall_before = time.process_time(), time.monotonic()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        load = await loop.run_in_executor(pool, _drive, plan, project, seconds, rate)
    # Drain: until no frame arrived for two seconds (coalesced frames follow within 0.1 s
    # when the servers keep up), for at most a minute.
    total = -1
    for _ in range(30):
        now = sum(len(c.frames) for c in [manager, *clients])
        if now == total:
            break
        total = now
        await asyncio.sleep(2.0)
    wall = time.monotonic() - wall_before
    server_cpu = sum(_cpu_seconds(p) - b for p, b in zip(pids, cpu_before, strict=True)) / wall
    own_cpu = (time.process_time() - own_before) / wall
    # Connections the server closed before the bench closed them.
    lost = {c.index: c.closed for c in [manager, *clients] if c.closed is not None}

    await asyncio.gather(*(_close(c) for c in [manager, *clients]))
    return {
        "clients": clients, "manager": manager, "load": load, "connect_s": connect_seconds,
        "lost": lost,
        "server_cpu_pct": 100 * server_cpu, "client_cpu_pct": 100 * own_cpu,
    }  # fmt: skip


def _rows(setup: str, result: dict[str, Any], issues: int) -> list[dict[str, Any]]:
    clients: list[Client] = result["clients"]
    load = result["load"]
    common = {
        "cycles_per_s": load["cycles"] / load["seconds"],
        "http_errors": load["errors"],
        "server_cpu_pct": result["server_cpu_pct"],
        "client_cpu_pct": result["client_cpu_pct"],
        "ws_lost": len(result["lost"]),
        "log_issues": issues,
    }
    # Connections the server closed are reported as ws_lost and left out of the counts.
    clients = [c for c in clients if c.index not in result["lost"]]
    parsed = [[(t, json.loads(raw)) for t, raw in c.frames] for c in clients]
    listening = {c.index for c in clients}

    # lease: each granted lease is one event to its worker.
    expected = {(i, assignment) for i, assignment in load["granted"] if i in listening}
    lease_latency = []
    delivered = set()
    for client, frames in zip(clients, parsed, strict=True):
        for received, frame in frames:
            if frame.get("type") == "lease" and "at" in frame:
                delivered.add((client.index, frame["assignment"]))
                lease_latency.append(received - frame["at"])
    rows: list[dict[str, Any]] = [
        {"setup": setup, "event": "lease (direct)", "clients": len(clients),
         "frames": len(expected), "delivered": len(delivered & expected),
         "dropped": len(expected - delivered), **_stats(lease_latency), "fanout_p99_ms": None},
    ]  # fmt: skip

    # queue: every frame (one per commit time) should reach every worker.
    queue: dict[float, list[float]] = {}
    for frames in parsed:
        for received, frame in frames:
            if frame.get("type") == "queue" and "at" in frame:
                queue.setdefault(frame["at"], []).append(received)
    queue_latency = [t - at for at, times in queue.items() for t in times]
    # The fan-out's share: how long after the first client the others got the same frame.
    spread = [t - min(times) for times in queue.values() for t in times]
    received_count = len(queue_latency)
    rows.append(
        {"setup": setup, "event": "queue (coalesced, to all)", "clients": len(clients),
         "frames": len(queue), "delivered": received_count,
         "dropped": len(queue) * len(clients) - received_count, **_stats(queue_latency),
         "fanout_p99_ms": _stats(spread)["p99_ms"]}
    )  # fmt: skip

    manager_frames = [(t, json.loads(raw)) for t, raw in result["manager"].frames]
    progress_latency = [
        t - f["at"] for t, f in manager_frames if f.get("type") == "progress" and "at" in f
    ]
    rows.append(
        {"setup": setup, "event": "progress (coalesced, manager)", "clients": 1,
         "frames": len(progress_latency), "delivered": len(progress_latency), "dropped": None,
         **_stats(progress_latency), "fanout_p99_ms": None}
    )  # fmt: skip
    for row in rows:
        p99 = row["p99_ms"]
        row["target"] = "ok" if p99 is not None and p99 < TARGET_MS else "MISSED"
        row.update(common)
    return rows


# --- set-ups ----------------------------------------------------------------------------------


def _server_env(**overrides: str) -> dict[str, str]:
    """This environment without services of its own, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(overrides, PYTHONUNBUFFERED="1")
    # The servers of one run share a key, as a deployment on PostgreSQL must.
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    return env


def _raise_open_files(clients: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients * 3 + 1024  # this process's sockets, and the servers inherit the limit
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _prepare(env: dict[str, str], workers: int, tasks: int) -> dict[str, Any]:
    from tests.e2e.server import manage

    manage(env, "migrate", "--noinput")
    out = manage(env, "shell", "-c", SETUP.format(tasks=tasks, workers=workers))
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith("{"))
    data: dict[str, Any] = json.loads(line)
    return data


@dataclass
class Size:
    clients: int  # worker connections
    load_workers: int  # of them, taking and submitting tasks
    rate: float  # next+submit cycles/s over all load workers
    seconds: float  # of load

    @property
    def tasks(self) -> int:
        return int(self.rate * self.seconds * 2) + 100


def _run_setup(setup: str, env: dict[str, str], processes: int, size: Size) -> list[dict[str, Any]]:
    log_dir = Path(tempfile.mkdtemp(prefix="crowd-bench-live-logs-"))
    try:
        data = _prepare(env, size.clients, size.tasks)
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(_uvicorn(env, log_dir, f"{setup}-{chr(97 + i)}"))
                for i in range(processes)
            ]
            result = _run_loop(_measure(servers, data, size.load_workers, size.seconds, size.rate))
        issues = _log_issues(sorted(log_dir.glob("*.log")))
        lost = result["lost"]
        print(
            f"[{setup}] {len(data['workers'])} workers connected in {result['connect_s']:.1f} s; "
            f"closed by the server: {len(lost)} (codes {sorted(set(lost.values()))}); "
            f"server log lines flagged: {len(issues)}"
        )
        # The same message with other numbers (times, ports, counts) is one kind of issue.
        kinds = Counter(re.sub(r"\d+", "#", line.partition(": ")[2]) for line in issues)
        for kind, count in kinds.most_common(12):
            print(f"    {count:6d} x {kind[:240]}")
        return _rows(setup, result, len(issues))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def run(quick: bool = False) -> list[dict[str, Any]]:
    from tests.plugins.services import start

    size = Size(
        clients=100 if quick else 1000,
        load_workers=10 if quick else 50,
        rate=10.0 if quick else 20.0,
        seconds=5.0 if quick else 15.0,
    )
    _raise_open_files(size.clients)
    rows: list[dict[str, Any]] = []

    with contextlib.ExitStack() as stack:
        var_dir = tempfile.mkdtemp(prefix="crowd-bench-live-")
        stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
        rows += _run_setup("embedded x1", _server_env(VAR_DIR=var_dir), 1, size)

    with contextlib.ExitStack() as stack:
        postgres = start("postgres")
        stack.callback(postgres.stop)
        redis = start("redis")
        stack.callback(redis.stop)
        var_dir = tempfile.mkdtemp(prefix="crowd-bench-live-")
        stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
        import psycopg

        admin = postgres.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE crowd")
        env = _server_env(DATABASE_URL=postgres.url, REDIS_URL=redis.url, VAR_DIR=var_dir)
        rows += _run_setup("postgres+redis x2", env, 2, size)
    return rows
