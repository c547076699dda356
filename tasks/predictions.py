"""Model predictions: imported from files, or asked of the project's ML backend by a job.

A prediction is one model version's objects on one image, items as answers have them (checked
by the same validator against the project's kind, labels and the image's size) with a
``score`` each. Importing or predicting the same image and model version again replaces the
earlier prediction.

An import is all or nothing by default (``strict``): any bad item is a 400 naming every bad
item, and nothing is stored. With ``strict`` false the valid predictions are stored and the
others come back under ``rejected``; a file that cannot be read at all is a 400 either way.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from crowd import claims
from crowd.claims import ClaimLost
from crowd.collector import collector_paused
from crowd.errors import Conflict, InvalidInput, NotFound
from crowd.jobs import send_on_commit
from crowd.json_stream import JsonSource, NotJson, Parsed
from crowd.models import User
from tasks import events, hooks, prelabels, task_order
from tasks import prediction_formats as fmt
from tasks.annotation_imports import (
    Checked,
    Checker,
    batched,
    candidate_clean,
    candidates_read,
    label_specs,
    unreadable,
)
from tasks.ml_backend import BackendError, Client, backend_url_problem, image_signed_url
from tasks.models import (
    Image,
    ImageStatus,
    Label,
    Prediction,
    PredictionRun,
    PredictionSource,
    Project,
    RunStatus,
)

logger = logging.getLogger(__name__)

MAX_RUN_ERRORS = 1000  # per-image errors kept on a run; ``failed`` counts them all
UNVERSIONED = "unversioned"


def project_label_config(project: Project) -> str:
    labels = list(Label.objects.filter(project=project).order_by("order", "id"))
    specs = [fmt.LabelSpec(name=lb.name, keypoints=tuple(lb.keypoints)) for lb in labels]
    return fmt.label_config(project.kind, specs, {lb.name: lb.color for lb in labels})


@transaction.atomic
def _store(
    project: Project,
    rows: Sequence[Checked],
    *,
    source: str,
    run: PredictionRun | None = None,
) -> int:
    """Replace the predictions of these (image, version) pairs, and refresh the confidences
    of their tasks. Call inside the transaction that must hold them all."""
    current = prelabels.current_version(project)
    _replace(project, rows, source=source, run=run)
    if rows:
        _confidences_after(project, current, [row.image_id for row in rows])
    return len(rows)


def _confidences_after(project: Project, current: str | None, image_ids: list[int]) -> None:
    """After a store: the newest prediction's version is the current one, and another one
    makes every task's confidence stale, the same one only those of the images stored."""
    moved = prelabels.current_version(project) != current
    task_order.confidences_refresh(project=project, image_ids=None if moved else image_ids)


def _replace(
    project: Project, rows: Sequence[Checked], *, source: str, run: PredictionRun | None
) -> None:
    by_version: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_version[row.model_version].append(row.image_id)
    for version, ids in by_version.items():
        for start in range(0, len(ids), 500):
            Prediction.objects.filter(
                project=project, model_version=version, image_id__in=ids[start : start + 500]
            ).delete()
    Prediction.objects.bulk_create(
        (
            Prediction(
                project=project,
                image_id=row.image_id,
                model_version=row.model_version,
                annotations=row.items,
                score=row.score,
                source=source,
                run=run,
            )
            for row in rows
        ),
        batch_size=500,
    )


# Predictions read, checked and stored at a time: what an import holds in memory besides the
# bad ones' places and problems.
IMPORT_BATCH = 500


def predictions_import(
    *,
    project: Project,
    data: Any,
    format_name: str | None = None,
    model_version: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Store the predictions in ``data``: a file of one of :data:`FORMATS`, parsed or as a
    ``JsonSource`` (an upload, walked as it is read). They are read, checked and stored a
    batch at a time in one transaction, so a file is never whole in memory and a file that
    turns out unreadable part way, or a strict import with any bad item, stores nothing."""
    source = data if isinstance(data, JsonSource) else Parsed(data)
    try:
        # The items read and checked make no reference cycles; collecting over them at every
        # allocation threshold took a quarter of a large import's time.
        with collector_paused(), transaction.atomic():
            return _import(project, source, format_name, model_version, strict)
    except (fmt.FormatError, NotJson) as exc:
        raise unreadable(exc, what="predictions file", code="invalid_predictions_file") from None


def _import(
    project: Project,
    source: JsonSource,
    format_name: str | None,
    model_version: str | None,
    strict: bool,
) -> dict[str, Any]:
    candidates = candidates_read(
        project, source, format_name=format_name, model_version=model_version
    )
    checker = Checker(project)
    current = prelabels.current_version(project)
    stored: list[int] = []
    for batch in batched(candidates, IMPORT_BATCH):
        rows = checker.check(batch)
        if strict and checker.bad:
            continue  # read on, to name every bad item; nothing will be stored
        _replace(project, rows, source=PredictionSource.IMPORT, run=None)
        stored += [row.image_id for row in rows]
    if strict:
        checker.failures_raise(what="predictions", code="invalid_predictions")
    if stored:
        _confidences_after(project, current, stored)
        hooks.auto_accept_inputs_changed.notify(project.pk)
    return {"created": len(stored), "rejected": checker.rejected_json()}


# --- Reading ----------------------------------------------------------------------------------


def predictions_for(
    project: Project, *, image: int | None = None, model_version: str | None = None
) -> QuerySet[Prediction]:
    rows = Prediction.objects.filter(project=project)
    if image is not None:
        rows = rows.filter(image_id=image)
    if model_version is not None:
        rows = rows.filter(model_version=model_version)
    return rows.order_by("pk")


def prediction_json(prediction: Prediction) -> dict[str, Any]:
    return {
        "id": prediction.pk,
        "image": prediction.image_id,
        "model_version": prediction.model_version,
        "annotations": prediction.annotations,
        "score": prediction.score,
        "source": prediction.source,
        "run": prediction.run_id,
        "created_at": prediction.created_at.isoformat(),
    }


def run_json(run: PredictionRun, *, errors: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.pk,
        "project": run.project_id,
        "status": run.status,
        "backend_url": run.backend_url,
        "model_version": run.model_version or None,
        "images_total": run.images_total,
        "images_done": run.images_done,
        "predicted": run.predicted,
        "failed": run.failed,
        "error": run.error or None,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    if errors:
        data["errors"] = run.errors
    return data


def last_run(project: Project) -> dict[str, Any] | None:
    run = project.prediction_runs.defer("errors").order_by("-pk").first()
    return run_json(run, errors=False) if run else None


# --- Runs of the ML backend -------------------------------------------------------------------


def prediction_run_request(*, project: Project, user: User) -> PredictionRun:
    """Queue a run of the project's ML backend over its images without a prediction of the
    backend's current model version."""
    if not project.ml_backend_url:
        raise Conflict(
            'The project names no ML backend: set "ml_backend" {"url"} first.',
            code="no_ml_backend",
        )
    problem = backend_url_problem(project.ml_backend_url)
    if problem:
        raise InvalidInput(
            "The project's ML backend may not be called.",
            code="ml_backend_not_allowed",
            errors={"ml_backend": [problem]},
        )
    if not settings.PUBLIC_URL:
        raise Conflict(
            "PUBLIC_URL is not set, so the backend could not fetch the images: the server's "
            "operator sets it to this server's address as the backend reaches it.",
            code="no_public_url",
        )
    from tasks.jobs import predictions_run

    with transaction.atomic():
        project.lock()
        # A canceled run whose job still holds it is stopping (it finishes its batch): a
        # second run beside it would ask the backend for the same images.
        stopping = Q(status=RunStatus.CANCELED, claim_token__gt="", lease_expires_at__gt=Now())
        active = project.prediction_runs.filter(
            Q(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]) | stopping
        ).first()
        if active is not None:
            state = "stopping" if active.status == RunStatus.CANCELED else active.status
            raise Conflict(
                f"Run {active.pk} of the ML backend is {state}; wait for it to finish.",
                code="prediction_run_active",
                errors={"run": active.pk},
            )
        run = PredictionRun.objects.create(
            project=project, requested_by=user, backend_url=project.ml_backend_url
        )
        send_on_commit(predictions_run, run.pk)
    return run


def prediction_run_cancel(*, project: Project, run_id: int, user: User) -> PredictionRun:
    """Cancel a queued or running run: a queued one never starts; a running one stores the
    batch the backend is answering and stops before the next. What it stored stays."""
    with transaction.atomic():
        run = project.prediction_runs.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise NotFound("No such run of this project.")
        if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise Conflict(
                f"Run {run.pk} is {run.status}; only a queued or running run can be canceled.",
                code="prediction_run_finished",
            )
        run.status, run.finished_at = RunStatus.CANCELED, timezone.now()
        run.error = f"Canceled by {user.username}."[:500]
        run.save(update_fields=["status", "finished_at", "error"])
        events.prediction_run_changed(run)
    return run


class _Canceled(Exception):
    pass


def _ending(status: str, error: str = "") -> dict[str, Case]:
    """A run's final fields, unless a manager canceled it meanwhile (then it stays as the
    cancel left it: canceled, by whom, when)."""
    values = {"status": Value(status), "error": Value(error), "finished_at": Value(timezone.now())}
    return {
        name: Case(When(status=RunStatus.CANCELED, then=F(name)), default=value)
        for name, value in values.items()
    }


def prediction_run_execute(*, run_id: int) -> PredictionRun | None:
    """Run it. Safe to run twice, even at once (the copy that claims the run does it; see
    ``crowd.claims``); a redelivered run goes on where it stopped, since images predicted
    with the current version are skipped."""
    claim = claims.claim(
        PredictionRun,
        run_id,
        done=(RunStatus.DONE, RunStatus.CANCELED),
        fields=lambda: {
            "status": RunStatus.RUNNING, "started_at": timezone.now(), "error": "",
            "attempts": F("attempts") + 1,
        },
    )  # fmt: skip
    if claim is None:
        return PredictionRun.objects.filter(pk=run_id).first()
    with claim:
        run = PredictionRun.objects.select_related("project").get(pk=run_id)
        try:
            _execute(run, claim)
        except ClaimLost as exc:
            logger.warning("%s; this copy stops", exc)
        except _Canceled:
            claim.release()  # canceled, with what it stored, when the manager said so
        except BackendError as exc:
            claim.release(**_ending(RunStatus.FAILED, str(exc)[:500]))
        except Exception:
            logger.exception("prediction run %s failed", run_id)
            claim.release(
                **_ending(
                    RunStatus.FAILED, "The run stopped on an internal error; run it again to go on."
                )
            )
            raise
        else:
            claim.release(**_ending(RunStatus.DONE))
    run.refresh_from_db()
    events.prediction_run_changed(run)
    if run.predicted:
        hooks.auto_accept_inputs_changed.notify(run.project_id)
    return run


class _RunProgress:
    def __init__(self, run: PredictionRun, claim: claims.Claim) -> None:
        self.run, self.claim = run, claim
        self.errors: list[dict[str, Any]] = list(run.errors)

    def fail(self, image_id: int, message: str) -> None:
        self.run.failed += 1
        if len(self.errors) < MAX_RUN_ERRORS:
            self.errors.append({"image": image_id, "error": message[:500]})

    def fields(self) -> dict[str, Any]:
        run = self.run
        return {
            "images_total": run.images_total, "images_done": run.images_done,
            "predicted": run.predicted, "failed": run.failed, "errors": self.errors,
            "model_version": run.model_version,
        }  # fmt: skip

    def flush(self) -> None:
        self.claim.fence(**self.fields())
        events.prediction_run_changed(self.run)


def _todo(project: Project, version: str) -> QuerySet[Image]:
    images = Image.objects.filter(project=project, status=ImageStatus.READY)
    if version:
        images = images.exclude(predictions__model_version=version)
    return images.order_by("pk")


def _execute(run: PredictionRun, claim: claims.Claim) -> None:
    project = run.project
    client = Client(run.backend_url)
    try:
        health = client.health()
        config = project_label_config(project)
        setup = client.setup(project=project.pk, label_config=config)
        version = str(setup.get("model_version") or health.get("model_version") or "")[:200]
        run.model_version = version
        progress = _RunProgress(run, claim)
        run.images_done = run.predicted = run.failed = 0
        progress.errors = []
        run.images_total = _todo(project, version).count()
        progress.flush()
        specs = label_specs(project)
        cursor, failed_batches = 0, 0
        size = max(1, settings.ML_BACKEND_BATCH_SIZE)
        while True:
            claim.check()
            if PredictionRun.objects.filter(pk=run.pk, status=RunStatus.CANCELED).exists():
                raise _Canceled
            batch = list(_todo(project, run.model_version).filter(pk__gt=cursor)[:size])
            if not batch:
                break
            cursor = batch[-1].pk
            tasks = [{"id": img.pk, "data": {"image": image_signed_url(img.pk)}} for img in batch]
            try:
                results = client.predict(project=project.pk, label_config=config, tasks=tasks)
            except BackendError as exc:
                failed_batches += 1
                for img in batch:
                    progress.fail(img.pk, str(exc))
                run.images_done += len(batch)
                progress.flush()
                if failed_batches >= settings.ML_BACKEND_MAX_FAILED_BATCHES:
                    raise BackendError(
                        f"{failed_batches} batches in a row failed; the run stopped. The "
                        f"last: {exc}"
                    ) from None
                continue
            failed_batches = 0
            rows = _batch_rows(run, project, specs, batch, results, progress)
            run.images_done += len(batch)
            with transaction.atomic():
                claim.fence()  # first: a copy that lost the run stores nothing
                run.predicted += _store(project, rows, source=PredictionSource.BACKEND, run=run)
                progress.flush()
    finally:
        client.close()


def _batch_rows(
    run: PredictionRun,
    project: Project,
    specs: Sequence[fmt.LabelSpec],
    batch: list[Image],
    results: list[Any],
    progress: _RunProgress,
) -> list[Checked]:
    rows: list[Checked] = []
    for img, result in zip(batch, results, strict=True):
        if not isinstance(result, dict) or not isinstance(result.get("result"), list):
            said = result.get("error") if isinstance(result, dict) else None
            progress.fail(
                img.pk,
                f"The backend gave no result: {str(said)[:300]}"
                if said
                else 'The backend\'s result is not {"result": [...], ...}.',
            )
            continue
        raw_version = result.get("model_version")
        version = (
            str(raw_version)[:200]
            if isinstance(raw_version, str) and raw_version.strip()
            else run.model_version or UNVERSIONED
        )
        if not run.model_version:
            # The backend told its version only now: later batches skip images that have it.
            run.model_version = version
            later = _todo(project, version).filter(pk__gt=batch[-1].pk).count()
            run.images_total = run.images_done + len(batch) + later
        cand = fmt.Candidate(index=0, where="result", model_version=version)
        cand.score, problem = fmt.score_of(result.get("score"))
        if problem:
            cand.fail("score", problem)
        cand.raw_result = result["result"]
        items = candidate_clean(cand, project, specs, (img.width, img.height))
        if items is None:
            progress.fail(img.pk, "; ".join(f"{k}: {' '.join(v)}" for k, v in cand.errors.items()))
            continue
        rows.append(Checked(img.pk, version, items, cand.score))
    return rows
