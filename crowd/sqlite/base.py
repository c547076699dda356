"""SQLite whose writers, within one process, queue in order instead of polling.

SQLite lets one connection write at a time. A second writer's ``BEGIN IMMEDIATE`` finds the
database locked and SQLite's busy handler puts it to sleep, 1 ms, then 2, 5, 10 ... up to
100 ms at a time, retrying after each nap. The lock may be free for most of such a nap, and a
writer that arrives later may take it first: under load the embedded default spent most of its
time with every request thread asleep and the lock unused, and the slowest requests waited for
seconds (see the README's hot-path section). Here the writers of one process wait on a lock of
the process, in the order they came, and each is woken the moment the one before it commits or
rolls back. Writers in other processes (``manage.py`` commands, a second server) still meet on
SQLite's own lock and its busy timeout, as before.

The lock is taken when a transaction begins (Django begins every ``atomic`` block's
transaction explicitly on SQLite, ``BEGIN IMMEDIATE`` here) and given back when it commits,
rolls back or its connection closes. A write outside any transaction (autocommit) takes it for
that one statement. Waiting longer than the busy timeout raises "database is locked", as SQLite
itself would.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

_READS = ("SELECT", "PRAGMA", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK TO")


class WriterQueue:
    """A lock handed to its waiters first come, first served."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=timeout):
            return True  # handed over by release(): held on this thread's behalf
        with self._mutex:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return False
        return True  # handed over between the timeout and the mutex

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # stays held, now by the next in line
            else:
                self._held = False


_queues: dict[str, WriterQueue] = {}
_queues_mutex = threading.Lock()


def writer_queue(name: str) -> WriterQueue:
    with _queues_mutex:
        return _queues.setdefault(name, WriterQueue())


class DatabaseWrapper(base.DatabaseWrapper):
    _writing = False

    def _parent(self) -> Any:
        return super()  # Django's methods the stubs do not know

    def _writer_acquire(self) -> None:
        if self._writing:
            return
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        if not writer_queue(str(self.settings_dict["NAME"])).acquire(timeout):
            raise OperationalError("database is locked")
        self._writing = True

    def _writer_release(self) -> None:
        if self._writing:
            self._writing = False
            writer_queue(str(self.settings_dict["NAME"])).release()

    def _start_transaction_under_autocommit(self) -> None:
        self._writer_acquire()
        try:
            self._parent()._start_transaction_under_autocommit()
        except BaseException:
            self._writer_release()
            raise

    def _commit(self) -> None:
        try:
            self._parent()._commit()
        finally:
            self._writer_release()

    def _rollback(self) -> None:
        try:
            self._parent()._rollback()
        finally:
            self._writer_release()

    def _close(self) -> None:
        try:
            self._parent()._close()
        finally:
            self._writer_release()

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=QueuedWriteCursor)
        cursor.wrapper = self
        return cursor


class QueuedWriteCursor(base.SQLiteCursorWrapper):
    """Outside a transaction, a statement that writes waits its turn for that statement."""

    wrapper: DatabaseWrapper

    def _alone(self, query: str) -> bool:
        wrapper = self.wrapper
        return (
            not wrapper._writing
            and not wrapper.in_atomic_block
            and not query.lstrip()[:11].upper().startswith(_READS)
        )

    def execute(self, query: str, params: Any = None) -> Any:
        if not self._alone(query):
            return super().execute(query, params)
        self.wrapper._writer_acquire()
        try:
            return super().execute(query, params)
        finally:
            self.wrapper._writer_release()

    def executemany(self, query: str, param_list: Any) -> Any:
        if not self._alone(query):
            return super().executemany(query, param_list)
        self.wrapper._writer_acquire()
        try:
            return super().executemany(query, param_list)
        finally:
            self.wrapper._writer_release()
