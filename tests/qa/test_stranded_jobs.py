"""Consensus runs and exports whose job is gone: the periodic sweep sends the job again.

A row stays queued or running with nothing to finish it when the copy holding its claim died
and no other copy is coming (the other acknowledged its message, or the broker lost it), or
when a queued row's message was lost before it started. The sweep (``leases_sweep``, which
runs the work apps register) sends such jobs again once per lapse, within the job's limits,
and never the job of a row a live copy holds.

Jobs go through the embedded stub broker and its in-process worker, as everywhere in the
suite; the live copy is a thread of its own (a database connection of its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from crowd.jobs import wait_for_jobs
from qa import jobs, merge
from qa.exports.build import export_options
from qa.models import ConsensusResult, ConsensusRun, DatasetExport
from tasks.jobs import leases_sweep
from tasks.models import Project
from tests.factories import WorkerFactory
from tests.qa.helpers import answer, classification_project, no_gold, truthfully

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both_databases]

IMAGES = 3
RESULTS = IMAGES + 1  # and the gold image
DEAD = "dead-host:1:0"
WAIT = 30.0


@pytest.fixture
def project(manager: Any) -> Project:
    project, truth = classification_project(manager, images=IMAGES, gold=1)
    worker = WorkerFactory.create()
    while answer(project, worker, truthfully(truth), rand=no_gold) is not None:
        pass
    return project


@pytest.fixture(autouse=True)
def _short_leases(settings: Any, tmp_path: Any) -> None:
    """Leases renewed every 0.2 s, and a lapse taken as final after 1.2 s."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.JOB_LEASE_SECONDS = 0.6
    settings.JOB_HEARTBEAT_TIMEOUT_MS = 500
    assert jobs.lapse_margin() == timedelta(seconds=1.2)


class Sent:
    """The ids each job was sent with; the messages go on to the broker unless ``lose``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[int] = []
        self.exports: list[int] = []
        self.lose = False
        for actor, ids in ((jobs.consensus_compute, self.runs), (jobs.export_build, self.exports)):
            monkeypatch.setattr(actor, "send", self._spy(actor.send, ids))

    def _spy(self, send: Callable[..., Any], ids: list[int]) -> Callable[..., Any]:
        def spy(pk: int) -> Any:
            ids.append(pk)
            return None if self.lose else send(pk)

        return spy


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    return Sent(monkeypatch)


def sweep() -> None:
    leases_sweep.fn()


def dead_holder(model: Any, pk: int, *, lapsed: float = 2.0, **fields: Any) -> None:
    """The row as a copy that died left it: claimed, its lease lapsed ``lapsed`` s ago."""
    now = timezone.now()
    model.objects.filter(pk=pk).update(
        status="running", claim_token=DEAD, lease_expires_at=now - timedelta(seconds=lapsed),
        started_at=now - timedelta(seconds=30), **fields,
    )  # fmt: skip


def export_row(project: Project) -> DatasetExport:
    """A version made without sending its job (the test says what happened to it)."""
    fmt, options = export_options(project, {"format": "coco"})
    return DatasetExport.objects.create(project=project, version=1, format=fmt, options=options)


def test_a_run_and_an_export_whose_jobs_are_gone_are_finished_after_the_sweep(
    project: Project, sent: Sent
) -> None:
    run = ConsensusRun.objects.create(project=project)
    dead_holder(ConsensusRun, run.pk)
    # Queued long ago and never started: its message was lost with the broker.
    export = export_row(project)
    DatasetExport.objects.filter(pk=export.pk).update(
        created_at=timezone.now() - jobs.UNSTARTED_AFTER - timedelta(seconds=1)
    )

    sweep()
    wait_for_jobs()

    assert (sent.runs, sent.exports) == ([run.pk], [export.pk])
    run.refresh_from_db()
    assert (run.status, run.error, run.claim_token) == ("done", "", "")
    assert (run.images_done, run.images_total) == (RESULTS, RESULTS)
    export.refresh_from_db()
    assert (export.status, export.error, export.attempts) == ("done", "", 1)
    assert ConsensusResult.objects.filter(run=export.consensus_run).count() == RESULTS
    sweep()  # nothing left to send
    assert (sent.runs, sent.exports) == ([run.pk], [export.pk])


def test_a_run_whose_holder_lives_is_not_sent_again(
    project: Project, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ConsensusRun.objects.create(project=project)
    inside, go_on = threading.Event(), threading.Event()
    counted_answers = merge.counted_answers

    def held(*args: Any) -> Any:
        inside.set()
        assert go_on.wait(WAIT)
        return counted_answers(*args)

    monkeypatch.setattr(merge, "counted_answers", held)
    outcome: list[Any] = []

    def holder() -> None:
        try:
            outcome.append(merge.consensus_compute(run_id=run.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert inside.wait(WAIT)
    token = ConsensusRun.objects.get(pk=run.pk).claim_token
    # Longer than a lease and the margin after it: only the renewals keep the claim alive.
    time.sleep(3.0)

    sweep()

    assert sent.runs == []
    assert ConsensusRun.objects.get(pk=run.pk).claim_token == token
    go_on.set()
    thread.join(WAIT)
    assert outcome[0].status == "done"
    assert sent.runs == []


def test_a_job_is_sent_again_once_per_lapse(project: Project, sent: Sent) -> None:
    """Sent again and lost again: the next sweeps leave it until that message had time to
    start, then take it as lost too."""
    run = ConsensusRun.objects.create(project=project)
    dead_holder(ConsensusRun, run.pk)
    sent.lose = True

    sweep()
    sweep()

    assert sent.runs == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.claim_token[: len(jobs.RESENT)]) == ("running", jobs.RESENT)
    ConsensusRun.objects.filter(pk=run.pk).update(
        claim_token=jobs._stamp(timezone.now() - jobs.UNSTARTED_AFTER - timedelta(seconds=1))
    )
    sent.lose = False

    sweep()
    wait_for_jobs()

    assert sent.runs == [run.pk, run.pk]
    run.refresh_from_db()
    assert run.status == "done"


def test_a_lapse_shorter_than_the_margin_is_left_to_the_broker(
    project: Project, sent: Sent
) -> None:
    """A dead worker's message comes back from the broker within about a lease: the sweep
    gives it the margin first."""
    run = ConsensusRun.objects.create(project=project)
    dead_holder(ConsensusRun, run.pk, lapsed=0.5)

    sweep()

    assert sent.runs == []
    run.refresh_from_db()
    assert (run.status, run.claim_token) == ("running", DEAD)


def test_jobs_past_their_limits_fail_instead(project: Project, sent: Sent) -> None:
    export = export_row(project)
    dead_holder(DatasetExport, export.pk, attempts=4)  # 1 + max_retries builds, each died
    run = ConsensusRun.objects.create(project=project)
    dead_holder(ConsensusRun, run.pk)
    ConsensusRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(hours=4, minutes=1)
    )

    sweep()

    assert (sent.runs, sent.exports) == ([], [])
    export.refresh_from_db()
    assert (export.status, export.claim_token, export.lease_expires_at) == ("failed", "", None)
    assert "started 4 times" in export.error
    run.refresh_from_db()
    assert run.status == "failed"
    assert "more than 4 hours" in run.error
