"""Live queues: the worker's and the project's channels, snapshots, events after commit,
lease warnings, and coalescing of bursts."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from crowd import live
from crowd.asgi import application
from crowd.live import Coalescer, coalescer
from crowd.ws import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from tasks import routing
from tasks.models import Assignment, Project
from tasks.services import project_transition
from tests.factories import ManagerFactory, WorkerFactory, project_with_tasks, token_for

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost")
BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]


@pytest.fixture(autouse=True)
def _fresh_coalescer(settings):
    settings.LIVE_COALESCE_SECONDS = 0.15
    coalescer().forget()
    coalescer().interval = 0.15
    yield
    coalescer().forget()


async def connect(path: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, path, headers=[ORIGIN])
    connected, _ = await ws.connect()
    assert connected
    return ws


async def frames_until(ws: WebsocketCommunicator, kind: str, timeout: float = 3.0) -> list[dict]:
    """Every frame up to and including the first of type ``kind``."""
    seen = []
    while True:
        frame = await ws.receive_json_from(timeout=timeout)
        seen.append(frame)
        if frame["type"] == kind:
            return seen


@database_sync_to_async
def setup(tasks: int = 5):
    manager = ManagerFactory.create()
    project = project_with_tasks(manager, tasks=tasks, overlap=1)
    worker = WorkerFactory.create()
    return manager, project, worker, token_for(manager), token_for(worker)


@database_sync_to_async
def work(project: Project, worker, count: int = 1) -> list[int]:
    done = []
    for _ in range(count):
        lease = routing.assignment_next(project=project, worker=worker)
        if lease is None:
            break
        routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=BOX)
        done.append(lease.pk)
    return done


async def test_the_worker_snapshot_shows_work_leases_and_balance() -> None:
    _, project, worker, _, token = await setup(tasks=5)
    lease = await database_sync_to_async(routing.assignment_next)(project=project, worker=worker)
    ws = await connect(f"/ws/worker/?token={token}")
    frames = await frames_until(ws, "lease")
    assert frames[0]["type"] == "hello"
    queue = next(f for f in frames if f["type"] == "queue")
    assert queue == {**queue, "project": project.pk, "available": 4, "state": "active"}
    assert frames[-1]["assignment"] == lease.pk
    assert 0 < frames[-1]["seconds_left"] <= 600
    await ws.disconnect()


async def test_a_submission_reaches_the_manager_and_the_workers() -> None:
    _manager, project, worker, manager_token, _worker_token = await setup(tasks=3)
    dashboard = await connect(f"/ws/projects/{project.pk}/?token={manager_token}")
    first = await dashboard.receive_json_from()
    assert first["type"] == "progress"
    assert first["assignments_submitted"] == 0
    assert "spent" in first
    other = WorkerFactory
    peer_token = await database_sync_to_async(lambda: token_for(other.create()))()
    peer = await connect(f"/ws/worker/?token={peer_token}")
    await frames_until(peer, "queue")
    await work(project, worker)
    # The frames coalesce; the latest carries the submission and the task's completion
    # (which commits just after it).
    progress = await frames_until(dashboard, "progress")
    while progress[-1]["done"] < 1:
        progress = await frames_until(dashboard, "progress")
    assert progress[-1]["assignments_submitted"] == 1
    queue = await frames_until(peer, "queue")
    while queue[-1]["available"] != 2:
        queue = await frames_until(peer, "queue")
    await dashboard.disconnect()
    await peer.disconnect()


async def test_who_may_listen_to_a_project() -> None:
    _, project, _, _, worker_token = await setup(tasks=1)
    outsider = await database_sync_to_async(lambda: token_for(ManagerFactory.create()))()
    for token, code in ((worker_token, CLOSE_FORBIDDEN), (outsider, CLOSE_FORBIDDEN),
                        ("not-a-token", CLOSE_UNAUTHENTICATED)):  # fmt: skip
        ws = await connect(f"/ws/projects/{project.pk}/?token={token}")
        assert (await ws.receive_output(timeout=2))["code"] == code
    ws = await connect(f"/ws/projects/{10**9}/?token={outsider}")
    assert (await ws.receive_output(timeout=2))["code"] == CLOSE_FORBIDDEN


async def test_a_lease_about_to_expire_is_announced_once() -> None:
    _, project, worker, _, token = await setup(tasks=2)
    lease = await database_sync_to_async(routing.assignment_next)(project=project, worker=worker)
    ws = await connect(f"/ws/worker/?token={token}")
    await frames_until(ws, "lease")

    @database_sync_to_async
    def nearly_expired() -> int:
        now = timezone.now()
        Assignment.objects.filter(pk=lease.pk).update(
            leased_at=now - timedelta(seconds=570), expires_at=now + timedelta(seconds=30)
        )
        return routing.leases_warn_expiring()

    assert await nearly_expired() == 1
    warning = await frames_until(ws, "lease_expiring")
    assert warning[-1]["assignment"] == lease.pk
    assert 0 < warning[-1]["seconds_left"] <= 30
    assert await database_sync_to_async(routing.leases_warn_expiring)() == 0
    later = []
    while not await ws.receive_nothing(timeout=0.3):
        later.append((await ws.receive_json_from())["type"])
    assert "lease_expiring" not in later
    await ws.disconnect()


async def test_a_project_that_opens_is_pushed_to_connected_workers() -> None:
    manager, _project, _worker, _, token = await setup(tasks=1)

    @database_sync_to_async
    def second_project() -> Project:
        other = project_with_tasks(manager, tasks=3, overlap=2)
        project_transition(project=other, action="pause")
        return other

    other = await second_project()
    ws = await connect(f"/ws/worker/?token={token}")
    await frames_until(ws, "queue")
    await database_sync_to_async(project_transition)(project=other, action="start")
    frames = await frames_until(ws, "queue")
    while frames[-1]["project"] != other.pk:
        frames = await frames_until(ws, "queue")
    assert frames[-1]["available"] == 6
    await ws.disconnect()


async def test_a_suspended_worker_hears_nothing_of_the_project_until_reinstated() -> None:
    from qa.services import worker_reinstate, worker_suspend

    manager, project, worker, _, token = await setup(tasks=30)
    others = await database_sync_to_async(lambda: [WorkerFactory.create() for _ in range(2)])()
    await work(project, worker)  # the worker is known to the project

    async def queue_frames(ws: WebsocketCommunicator) -> list[dict]:
        await asyncio.sleep(0.4)  # past the coalescing interval
        frames = []
        while not await ws.receive_nothing(timeout=0.3):
            frames.append(await ws.receive_json_from())
        return [f for f in frames if f["type"] == "queue" and f["project"] == project.pk]

    ws = await connect(f"/ws/worker/?token={token}")
    await frames_until(ws, "score")  # the snapshot's last frame: the worker's standing
    await database_sync_to_async(worker_suspend)(
        project=project, worker_id=worker.pk, by=manager, reason="Boxes far too loose."
    )
    score = await frames_until(ws, "score")
    assert score[-1]["status"] == "suspended"
    await work(project, others[0], count=3)
    assert await queue_frames(ws) == []

    # Connecting again while suspended: no frame of the project in the snapshot either.
    again = await connect(f"/ws/worker/?token={token}")
    snapshot = await frames_until(again, "score")
    assert not [f for f in snapshot if f["type"] == "queue" and f["project"] == project.pk]
    await again.disconnect()

    # A project that reopens is not announced to a worker suspended from it.
    await database_sync_to_async(project_transition)(project=project, action="pause")
    await database_sync_to_async(project_transition)(project=project, action="start")
    assert await queue_frames(ws) == []

    await database_sync_to_async(worker_reinstate)(project=project, worker_id=worker.pk, by=manager)
    frames = await queue_frames(ws)
    assert frames, "the reinstated worker hears of the project's work again"
    await work(project, others[1], count=2)
    assert await queue_frames(ws) != []
    await ws.disconnect()


async def test_a_burst_of_submissions_is_a_few_frames() -> None:
    _, project, _, manager_token, _ = await setup(tasks=120)
    dashboard = await connect(f"/ws/projects/{project.pk}/?token={manager_token}")
    await dashboard.receive_json_from()
    workers = await database_sync_to_async(lambda: [WorkerFactory.create() for _ in range(6)])()
    started = time.monotonic()
    for w in workers:
        await work(project, w, count=20)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.4)
    frames = []
    while not await dashboard.receive_nothing(timeout=0.3):
        frames.append(await dashboard.receive_json_from())
    progress = [f for f in frames if f["type"] == "progress"]
    assert progress[-1]["assignments_submitted"] == 120
    # 120 submissions (and 120 leases): at most one frame per interval, plus the first.
    assert len(progress) <= elapsed / 0.15 + 3
    assert len(progress) < 60
    await dashboard.disconnect()


class Recording(Coalescer):
    """Records the ``n`` of each frame it sends instead of sending it."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval=interval)
        self.sent: list[int] = []
        self._lock = threading.Lock()

    def _send(self, key, group, build, committed):
        with self._lock:
            self.sent.append(build()["n"])
        return True


def burst(c: Coalescer, submissions: int) -> float:
    """``submissions`` changes of one key a millisecond apart, the n-th frame saying n; the
    seconds they took."""
    counter = {"n": 0}
    started = time.monotonic()
    for _ in range(submissions):
        counter["n"] += 1
        c.submit("k", "g", lambda: {"n": counter["n"]})
        time.sleep(0.001)
    return time.monotonic() - started


def test_the_coalescer_sends_the_first_at_once_and_the_latest_last() -> None:
    c = Recording(interval=0.1)
    elapsed = burst(c, 500)
    time.sleep(0.3)
    sent = c.sent
    assert sent[0] == 1  # the leading frame went at once
    assert sent[-1] == 500  # the trailing frame carries the latest state
    assert len(sent) <= elapsed / 0.1 + 2
    assert sent == sorted(sent)


def test_changes_to_a_waiting_frame_do_not_wake_the_frames_thread() -> None:
    """Under load every submission touches the same few keys: while a key's frame waits out
    its quiet period, a change to it has nothing for the thread to do sooner."""
    c = Recording(interval=0.2)
    wakes = {"n": 0}
    notify = c._wake.notify

    def counted_notify(n: int = 1) -> None:
        wakes["n"] += 1
        notify(n)

    c._wake.notify = counted_notify  # type: ignore[method-assign]
    elapsed = burst(c, 300)
    time.sleep(0.5)
    # The first submission of each quiet period wakes it (its frame went, so the key is
    # new again): a handful, not 300.
    assert wakes["n"] <= elapsed / 0.2 + 2
    assert wakes["n"] < 100
    assert c.sent[0] == 1
    assert c.sent[-1] == 300  # the trailing frame still carries the latest state


def test_a_frame_with_nothing_new_is_not_sent_and_does_not_hold_the_next(monkeypatch) -> None:
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(live, "send_now", lambda group, event: sent.append((group, event)))
    monkeypatch.setattr(live, "listening", lambda group: True)  # someone is connected
    state = {"available": 700}
    c = Coalescer(interval=0.5)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 2
        while len(sent) < count and time.monotonic() < deadline:
            time.sleep(0.005)

    c.submit("k", "g", lambda: dict(state))
    wait_for(1)
    time.sleep(0.6)
    c.submit("k", "g", lambda: dict(state))  # the same numbers: nothing to say
    time.sleep(0.1)
    assert len(sent) == 1
    state["available"] = 690
    submitted = time.monotonic()
    c.submit("k", "g", lambda: dict(state))
    wait_for(2)
    # Sent at once: the skipped frame did not start a quiet period.
    assert time.monotonic() - submitted < 0.3
    assert [event["available"] for _, event in sent] == [700, 690]
    assert all("at" in event for _, event in sent)


@pytest.mark.django_db
def test_a_workers_snapshot_reads_every_projects_queue_in_two_queries(manager) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks import events
    from tests.factories import project_with_tasks

    projects = [project_with_tasks(manager, tasks=i + 1, overlap=2).pk for i in range(8)]
    for count in (1, 8):
        with CaptureQueriesContext(connection) as queries:
            frames = events.queue_frames(projects[:count])
        assert len(queries) == 2
        assert frames == [events.queue_frame(pk) for pk in projects[:count]]
    assert [f["available"] for f in frames] == [2 * (i + 1) for i in range(8)]


def test_a_frame_nobody_listens_to_is_not_built(monkeypatch) -> None:
    """A progress frame costs aggregate queries: with no live connection in its group it is
    not built; once one joins, the next change is."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(live, "send_now", lambda group, event: sent.append((group, event)))
    built: list[int] = []

    def build() -> dict:
        built.append(1)
        return {"n": len(built)}

    c = Coalescer(interval=0.05)
    c.submit("k", "nobody.here", build)
    time.sleep(0.3)
    assert built == []
    assert sent == []
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("nobody.here", channel)
    try:
        assert live.listening("nobody.here")
        c.submit("k", "nobody.here", build)
        deadline = time.monotonic() + 2
        while not sent and time.monotonic() < deadline:
            time.sleep(0.005)
        assert built == [1]
        assert [group for group, _ in sent] == ["nobody.here"]
    finally:
        async_to_sync(layer.group_discard)("nobody.here", channel)
    assert not live.listening("nobody.here")
