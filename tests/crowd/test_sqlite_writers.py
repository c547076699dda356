"""The embedded default's writers queue in order on a lock of the process (crowd/sqlite):
no writer sleeps in SQLite's busy handler while the database is free, none is lost, and a
transaction that fails gives the lock back."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pytest
from django.db import OperationalError, connection, connections, transaction

from crowd.sqlite.base import WriterQueue, writer_queue
from tasks.models import Project, Task
from tests.factories import ManagerFactory, project_with_tasks

pytestmark = pytest.mark.django_db(transaction=True)


def in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_the_queue_hands_the_lock_over_in_arrival_order() -> None:
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    order: list[int] = []
    threads = []
    for i in range(5):

        def wait(i: int = i) -> None:
            assert queue.acquire(timeout=10)
            order.append(i)
            queue.release()

        thread = threading.Thread(target=wait)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # each waiter in line before the next comes
    queue.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]
    assert queue.acquire(timeout=0.1)  # free again once the line is through


def test_a_waiter_that_gives_up_leaves_the_line() -> None:
    queue = WriterQueue()
    assert queue.acquire(timeout=1)
    started = time.monotonic()
    assert not queue.acquire(timeout=0.2)
    assert time.monotonic() - started >= 0.2
    queue.release()
    # The lock is free, not handed to the waiter that left.
    assert queue.acquire(timeout=0.1)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded default's engine")
def test_concurrent_read_modify_writes_lose_nothing() -> None:
    project = project_with_tasks(ManagerFactory.create(), 1, 1)

    task = Task.objects.get(project=project)

    def bump(_: int) -> None:
        for _ in range(20):
            with transaction.atomic():
                row = Task.objects.get(pk=task.pk)
                time.sleep(0.001)  # another writer would slip in here without the lock
                Task.objects.filter(pk=row.pk).update(priority=row.priority + 1)

    assert in_threads(8, bump) == []
    assert Task.objects.get(pk=task.pk).priority == 160


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded default's engine")
def test_a_failed_transaction_gives_the_lock_back() -> None:
    project = project_with_tasks(ManagerFactory.create(), 1, 1)

    def fail_then_write(i: int) -> None:
        if i % 2 == 0:
            with contextlib.suppress(RuntimeError), transaction.atomic():
                Project.objects.filter(pk=project.pk).update(name="rolled back")
                raise RuntimeError("boom")
        else:
            Project.objects.filter(pk=project.pk).update(name=f"written {i}")

    assert in_threads(6, fail_then_write) == []
    assert Project.objects.get(pk=project.pk).name.startswith("written")
    queue = writer_queue(str(connection.settings_dict["NAME"]))
    assert queue.acquire(timeout=0.1)  # nobody holds it
    queue.release()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded default's engine")
def test_a_writer_waits_no_longer_than_the_busy_timeout() -> None:
    project = project_with_tasks(ManagerFactory.create(), 1, 1)
    holding, done = threading.Event(), threading.Event()

    def hold(_: int) -> None:
        with transaction.atomic():
            Project.objects.filter(pk=project.pk).update(name="held")
            holding.set()
            done.wait(timeout=10)

    holder = threading.Thread(target=in_threads, args=(1, hold))
    holder.start()
    assert holding.wait(timeout=10)
    options = connection.settings_dict["OPTIONS"]
    before = options.get("timeout")
    options["timeout"] = 0.2
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), transaction.atomic():
            pass
        assert 0.2 <= time.monotonic() - started < 5
    finally:
        options["timeout"] = before
        done.set()
        holder.join(timeout=10)
    # The one that timed out holds nothing: the next transaction goes through.
    with transaction.atomic():
        Project.objects.filter(pk=project.pk).update(name="after")
    assert Project.objects.get(pk=project.pk).name == "after"
