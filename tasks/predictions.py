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
import posixpath
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from crowd import claims
from crowd.claims import ClaimLost
from crowd.errors import Conflict, InvalidInput
from crowd.jobs import send_on_commit
from crowd.models import User
from tasks import events, prelabels, task_order
from tasks import prediction_formats as fmt
from tasks.annotations import AnnotationError, validate_annotations
from tasks.ml_backend import BackendError, Client, backend_url_problem, image_signed_url
from tasks.models import (
    Image,
    ImageStatus,
    ImportStatus,
    Label,
    Prediction,
    PredictionRun,
    PredictionSource,
    Project,
)
from tasks.schema import project_schema

logger = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 200  # in a 400's errors; the detail gives the total
MAX_RUN_ERRORS = 1000  # per-image errors kept on a run; ``failed`` counts them all
UNVERSIONED = "unversioned"


def label_specs(project: Project) -> list[fmt.LabelSpec]:
    return [
        fmt.LabelSpec(name=label.name, keypoints=tuple(label.keypoints))
        for label in Label.objects.filter(project=project).order_by("order", "id")
    ]


def project_label_config(project: Project) -> str:
    labels = list(Label.objects.filter(project=project).order_by("order", "id"))
    specs = [fmt.LabelSpec(name=lb.name, keypoints=tuple(lb.keypoints)) for lb in labels]
    return fmt.label_config(project.kind, specs, {lb.name: lb.color for lb in labels})


# --- Reading and checking ---------------------------------------------------------------------


def _candidates(
    project: Project, data: Any, *, format_name: str | None, model_version: str | None
) -> list[fmt.Candidate]:
    name = format_name or fmt.detect(data)
    if name == "crowd":
        return fmt.read_crowd(data, model_version)
    specs = label_specs(project)
    if name == "coco":
        return fmt.read_coco(data, model_version, kind=project.kind, labels=specs)
    if name == "label_studio":
        return fmt.read_label_studio(data, model_version, kind=project.kind, labels=specs)
    raise fmt.FormatError({"format": [f"One of: {', '.join(fmt.FORMATS)}."]})


class _ImageIndex:
    """The project's images by id and by file name (the whole name, else its last part when
    only one image has it)."""

    def __init__(self, project: Project) -> None:
        rows = list(
            Image.objects.filter(project=project)
            .exclude(status=ImageStatus.FAILED)
            .values_list("pk", "name", "width", "height")
        )
        self.by_id = {pk: (pk, w, h) for pk, _, w, h in rows}
        self.by_name: dict[str, tuple[int, int, int] | None] = {}
        by_base: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for pk, name, w, h in rows:
            self.by_name[name] = (pk, w, h)
            by_base[posixpath.basename(name)].append((pk, w, h))
        self.by_base = {k: v[0] for k, v in by_base.items() if len(v) == 1}

    def find(self, cand: fmt.Candidate) -> tuple[int, int, int] | None:
        if cand.image_id is not None:
            found = self.by_id.get(cand.image_id)
            if found is None:
                cand.fail(f"{cand.where}.image", f"No image {cand.image_id} in this project.")
            return found
        if cand.file_name is None:
            return None  # unreadable: the reader said why
        for name in fmt.ls_name_variants(cand.file_name):
            hit = self.by_name.get(name) or self.by_base.get(posixpath.basename(name))
            if hit is not None:
                return hit
        cand.fail(cand.where, f"No image named {cand.file_name!r} in this project.")
        return None


def _clean(
    cand: fmt.Candidate, project: Project, specs: Sequence[fmt.LabelSpec], size: tuple[int, int]
) -> list[dict[str, Any]] | None:
    """The candidate's items checked like an answer, each with its score; None (with the
    problems in ``cand.errors``) when any is wrong."""
    if cand.raw_result is not None:
        cand.items = fmt.from_label_studio(
            cand.raw_result, cand, kind=project.kind, labels=specs, size=size
        )
    if cand.errors:
        return None
    scores: list[float | None] = []
    bare: list[Any] = []
    for k, item in enumerate(cand.items):
        if isinstance(item, dict):
            score, problem = fmt.score_of(item.get("score", cand.score))
            if problem:
                cand.fail(f"{cand.where}.annotations[{k}].score", problem)
            scores.append(score)
            bare.append({key: v for key, v in item.items() if key != "score"})
        else:
            scores.append(None)
            bare.append(item)
    if cand.errors:
        return None
    try:
        items = validate_annotations(
            bare, schema=project_schema(project), width=size[0], height=size[1]
        )
    except AnnotationError as exc:
        for key, messages in exc.errors.items():
            for message in messages:
                cand.fail(f"{cand.where}.{key}", message)
        return None
    return [{**item, "score": score} for item, score in zip(items, scores, strict=True)]


Checked = tuple[int, str, list[dict[str, Any]], float | None]  # image, version, items, score


def _check_all(project: Project, candidates: list[fmt.Candidate]) -> list[Checked]:
    index = _ImageIndex(project)
    specs = label_specs(project) if any(c.raw_result is not None for c in candidates) else []
    seen: dict[tuple[int, str], str] = {}
    out: list[Checked] = []
    for cand in candidates:
        found = index.find(cand)
        if found is None or (cand.errors and cand.raw_result is None):
            continue
        pk, width, height = found
        key = (pk, cand.model_version)
        if key in seen:
            cand.fail(cand.where, f"Image {pk} has a prediction of this version at {seen[key]}.")
            continue
        seen[key] = cand.where
        items = _clean(cand, project, specs, (width, height))
        if items is not None:
            out.append((pk, cand.model_version, items, cand.score))
    return out


@transaction.atomic
def _store(
    project: Project,
    rows: Sequence[Checked],
    *,
    source: str,
    run: PredictionRun | None = None,
) -> int:
    """Replace the predictions of these (image, version) pairs. Call inside the transaction
    that must hold them all."""
    current = prelabels.current_version(project)
    by_version: dict[str, list[int]] = defaultdict(list)
    for pk, version, _, _ in rows:
        by_version[version].append(pk)
    for version, ids in by_version.items():
        for start in range(0, len(ids), 500):
            Prediction.objects.filter(
                project=project, model_version=version, image_id__in=ids[start : start + 500]
            ).delete()
    Prediction.objects.bulk_create(
        (
            Prediction(
                project=project,
                image_id=pk,
                model_version=version,
                annotations=items,
                score=score,
                source=source,
                run=run,
            )
            for pk, version, items, score in rows
        ),
        batch_size=500,
    )
    if rows:
        # The newest prediction's version is the current one: another one makes every
        # task's confidence stale, the same one only those of the images stored.
        moved = prelabels.current_version(project) != current
        task_order.confidences_refresh(
            project=project, image_ids=None if moved else [pk for pk, _, _, _ in rows]
        )
    return len(rows)


def predictions_import(
    *,
    project: Project,
    data: Any,
    format_name: str | None = None,
    model_version: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Store the predictions in ``data`` (a parsed file of one of :data:`FORMATS`)."""
    try:
        candidates = _candidates(
            project, data, format_name=format_name, model_version=model_version
        )
    except fmt.FormatError as exc:
        raise InvalidInput(
            "The predictions file cannot be read; nothing was stored.",
            code="invalid_predictions_file",
            errors=exc.errors,
        ) from None
    checked = _check_all(project, candidates)
    bad = [c for c in candidates if c.errors]
    if bad and strict:
        errors: dict[str, list[str]] = {}
        for cand in bad:
            for where, messages in cand.errors.items():
                if len(errors) < MAX_ERRORS_SHOWN:
                    errors.setdefault(where, []).extend(messages)
        raise InvalidInput(
            f"{len(bad)} of the {len(candidates)} predictions are not valid; nothing was "
            "stored. Fix them, or import with strict=false to store the valid ones.",
            code="invalid_predictions",
            errors=errors,
        )
    created = _store(project, checked, source=PredictionSource.IMPORT)
    return {
        "created": created,
        "rejected": [
            {
                "index": c.index,
                "item": c.where,
                "error": "; ".join(f"{k}: {' '.join(v)}" for k, v in c.errors.items()),
            }
            for c in bad
        ],
    }


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
        active = project.prediction_runs.filter(
            status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING]
        ).first()
        if active is not None:
            raise Conflict(
                f"Run {active.pk} of the ML backend is {active.status}; wait for it to finish.",
                code="prediction_run_active",
                errors={"run": active.pk},
            )
        run = PredictionRun.objects.create(
            project=project, requested_by=user, backend_url=project.ml_backend_url
        )
        send_on_commit(predictions_run, run.pk)
    return run


def prediction_run_execute(*, run_id: int) -> PredictionRun | None:
    """Run it. Safe to run twice, even at once (the copy that claims the run does it; see
    ``crowd.claims``); a redelivered run goes on where it stopped, since images predicted
    with the current version are skipped."""
    claim = claims.claim(
        PredictionRun,
        run_id,
        done=ImportStatus.DONE,
        fields=lambda: {
            "status": ImportStatus.RUNNING, "started_at": timezone.now(), "error": "",
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
        except BackendError as exc:
            claim.release(
                status=ImportStatus.FAILED, error=str(exc)[:500], finished_at=timezone.now()
            )
        except Exception:
            logger.exception("prediction run %s failed", run_id)
            claim.release(
                status=ImportStatus.FAILED,
                error="The run stopped on an internal error; run it again to go on.",
                finished_at=timezone.now(),
            )
            raise
        else:
            claim.release(status=ImportStatus.DONE, finished_at=timezone.now())
    run.refresh_from_db()
    events.prediction_run_changed(run)
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
        items = _clean(cand, project, specs, (img.width, img.height))
        if items is None:
            progress.fail(img.pk, "; ".join(f"{k}: {' '.join(v)}" for k, v in cand.errors.items()))
            continue
        rows.append((img.pk, version, items, cand.score))
    return rows
