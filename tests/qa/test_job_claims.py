"""Two copies of one job at once (a job redelivered while its first copy still runs): the copy
holding the row's claim does the work, the other leaves it; a claim whose holder died lapses
and is taken over; a copy whose claim was taken over writes nothing.

Real threads, each with its own database connection; the first copy is held inside its work
(at a named step of the build) while the other arrives.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from qa import merge
from qa.exports import build
from qa.exports.build import export_options
from qa.models import ConsensusResult, ConsensusRun, DatasetExport
from tasks.models import Project
from tests.factories import WorkerFactory
from tests.qa.helpers import answer, classification_project, no_gold, truthfully

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both_databases]

IMAGES = 4
RESULTS = IMAGES + 1  # and the gold image
WAIT = 30.0


class Gate:
    """Wraps a step of the job: the first call stops there until ``open()``; later calls,
    other copies', pass straight through. Counts the calls."""

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step = step
        self.calls = 0
        self.entered = threading.Event()
        self._open = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self._open.wait(WAIT), "the gate was never opened"
        return self.step(*args, **kwargs)

    def open(self) -> None:
        self._open.set()


class Copy(threading.Thread):
    """One copy of a job, in a thread of its own (so with a database connection of its own)."""

    def __init__(self, job: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.job = job
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.job()
        except BaseException as exc:
            self.error = exc
        finally:
            connection.close()

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the job's copy did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def gate(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> Gate:
    g = Gate(getattr(module, name))
    monkeypatch.setattr(module, name, g)
    return g


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def project(manager: Any) -> Project:
    """A classification project whose real images have one answer each."""
    project, truth = classification_project(manager, images=IMAGES, gold=1)
    worker = WorkerFactory.create()
    while answer(project, worker, truthfully(truth), rand=no_gold) is not None:
        pass
    return project


def export_row(project: Project) -> DatasetExport:
    """A queued version, made without queueing its job (the test runs the copies itself)."""
    fmt, options = export_options(project, {"format": "coco"})
    return DatasetExport.objects.create(project=project, version=1, format=fmt, options=options)


def export_files(settings: Any, export: DatasetExport) -> list[str]:
    folder = Path(settings.MEDIA_ROOT) / "exports" / str(export.project_id) / str(export.pk)
    if not folder.exists():
        return []
    return sorted(p.relative_to(settings.MEDIA_ROOT).as_posix() for p in folder.iterdir())


def result_ids(run: ConsensusRun) -> set[int]:
    return set(ConsensusResult.objects.filter(run=run).values_list("pk", flat=True))


@pytest.fixture
def claims_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO):
        yield caplog


# --- Two copies at once ------------------------------------------------------------------------


def test_two_copies_of_a_consensus_run_at_once_compute_it_once(
    project: Project, settings: Any, monkeypatch: pytest.MonkeyPatch, claims_log: Any
) -> None:
    settings.JOB_LEASE_SECONDS = 0.6  # renewed every 0.2 s
    run = ConsensusRun.objects.create(project=project)
    computed = gate(monkeypatch, merge, "counted_answers")
    first = Copy(lambda: merge.consensus_compute(run_id=run.pk))
    first.start()
    assert computed.entered.wait(WAIT)
    claimed = ConsensusRun.objects.get(pk=run.pk)

    second = merge.consensus_compute(run_id=run.pk)

    assert second is not None
    assert second.status == "running"  # left to the first copy, without an error
    assert "being built by another copy" in claims_log.text
    # The first copy outlives its lease several times over, renewing it: a copy arriving
    # now still finds it alive.
    time.sleep(3 * settings.JOB_LEASE_SECONDS)
    third = merge.consensus_compute(run_id=run.pk)
    assert third is not None
    assert third.status == "running"
    computed.open()
    done = first.outcome()

    assert (done.status, done.error) == ("done", "")
    assert computed.calls == 1  # only the first copy computed
    assert (done.images_done, done.images_total) == (RESULTS, RESULTS)
    assert ConsensusResult.objects.filter(run=run).count() == RESULTS
    assert done.started_at == claimed.started_at  # never restarted by the others
    assert (done.claim_token, done.lease_expires_at) == ("", None)  # released


def test_two_copies_of_an_export_at_once_build_it_once_into_one_file(
    project: Project, settings: Any, monkeypatch: pytest.MonkeyPatch, claims_log: Any
) -> None:
    settings.JOB_LEASE_SECONDS = 0.6
    export = export_row(project)
    writing = gate(monkeypatch, build, "_write")
    first = Copy(lambda: build.export_build(export_id=export.pk))
    first.start()
    assert writing.entered.wait(WAIT)

    second = build.export_build(export_id=export.pk)

    assert second is not None
    assert (second.status, second.attempts) == ("running", 1)
    assert "being built by another copy" in claims_log.text
    time.sleep(2 * settings.JOB_LEASE_SECONDS)
    writing.open()
    done = first.outcome()

    assert (done.status, done.error, done.attempts) == ("done", "", 1)
    assert writing.calls == 1
    assert ConsensusRun.objects.filter(project=project).count() == 1
    assert export_files(settings, done) == [done.file.name]
    data = (Path(settings.MEDIA_ROOT) / done.file.name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == done.sha256
    assert (done.claim_token, done.lease_expires_at) == ("", None)


# --- A holder that died ------------------------------------------------------------------------


def test_a_build_whose_holder_died_is_taken_over_once_its_claim_lapses(
    project: Project, settings: Any, claims_log: Any
) -> None:
    """A worker killed mid-export: the version and its consensus run are claimed by a copy
    that renews nothing any more, and half the run's results are stored."""
    settings.JOB_LEASE_SECONDS = 2.0
    export = export_row(project)
    run = ConsensusRun.objects.create(project=project)
    merge.consensus_compute(run_id=run.pk)
    partial = ConsensusResult.objects.filter(run=run).order_by("pk")
    ConsensusResult.objects.filter(pk__in=list(partial.values_list("pk", flat=True)[:2])).delete()
    dead, now = "dead-host:1:0", timezone.now()
    ConsensusRun.objects.filter(pk=run.pk).update(
        status="running", claim_token=dead, lease_expires_at=now + timedelta(seconds=0.8)
    )
    DatasetExport.objects.filter(pk=export.pk).update(
        status="running", attempts=1, consensus_run=run, started_at=now - timedelta(seconds=5),
        claim_token=dead, lease_expires_at=now + timedelta(seconds=0.4),
    )  # fmt: skip
    started = time.monotonic()

    done = build.export_build(export_id=export.pk)

    assert done is not None
    assert time.monotonic() - started >= 0.6  # it waited for the claims to lapse
    assert (done.status, done.error, done.attempts) == ("done", "", 2)
    assert "lapsed; this copy takes over" in claims_log.text
    run.refresh_from_db()
    assert (run.status, run.images_done, run.claim_token) == ("done", RESULTS, "")
    assert ConsensusResult.objects.filter(run=run).count() == RESULTS
    assert export_files(settings, done) == [done.file.name]


# --- A holder that lost its claim --------------------------------------------------------------


def test_a_consensus_copy_whose_claim_was_taken_over_writes_nothing(
    project: Project, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first copy stalls past its lease (frozen, or cut off from the database), a second
    takes the run over and finishes it; then the first goes on, and must not write."""
    settings.JOB_LEASE_SECONDS = 30.0  # no renewal while the test runs: the lease is set by hand
    run = ConsensusRun.objects.create(project=project)
    storing = gate(monkeypatch, merge, "_store")
    first = Copy(lambda: merge.consensus_compute(run_id=run.pk))
    first.start()
    assert storing.entered.wait(WAIT)
    ConsensusRun.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    second = merge.consensus_compute(run_id=run.pk)
    assert second is not None
    assert second.status == "done"
    stored = result_ids(run)
    assert len(stored) == RESULTS

    storing.open()
    late = first.outcome()  # no error: the run is the other copy's

    assert late.status == "done"
    assert result_ids(run) == stored  # nothing deleted, nothing added
    run.refresh_from_db()
    assert (run.finished_at, run.started_at) == (second.finished_at, second.started_at)
    assert (run.images_done, run.claim_token) == (RESULTS, "")


@pytest.mark.parametrize(
    "step",
    [
        "_write",  # lost while writing its file: it stores nothing
        "_files_remove",  # lost after its last check, about to store: it removes what it stored
    ],
)
def test_an_export_copy_whose_claim_was_taken_over_leaves_no_file(
    project: Project, settings: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    settings.JOB_LEASE_SECONDS = 30.0
    export = export_row(project)
    stalled = gate(monkeypatch, build, step)
    first = Copy(lambda: build.export_build(export_id=export.pk))
    first.start()
    assert stalled.entered.wait(WAIT)
    DatasetExport.objects.filter(pk=export.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    second = build.export_build(export_id=export.pk)
    assert second is not None
    assert (second.status, second.attempts) == ("done", 2)

    stalled.open()
    late = first.outcome()

    assert late.status == "done"
    export.refresh_from_db()
    assert (export.file.name, export.sha256, export.finished_at) == (
        second.file.name, second.sha256, second.finished_at,
    )  # fmt: skip
    assert export_files(settings, export) == [second.file.name]
    assert ConsensusRun.objects.filter(project=project).count() == 1
