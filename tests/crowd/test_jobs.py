"""The embedded default runs background jobs in this process, after the enqueuing commit."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import dramatiq
import pytest
from django.db import transaction

from crowd.jobs import in_process_worker, send_on_commit, wait_for_jobs
from crowd.models import User

pytestmark = pytest.mark.django_db(transaction=True)

_names = itertools.count()


def _actor(fn: Callable[..., None]) -> dramatiq.Actor:
    # Each test registers its own actor name: the broker is process-wide.
    return dramatiq.actor(actor_name=f"test_job_{next(_names)}", max_retries=0)(fn)


def test_a_job_sent_on_commit_runs_in_process_and_sees_the_committed_row() -> None:
    seen: list[str] = []

    @_actor
    def rename(user_id: int) -> None:
        user = User.objects.get(pk=user_id)
        seen.append(user.username)
        User.objects.filter(pk=user_id).update(first_name="renamed by a job")

    with transaction.atomic():
        user = User.objects.create(username="job-subject")
        send_on_commit(rename, user.pk)
    wait_for_jobs()
    assert seen == ["job-subject"]
    assert User.objects.get(pk=user.pk).first_name == "renamed by a job"
    assert in_process_worker() is not None


def test_a_rolled_back_transaction_sends_no_job() -> None:
    ran: list[int] = []

    @_actor
    def record(value: int) -> None:
        ran.append(value)

    def enqueue_then_fail() -> None:
        with transaction.atomic():
            send_on_commit(record, 1)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    record.send(2)
    wait_for_jobs()
    assert ran == [2]
