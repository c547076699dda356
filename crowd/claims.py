"""Claims: one copy of a job at a time builds a row's results.

Jobs are delivered at least once. The Redis broker gives a job to another worker once the
worker running it has been silent for ``JOB_HEARTBEAT_TIMEOUT_MS``, and a worker cut off from
Redis but not from the database goes on running it: two copies of one job at once. So a job
that builds one row's results (a consensus run, a dataset export) first claims the row:

- one conditional UPDATE sets a token of this copy's own and a lease where the row is not
  done and no lease holds it (none, or one that has lapsed): one changed row means this copy
  holds it, on SQLite and PostgreSQL alike. Leases are read by the database's clock, the one
  clock all job workers share;
- while the job runs, a heartbeat thread renews the lease by the token every third of
  ``JOB_LEASE_SECONDS``, so a job may run far longer than its lease;
- every write of results is fenced (:meth:`Claim.fence`): the transaction that writes them
  first updates the row by the token, so a copy that lost its claim (its lease lapsed while
  it was frozen or cut off from the database, and another copy took over) writes nothing and
  stops (:class:`ClaimLost`);
- the claim is released together with the row's final state, done or failed.

A copy that finds the row claimed waits to learn whether the holder is alive: a renewed lease
says it is, and this copy leaves the row to it, without an error that the broker would retry;
a lease that lapses unrenewed says it died, and this copy takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Model, Q, QuerySet
from django.db.models.functions import Now

logger = logging.getLogger(__name__)


class ClaimLost(Exception):
    """Another copy of the job took the row over: this copy must stop and write nothing."""


def _expiry(seconds: float) -> ExpressionWrapper:
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def _token() -> str:
    """Unique to one claim; says which host and process hold it, for whoever reads the row."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def _label(model: type[Model], pk: int) -> str:
    return f"{model._meta.verbose_name} {pk}"


class Claim:
    """This copy's hold on one row. As a context manager it keeps the lease renewed, and on
    leaving frees the row if :meth:`release` did not (so the next delivery need not wait out
    the lease)."""

    def __init__(
        self, model: type[Model], pk: int, token: str, *, lease: float, heartbeat: bool
    ) -> None:
        self.model, self.pk, self.token, self.lease = model, pk, token, lease
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._released = False
        self._thread: threading.Thread | None = None
        if heartbeat:
            self._thread = threading.Thread(
                target=self._beat, name=f"claim-{model._meta.model_name}-{pk}", daemon=True
            )

    def __enter__(self) -> Claim:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._released:
            try:
                self.release()
            except DatabaseError:
                logger.warning("could not free %s", _label(self.model, self.pk), exc_info=True)
        self._stop_heartbeat()

    def _mine(self) -> QuerySet[Any]:
        return self.model._default_manager.filter(pk=self.pk, claim_token=self.token)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """ClaimLost if the heartbeat found the row taken over (no query)."""
        if self._lost.is_set():
            raise ClaimLost(f"{_label(self.model, self.pk)} was taken over by another copy")

    def fence(self, **fields: Any) -> None:
        """Renew the lease and set ``fields`` if this copy still holds the row, else ClaimLost.

        Call it first in the transaction that writes results: it makes them this copy's
        alone. On PostgreSQL the UPDATE keeps the row locked until the transaction ends, so a
        copy taking over waits for it (and then sees the lease just renewed); on SQLite the
        transaction holds the database's write lock.
        """
        if self._mine().update(lease_expires_at=_expiry(self.lease), **fields) != 1:
            self._lost.set()
            raise ClaimLost(f"{_label(self.model, self.pk)} was taken over by another copy")

    def release(self, **fields: Any) -> bool:
        """Set the row's final ``fields`` and free it, in one statement. False, and nothing
        written, if another copy holds the row now."""
        self._stop_heartbeat()
        self._released = True
        held = self._mine().update(claim_token="", lease_expires_at=None, **fields) == 1
        if not held:
            self._lost.set()
        return held

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.lease / 3):
                try:
                    renewed = self._mine().update(lease_expires_at=_expiry(self.lease))
                except DatabaseError:
                    # The next beat may get through; the lease has two more beats of room.
                    logger.warning(
                        "could not renew the claim on %s", _label(self.model, self.pk),
                        exc_info=True,
                    )  # fmt: skip
                    connection.close_if_unusable_or_obsolete()
                    continue
                if renewed != 1:
                    logger.warning(
                        "%s was taken over by another copy of its job; this copy stops",
                        _label(self.model, self.pk),
                    )
                    self._lost.set()
                    return
        finally:
            connection.close()


def claim(
    model: type[Model],
    pk: int,
    *,
    done: str | tuple[str, ...],
    fields: Callable[[], dict[str, Any]] = dict,
) -> Claim | None:
    """Claim row ``pk`` of ``model`` (with ``status``, ``claim_token`` and
    ``lease_expires_at``) for this copy of a job, setting ``fields()`` in the same UPDATE.

    None if the row is gone, its status is ``done`` (a final status, or a tuple of them), or a
    live copy of the job holds it (seen renewing its lease): the caller leaves the row alone.
    A lease that lapses without a renewal is taken over, so this waits at most about one
    lease. Use the claim as a context manager around the work.

    A claim taken inside a transaction gets no heartbeat: no other connection could renew
    it, and the row lock of the UPDATE holds other copies off until the transaction ends.
    """
    label = _label(model, pk)
    final = (done,) if isinstance(done, str) else done
    lease = float(settings.JOB_LEASE_SECONDS)
    heartbeat = not transaction.get_connection().in_atomic_block
    poll = min(1.0, max(0.05, lease / 10))
    deadline = time.monotonic() + 1.5 * lease + poll
    rows = model._default_manager.filter(pk=pk)
    first_seen: tuple[str, Any] | None = None
    while True:
        token = _token()
        free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=Now())
        changed = (
            rows.filter(free)
            .exclude(status__in=final)
            .update(claim_token=token, lease_expires_at=_expiry(lease), **fields())
        )
        if changed == 1:
            if first_seen is not None:
                logger.info(
                    "%s: the claim of %s lapsed; this copy takes over", label, first_seen[0]
                )
            return Claim(model, pk, token, lease=lease, heartbeat=heartbeat)
        row = rows.values_list("status", "claim_token", "lease_expires_at").first()
        if row is None or row[0] in final:
            return None
        holder = (row[1], row[2])
        if first_seen is None:
            first_seen = holder
        elif holder != first_seen and holder[0]:
            logger.info(
                "%s is being built by another copy of its job (%s); this copy leaves it",
                label, holder[0],
            )  # fmt: skip
            return None
        if time.monotonic() > deadline:
            logger.warning(
                "%s stays claimed by %s, with no renewal seen; this copy leaves it",
                label, holder[0],
            )  # fmt: skip
            return None
        time.sleep(poll)
