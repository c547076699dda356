"""PostgreSQL whose connection pool gets rid of all its dead connections at once.

With ``CONN_HEALTH_CHECKS``, Django's pool checks a connection as it leaves the pool, and
psycopg_pool waits a growing back-off (0 s, 1 s, 2 s, 4 s, ...) after each connection that
fails the check before it tries the next. When the database restarts or fails over, every idle
connection is dead at once, so the first request of a process would find them one back-off at
a time: seconds, or a 503 once the pool timeout passes. Here a failed check sends the pool
through all its idle connections (``ConnectionPool.check`` replaces the dead ones), so the
request waits only for one new connection.

The check costs no round trip while the connection is quiet. A connection that sits idle
in the pool has nothing to read: a server that ends it (a terminated backend, a shutdown,
a restart) sends its last message and closes the socket, which then reads as ready. Only
then does the check ask the server; every request would otherwise pay one more round trip
before its first query.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


def _quiet(conn: psycopg.Connection[Any]) -> bool:
    """Open, idle, and nothing from the server waiting on its socket."""
    if (
        conn.closed
        or conn.broken
        or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    ):
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class DatabaseWrapper(base.DatabaseWrapper):
    # Django's (the stubs do not know them): the pools of all aliases, and the per-connection
    # set-up a pooled connection gets.
    _connection_pools: dict[str, ConnectionPool[Any]]
    _configure_connection: Any

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options or not self.settings_dict["CONN_HEALTH_CHECKS"]:
            parent: Any = super()
            return parent.pool
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            created: list[ConnectionPool[Any]] = []

            def check(conn: psycopg.Connection[Any]) -> None:
                if _quiet(conn):
                    return
                try:
                    ConnectionPool.check_connection(conn)
                except psycopg.Error:
                    created[0].check()
                    raise

            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # as Django's pool: Django sets it later
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,
                check=check,
                **({} if options is True else options),
            )
            created.append(pool)
            # Threads racing here each build a pool; the first one stored is the one used.
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]
