"""A job worker killed with SIGKILL mid-job: the Redis broker redelivers the job to another
worker within a bounded time, and the job, run again over its own half-done work, still ends
with one dataset version, one file and one consensus result per image.

Real processes: ``manage.py rundramatiq`` on the Redis broker and PostgreSQL; the job is
queued by the same service the API calls.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from tests.reliability.processes import job_worker, running
from tests.reliability.seeding import seed_in

pytestmark = pytest.mark.postgres

# Enough answered images for consensus and the export to run for several seconds.
IMAGES = 4_000
BOXES_PER_IMAGE = 5
# The broker gives a dead worker's message back once its heartbeat is this old...
HEARTBEAT_TIMEOUT = settings.JOB_HEARTBEAT_TIMEOUT_MS / 1000
# ...and the replacement takes it at its next poll of the queue (about a second); the rest
# is room for a replacement that starts slowly on a busy machine.
REDELIVERY_BOUND = HEARTBEAT_TIMEOUT + 10.0


def _one(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row


def _wait(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Poll until ``check()``; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic()


def _kill_mid_job(
    env: dict[str, str], seed: str, mid_job: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], float]:
    """Start a job worker, seed (queueing the job), SIGKILL the worker's process group as
    soon as ``mid_job(seeded)`` holds; returns what was seeded and when the kill happened."""
    with running(job_worker(env)) as worker:  # starts while the data is written
        seeded = seed_in(env, seed)
        worker.wait_ready()
        _wait("the job half done", lambda: mid_job(seeded), timeout=90, interval=0.01)
        worker.kill()
        return seeded, time.monotonic()


def _finish_elsewhere(
    env: dict[str, str], redelivered: Callable[[], bool], finished: Callable[[], bool]
) -> float:
    """Run a new job worker until the job is finished; when it was redelivered."""
    with running(job_worker(env)) as worker:
        worker.wait_ready()
        redelivered_at = _wait(
            "the job given to the new worker", redelivered, REDELIVERY_BOUND + 30, interval=0.1
        )
        _wait("the job finished", finished, timeout=90)
    return redelivered_at


def test_export_killed_mid_build_is_redelivered_and_built_once(
    services_env: dict[str, str], db_conn: psycopg.Connection
) -> None:
    env = services_env

    def export_row(export: int) -> tuple[Any, ...]:
        return _one(
            db_conn,
            "SELECT status, attempts, images_done, consensus_run_id, started_at "
            "FROM qa_datasetexport WHERE id = %s",
            export,
        )

    def writing(seeded: dict[str, Any]) -> bool:
        """Part of the build's work is written: some of its consensus run's results are
        stored or (if that went by between two looks) part of the file."""
        status, _, images_done, run_id, _ = export_row(seeded["export"])
        if status != "running":
            return False
        run_done = db_conn.execute(
            "SELECT images_done FROM qa_consensusrun WHERE id = %s", (run_id,)
        ).fetchone()
        return images_done > 0 or (run_done is not None and run_done[0] > 0)

    seeded, killed_at = _kill_mid_job(
        env,
        f"s = seeding.answered(images={IMAGES}); "
        "seeding.export_queue(project_id=s['project'], user_id=s['manager'])",
        writing,
    )
    project, export = seeded["project"], seeded["export"]
    status, attempts, _, run_id, started = export_row(export)
    assert (status, attempts) == ("running", 1), "the build finished before it could be killed"

    redelivered_at = _finish_elsewhere(
        env,
        redelivered=lambda: export_row(export)[1] == 2,
        finished=lambda: export_row(export)[0] in ("done", "failed"),
    )
    assert redelivered_at - killed_at <= REDELIVERY_BOUND

    status, attempts, images_done, run_id_after, started_after = export_row(export)
    error, counts, file_name, sha256, size = _one(
        db_conn,
        "SELECT error, counts, file, sha256, size_bytes FROM qa_datasetexport WHERE id = %s",
        export,
    )
    assert (status, error, attempts) == ("done", "", 2)
    assert started_after > started
    exports = _one(db_conn, "SELECT count(*) FROM qa_datasetexport WHERE project_id = %s", project)
    assert exports == (1,)
    # The retry finished the consensus run its first attempt started: no second run.
    assert run_id_after == run_id
    runs = db_conn.execute(
        "SELECT id, status, images_total FROM qa_consensusrun WHERE project_id = %s", (project,)
    ).fetchall()
    assert runs == [(run_id, "done", IMAGES)]
    results = _one(db_conn, "SELECT count(*) FROM qa_consensusresult WHERE run_id = %s", run_id)
    assert results == (IMAGES,)

    # Exactly one file, complete and matching its row.
    media = Path(env["VAR_DIR"]) / "media"
    files = sorted(p for p in (media / "exports").rglob("*") if p.is_file())
    assert [p.relative_to(media).as_posix() for p in files] == [file_name]
    data = files[0].read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha256)
    coco = json.loads(data)
    assert len(coco["images"]) == IMAGES
    assert len(coco["annotations"]) == IMAGES * BOXES_PER_IMAGE
    assert (counts["images"], counts["annotations"]) == (IMAGES, IMAGES * BOXES_PER_IMAGE)
    assert images_done == IMAGES


def test_consensus_run_killed_mid_store_is_redelivered_without_duplicates(
    services_env: dict[str, str], db_conn: psycopg.Connection
) -> None:
    env = services_env

    def run_row(run: int) -> tuple[Any, ...]:
        return _one(
            db_conn,
            "SELECT status, images_done, images_total, started_at, error FROM qa_consensusrun "
            "WHERE id = %s",
            run,
        )

    def stored(run: int) -> int:
        return int(
            _one(db_conn, "SELECT count(*) FROM qa_consensusresult WHERE run_id = %s", run)[0]
        )

    def storing(seeded: dict[str, Any]) -> bool:
        """Between two batches of stored results."""
        status, images_done, *_ = run_row(seeded["run"])
        return status == "running" and images_done > 0

    seeded, killed_at = _kill_mid_job(
        env,
        f"s = seeding.answered(images={IMAGES}); "
        "seeding.consensus_queue(project_id=s['project'], user_id=s['manager'])",
        storing,
    )
    project, run = seeded["project"], seeded["run"]
    status, _, _, started, _ = run_row(run)
    assert status == "running", "the run finished before it could be killed"
    # Some results stored (all of them, if the kill came just after the last batch): the
    # retry must replace them, not add to them.
    assert 0 < stored(run) <= IMAGES

    redelivered_at = _finish_elsewhere(
        env,
        redelivered=lambda: run_row(run)[3] != started,
        finished=lambda: run_row(run)[0] in ("done", "failed"),
    )
    assert redelivered_at - killed_at <= REDELIVERY_BOUND

    status, done, total, _, error = run_row(run)
    assert (status, error, done, total) == ("done", "", IMAGES, IMAGES)
    rows, images, merged, boxes = _one(
        db_conn,
        "SELECT count(*), count(DISTINCT image_id), count(*) FILTER (WHERE method = 'box_em'), "
        "sum(jsonb_array_length(annotations)) FROM qa_consensusresult WHERE run_id = %s",
        run,
    )
    assert (rows, images, merged, boxes) == (IMAGES, IMAGES, IMAGES, IMAGES * BOXES_PER_IMAGE)
    runs = _one(db_conn, "SELECT count(*) FROM qa_consensusrun WHERE project_id = %s", project)
    assert runs == (1,)


def test_a_build_killed_after_storing_its_file_leaves_one_file_when_retried(
    db: None, settings: Any, tmp_path: Path
) -> None:
    """The narrow window the process test cannot aim at: the file stored, the row not yet
    saved. The retry must replace that file, not store a second one beside it."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from crowd.models import User
    from qa.exports.build import export_build, export_request
    from qa.models import ConsensusRun, DatasetExport
    from tasks.models import Project
    from tests.reliability import seeding

    settings.MEDIA_ROOT = tmp_path / "media"
    seeded = seeding.answered(images=20)
    project = Project.objects.get(pk=seeded["project"])
    export = export_request(
        project=project, user=User.objects.get(pk=seeded["manager"]), data={"format": "coco"}
    )
    # What the killed first attempt left: its file stored under the version's name.
    folder = f"exports/{project.pk}/{export.pk}"
    default_storage.save(f"{folder}/answered-project-v1-coco.json", ContentFile(b'{"partial'))
    DatasetExport.objects.filter(pk=export.pk).update(status="running", attempts=1)

    built = export_build(export_id=export.pk)

    assert built is not None
    assert (built.status, built.attempts) == ("done", 2)
    files = sorted((tmp_path / "media" / folder).iterdir())
    assert [f"{folder}/{p.name}" for p in files] == [built.file.name]
    data = files[0].read_bytes()
    assert hashlib.sha256(data).hexdigest() == built.sha256
    assert len(json.loads(data)["images"]) == 20
    assert ConsensusRun.objects.filter(project=project).count() == 1
