"""Writes on quality data: gold answers, gold results, worker scores and status."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.utils import timezone

from crowd.errors import Conflict, NotFound
from crowd.json_stream import JsonSource, NotJson, Parsed
from crowd.models import User
from crowd.prepared import Prepared
from crowd.tokens import tokens_forget_for_user
from qa import events
from qa.geometry import keypoint_sigmas
from qa.models import GoldAnswer, GoldResult, WorkerScore, WorkerStatus
from qa.regions import restrict
from qa.reliability import PROBATION_GOLD, Evidence, reliability, should_suspend
from qa.scoring import GoldScore, gold_score
from tasks import annotation_imports
from tasks import events as task_events
from tasks.hooks import ADMITTED, Admission
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Image,
    ImageStatus,
    Kind,
    MaskMode,
    Project,
    Task,
)
from tasks.prediction_formats import FormatError
from tasks.routing import answers_withdraw_for_worker, leases_release_for_worker
from tasks.schema import annotations_clean, project_schema
from tasks.services import tasks_mark_gold, tasks_mark_gold_bulk


@transaction.atomic
def gold_set(
    *, project: Project, image_id: int | None, annotations: list[dict[str, Any]], user: User
) -> tuple[GoldAnswer, bool]:
    """Store (or replace) the expert answer of an image and mark its tasks gold; the
    annotations are checked against the project's labels and the image's bounds.

    Returns the answer and whether it was created. No image (None), or none of this project's
    by that id, is NotFound.
    """
    image = None if image_id is None else Image.objects.filter(project=project, pk=image_id).first()
    if image is None:
        raise NotFound("No such image in this project.")
    if image.status != ImageStatus.READY:
        raise Conflict(
            f"The image is {image.status}; gold can be set once it is ready.",
            code="image_not_ready",
        )
    clean = annotations_clean(project=project, image=image, payload=annotations)
    created = _gold_store(project=project, answers={image.pk: clean}, user=user)
    return GoldAnswer.objects.select_related("image").get(image=image), bool(created)


def _gold_store(
    *, project: Project, answers: dict[int, list[dict[str, Any]]], user: User
) -> set[int]:
    """What making ready images gold is, one image or many: store (or replace) the answer of
    each image (by id; already validated) and mark every task of it gold. Returns the images
    that had no gold answer before. Call inside the caller's transaction.

    One upsert per chunk rather than a read and a write per image: an import of thousands of
    images stays one short transaction, and two requests setting the same image's gold at
    once both succeed (the later one's answer stays), as ``update_or_create`` did."""
    ids = list(answers)
    had: set[int] = set()
    for start in range(0, len(ids), 500):
        had.update(
            GoldAnswer.objects.filter(image_id__in=ids[start : start + 500]).values_list(
                "image_id", flat=True
            )
        )
    GoldAnswer.objects.bulk_create(
        [
            GoldAnswer(project=project, image_id=pk, annotations=items, created_by=user)
            for pk, items in answers.items()
        ],
        batch_size=500,
        update_conflicts=True,
        unique_fields=["image"],
        update_fields=["project", "annotations", "created_by", "updated_at"],
    )
    tasks_mark_gold_bulk(image_ids=ids)
    if project.auto_accept is not None:
        # Gold images are human-checked: auto-accept's calibration rests on them.
        from qa.auto_accept import auto_accept_request

        auto_accept_request(project.pk)
    return set(ids) - had


@transaction.atomic
def gold_import(
    *,
    project: Project,
    data: Any,
    user: User,
    format_name: str | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Make the labelled images of a file gold: ``data`` is a file (parsed, or a
    ``JsonSource`` walked as it is read) of one of the formats predictions are imported
    from (ours as ``{"gold": [...]}``, COCO, Label Studio tasks with their
    ``annotations``), read by the same readers. Each image is matched by id
    or file name and its items checked as :func:`gold_set` checks them; scores in the file are
    ignored. An image that has gold already gets the file's answer instead, as ``gold_set``
    replaces it.

    Strict (the default): any bad item is InvalidInput naming every one, and nothing is
    stored. Otherwise the good ones are stored and the others listed under ``rejected``. A
    file that cannot be read at all is InvalidInput either way."""
    source = data if isinstance(data, JsonSource) else Parsed(data)
    checker = annotation_imports.Checker(project, gold=True)
    try:
        candidates = annotation_imports.candidates_read(
            project, source, format_name=format_name, gold=True
        )
        checked = checker.check(candidates)
    except (FormatError, NotJson) as exc:
        raise annotation_imports.unreadable(
            exc, what="gold file", code="invalid_gold_file"
        ) from None
    if strict:
        checker.failures_raise(what="items", code="invalid_gold")
    created = _gold_store(
        project=project, answers={row.image_id: row.items for row in checked}, user=user
    )
    return {
        "created": len(created),
        "replaced": len(checked) - len(created),
        "rejected": checker.rejected_json(),
    }


@transaction.atomic
def gold_remove(*, project: Project, image_id: int) -> None:
    gold = GoldAnswer.objects.filter(project=project, image_id=image_id).select_related("image")
    answer = gold.first()
    if answer is None:
        raise NotFound("This image has no gold answer.")
    tasks_mark_gold(image=answer.image, gold=False)
    answer.delete()


# --- Worker scores and status ------------------------------------------------------------------


def _evidence(row: WorkerScore, prefix: str = "") -> Evidence:
    """The row's evidence now, or with ``prefix="review_"`` at the last reinstatement (gold
    and agreement only: the worker model is not kept per reinstatement)."""
    names = [f.name for f in fields(Evidence) if hasattr(row, prefix + f.name)]
    return Evidence(**{name: getattr(row, prefix + name) for name in names})


def _initial_status(project: Project) -> str:
    return WorkerStatus.EXAM if project.exam_tasks else WorkerStatus.PROBATION


_SCORE = Prepared(
    lambda project, worker: WorkerScore.objects.filter(project_id=project, worker_id=worker)[:1],
    int,
    int,
)


def worker_score_get(*, project: Project, worker_id: int, lock: bool = False) -> WorkerScore:
    """The worker's row in this project, created on first use. With ``lock``, the row is
    locked until the caller's transaction ends (call inside one)."""
    rows = WorkerScore.objects.select_for_update() if lock else WorkerScore.objects
    if lock:
        row = rows.filter(project=project, worker_id=worker_id).first()
    else:  # the routing policy's admission, on every next/
        row = _SCORE.first(project.pk, worker_id)
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return WorkerScore.objects.create(
                project=project, worker_id=worker_id, status=_initial_status(project)
            )
    except IntegrityError:  # created by a concurrent request of the same worker
        return rows.get(project=project, worker_id=worker_id)


def _percent(value: float) -> str:
    return f"{round(100 * value)}%"


def _judge(row: WorkerScore, project: Project, *, exam_size: int | None = None) -> None:
    """Recompute the score and move the status on from the evidence. Manual suspensions
    stay until a manager lifts them."""
    row.score = reliability(_evidence(row))
    if row.status == WorkerStatus.SUSPENDED:
        return
    now = timezone.now()
    if row.status == WorkerStatus.EXAM:
        size = project.exam_tasks if exam_size is None else exam_size
        if row.exam_seen < size:
            return
        mean = row.exam_score_sum / row.exam_seen if row.exam_seen else 1.0
        if mean < project.exam_pass_score:
            row.status = WorkerStatus.SUSPENDED
            row.suspended_at, row.suspended_by = now, None
            row.status_reason = (
                f"You did not pass this project's qualification: your answers scored "
                f"{_percent(mean)} against the {_percent(project.exam_pass_score)} needed."
            )
            return
        row.status = WorkerStatus.PROBATION
        row.status_reason = ""
    judged = _evidence(row).since(_evidence(row, "review_"))
    if should_suspend(judged, project.min_worker_score):
        row.status = WorkerStatus.SUSPENDED
        row.suspended_at, row.suspended_by = now, None
        row.status_reason = (
            f"Suspended: your estimated accuracy of {_percent(reliability(judged))} is below "
            f"this project's minimum of {_percent(project.min_worker_score)}."
        )
    elif row.status == WorkerStatus.PROBATION and row.gold_seen >= PROBATION_GOLD:
        row.status = WorkerStatus.ACTIVE


def _save_judged(row: WorkerScore, status_before: str) -> None:
    row.save()
    changed = row.status != status_before
    if changed and WorkerStatus.SUSPENDED in (row.status, status_before):
        # What a request knows of the worker is read afresh from here on.
        tokens_forget_for_user(user_id=row.worker_id)
    if changed and row.status == WorkerStatus.SUSPENDED:
        # After commit, in transactions of their own: the caller may hold a task's row lock,
        # and releasing takes other tasks' locks.
        # Their answers to open tasks stop holding slots there, so those tasks ask others.
        project_id, worker_id = row.project_id, row.worker_id

        def release() -> None:
            leases_release_for_worker(project_id=project_id, worker_id=worker_id)
            answers_withdraw_for_worker(project_id=project_id, worker_id=worker_id)

        transaction.on_commit(release)
        task_events.worker_barred(project_id=row.project_id, worker_id=row.worker_id)
    elif changed and status_before == WorkerStatus.SUSPENDED:
        task_events.worker_admitted(project_id=row.project_id, worker_id=row.worker_id)
    events.worker_changed(row, status_changed=changed)


def _gold_images(project: Project) -> int:
    return Task.objects.filter(project=project, is_gold=True).values("image").distinct().count()


# ``worker_admission`` is ADMITTED, with nothing to write, exactly when the worker's row says
# active or on probation (a missing row is created by the read; an exam may end on it).
ADMITTED_SQL = (
    f"EXISTS (SELECT 1 FROM {WorkerScore._meta.db_table} s WHERE s.project_id = %(project)s "
    f"AND s.worker_id = %(worker)s "
    f"AND s.status IN ('{WorkerStatus.ACTIVE.value}', '{WorkerStatus.PROBATION.value}'))"
)


def worker_admission(*, project: Project, worker: User) -> Admission:
    """May the worker get tasks of the project (the routing policy's admission)."""
    row = worker_score_get(project=project, worker_id=worker.pk)
    if row.status == WorkerStatus.SUSPENDED:
        return Admission(reason=row.status_reason or "You are suspended from this project.")
    if row.status != WorkerStatus.EXAM:
        return ADMITTED
    # An exam larger than the gold left would never end: it ends with the gold there is.
    size = min(project.exam_tasks, _gold_images(project))
    if row.exam_seen < size:
        return Admission(gold_only=True)
    with transaction.atomic():
        row = worker_score_get(project=project, worker_id=worker.pk, lock=True)
        before = row.status
        _judge(row, project, exam_size=size)
        _save_judged(row, before)
    return worker_admission(project=project, worker=worker) if row.status != before else ADMITTED


def project_sigmas(project: Project) -> dict[str, np.ndarray]:
    """Per keypoint label: the OKS sigma of each of its keypoints."""
    schema = project_schema(project)
    return {
        label: keypoint_sigmas(list(names), default=project.keypoint_sigma)
        for label, names in schema.keypoints.items()
    }


def comparable(project: Project, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as two answers of the project are compared: a semantic mask answer as one mask a
    label (a label painted in one stroke or several is the same answer); others as they are."""
    if project.kind == Kind.MASK and project.mask_mode == MaskMode.SEMANTIC and items:
        from qa.consensus.masks import semantic_union

        return semantic_union(items)
    return items


def answer_compare(
    *,
    project: Project,
    reference: list[dict[str, Any]],
    answer: list[dict[str, Any]],
    width: int,
    height: int,
) -> GoldScore:
    """Score ``answer`` against ``reference`` with the project's thresholds."""
    return gold_score(
        project.kind,
        comparable(project, reference),
        comparable(project, answer),
        iou_threshold=project.iou_threshold,
        oks_threshold=project.iou_threshold,
        sigmas=project_sigmas(project) if project.kind == Kind.KEYPOINTS else None,
        width=width,
        height=height,
    )


def gold_result_record(*, assignment: Assignment) -> GoldResult | None:
    """Score a submitted gold answer and update the worker's standing. Called inside the
    submitting transaction (the routing policy's ``gold_answered``); a repeat does nothing."""
    task, project = assignment.task, assignment.project
    gold = GoldAnswer.objects.filter(image_id=task.image_id).first()
    if gold is None or GoldResult.objects.filter(assignment=assignment).exists():
        return None  # the gold was removed meanwhile, or this answer was scored already
    image = task.image
    reference, answer = restrict(
        project.kind,
        gold.annotations,
        assignment.answer or [],
        task.region,
        image_size=[0, 0, image.width, image.height],
    )
    result = answer_compare(
        project=project, reference=reference, answer=answer, width=image.width, height=image.height
    )
    row = worker_score_get(project=project, worker_id=assignment.worker_id, lock=True)
    before = row.status
    passed = result.score >= project.gold_pass_score
    in_exam = row.status == WorkerStatus.EXAM
    row.gold_seen += 1
    row.gold_passed += int(passed)
    row.gold_score_sum += result.score
    if in_exam:
        row.exam_seen += 1
        row.exam_score_sum += result.score
    exam_size = min(project.exam_tasks, _gold_images(project)) if in_exam else None
    _judge(row, project, exam_size=exam_size)
    _save_judged(row, before)
    return GoldResult.objects.create(
        assignment=assignment,
        project=project,
        worker_id=assignment.worker_id,
        image_id=task.image_id,
        score=result.score,
        passed=passed,
        exam=in_exam,
        details={
            **result.details(),
            "gold_objects": len(reference),
            "answer_objects": len(answer),
        },
    )


def agreement_record(*, project: Project, agreement: dict[int, float]) -> None:
    """Add each worker's agreement (in [0, 1]) with a completed task's consensus. Called in
    the transaction that completes the task; rows are locked in worker order so two
    completions sharing workers cannot deadlock."""
    for worker_id in sorted(agreement):
        row = worker_score_get(project=project, worker_id=worker_id, lock=True)
        before = row.status
        row.agreement_seen += 1
        row.agreement_sum += agreement[worker_id]
        _judge(row, project)
        _save_judged(row, before)


def agreements_record(*, project: Project, agreements: dict[int, list[float]]) -> None:
    """:func:`agreement_record` of a batch of completed tasks: each worker's agreements added
    at once, under one lock of their row (in worker order). The rows are read in one query,
    and those whose status stays are written back in one prepared statement; a status change
    goes through :func:`_save_judged` with all it sets off."""
    ids = sorted(agreements)
    locked = WorkerScore.objects.select_for_update().filter(project=project, worker_id__in=ids)
    rows = {row.worker_id: row for row in locked.order_by("worker_id")}
    quiet: list[WorkerScore] = []
    for worker_id in ids:
        values = agreements[worker_id]
        row = rows.get(worker_id) or worker_score_get(
            project=project, worker_id=worker_id, lock=True
        )
        before = row.status
        row.agreement_seen += len(values)
        row.agreement_sum += sum(values)
        _judge(row, project)
        if row.status != before:
            _save_judged(row, before)
        else:
            quiet.append(row)
    if not quiet:
        return
    with connection.cursor() as cursor:
        cursor.executemany(
            _AGREEMENT_SQL,
            [(row.agreement_seen, row.agreement_sum, row.score, row.pk) for row in quiet],
        )
    for row in quiet:
        events.worker_changed(row, status_changed=False)


_AGREEMENT_SQL = (
    f"UPDATE {WorkerScore._meta.db_table} SET agreement_seen = %s, agreement_sum = %s, "
    "score = %s WHERE id = %s"
)


def worker_models_record(
    *, project: Project, fits: dict[int, tuple[int, float, dict[str, Any]]]
) -> None:
    """Store the project's worker model (``qa.worker_model``): per worker the answers it rests
    on, its expected accuracy and its parameters, which then stand in for their agreement in
    the score and the vote weight. Workers it no longer covers (suspended, their answers left
    out) fall back to their agreement. Rows are locked in worker order, as everywhere."""
    with transaction.atomic():
        covered = set(fits)
        stale = WorkerScore.objects.filter(project=project, model_seen__gt=0).exclude(
            worker_id__in=covered
        )
        for worker_id in sorted(covered | set(stale.values_list("worker_id", flat=True))):
            row = worker_score_get(project=project, worker_id=worker_id, lock=True)
            before = row.status
            answers, accuracy, params = fits.get(worker_id, (0, 0.0, {}))
            row.model_seen, row.model_sum = float(answers), float(answers) * accuracy
            row.model_params = params
            _judge(row, project)
            _save_judged(row, before)


def shown_scores(*, worker_id: int, rows: Iterable[WorkerScore]) -> dict[int, float | None]:
    """The score each of the worker's ``rows`` shows the worker, by project.

    The score moves with every gold result, and a worker who read it after each answer
    could tell which task was gold. So the worker sees a copy taken only once they have
    given ``SCORE_SHOWN_EVERY`` answers in the project since the last copy (None before
    the first): a step then sums the evidence of many answers, gold and real alike, and
    cannot be tied to one task. Status changes (a suspension) are not delayed. One count
    query for all the rows, and a write only when a copy is due."""
    rows = list(rows)
    every = max(1, settings.SCORE_SHOWN_EVERY)
    answered = dict(
        Assignment.objects.filter(
            worker_id=worker_id,
            project_id__in=[row.project_id for row in rows],
            status__in=AssignmentStatus.answered(),
        )
        .values("project_id")
        .annotate(n=Count("pk"))
        .values_list("project_id", "n")
    )
    shown: dict[int, float | None] = {}
    for row in rows:
        count = answered.get(row.project_id, 0)
        if count >= row.shown_answers + every:
            # Conditional on the copy it replaces, so two readers take one copy.
            WorkerScore.objects.filter(pk=row.pk, shown_answers=row.shown_answers).update(
                shown_score=row.score, shown_answers=count
            )
            row.shown_score, row.shown_answers = row.score, count
        shown[row.project_id] = row.shown_score
    return shown


def shown_score(row: WorkerScore) -> float | None:
    return shown_scores(worker_id=row.worker_id, rows=[row])[row.project_id]


def suspended_workers(*, project_id: int, worker_ids: Iterable[int] | None = None) -> set[int]:
    """The workers suspended from this project (of ``worker_ids``, when given)."""
    rows = WorkerScore.objects.filter(project_id=project_id, status=WorkerStatus.SUSPENDED)
    if worker_ids is not None:
        rows = rows.filter(worker_id__in=list(worker_ids))
    return set(rows.values_list("worker_id", flat=True))


def suspensions(*, worker_id: int) -> set[int]:
    """The projects this worker is suspended from."""
    rows = WorkerScore.objects.filter(worker_id=worker_id, status=WorkerStatus.SUSPENDED)
    return set(rows.values_list("project_id", flat=True))


@transaction.atomic
def worker_suspend(*, project: Project, worker_id: int, by: User, reason: str) -> WorkerScore:
    """A manager suspends a worker from the project; the reason is shown to them."""
    row = _known_worker(project, worker_id)
    before = row.status
    row.status = WorkerStatus.SUSPENDED
    row.status_reason = reason.strip()[:300] or "Suspended by the project's manager."
    row.suspended_at, row.suspended_by = timezone.now(), by
    _save_judged(row, before)
    return row


@transaction.atomic
def worker_reinstate(*, project: Project, worker_id: int, by: User) -> WorkerScore:
    """Lift a suspension. Automatic suspension then judges only evidence from now on, and a
    worker who failed the exam is let through it."""
    row = _known_worker(project, worker_id)
    if row.status != WorkerStatus.SUSPENDED:
        raise Conflict("This worker is not suspended.", code="not_suspended")
    row.status = WorkerStatus.ACTIVE if row.gold_seen >= PROBATION_GOLD else WorkerStatus.PROBATION
    row.status_reason = ""
    row.reinstated_at, row.reinstated_by = timezone.now(), by
    row.review_gold_seen, row.review_gold_score_sum = row.gold_seen, row.gold_score_sum
    row.review_agreement_seen, row.review_agreement_sum = row.agreement_seen, row.agreement_sum
    row.score = reliability(_evidence(row))
    _save_judged(row, WorkerStatus.SUSPENDED)
    return row


def _known_worker(project: Project, worker_id: int) -> WorkerScore:
    """The locked row of a worker who has worked on (or asked for work in) the project."""
    row = (
        WorkerScore.objects.select_for_update().filter(project=project, worker_id=worker_id).first()
    )
    if row is None:
        raise NotFound("This worker has not worked on this project.")
    return row
