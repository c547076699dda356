"""Consensus services: a task's agreement for dynamic overlap, and a project's merged answers.

The algorithms are the pure ``qa.consensus`` package; this module feeds them the answers that
count (not suspended workers', weighted by each worker's reliability) and stores one
:class:`ConsensusResult` per image. Classification runs over the whole project at once
(Dawid-Skene learns each worker's confusion matrix from all of their answers); shapes merge
per task, and the tiles of one image are united. A run merges the boxes of many images in
one batch (``merge_boxes_batch``), a chunk of images at a time; its results are those of the
per-task merge.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Avg, Count, Q, QuerySet
from django.utils import timezone

from crowd import claims
from crowd.claims import ClaimLost
from crowd.models import User
from qa import auto_accept, model_scores, services, worker_model
from qa.consensus import classification as cls
from qa.consensus.boxes import (
    box_certainty,
    merge_across_tiles,
    merge_boxes,
    merge_boxes_batch,
)
from qa.consensus.keypoints import merge_keypoints, merge_keypoints_batch
from qa.consensus.masks import (
    merge_masks,
    merge_masks_batch,
    merge_semantic_batch,
    unite_mask_tiles,
)
from qa.consensus.objects import Answer, MergedObject
from qa.consensus.polygons import merge_polygons, merge_polygons_batch
from qa.geometry import box_iou
from qa.model_scores import MODEL_VOTER, ModelVoter
from qa.models import (
    ConsensusResult,
    ConsensusRun,
    GoldAnswer,
    GoldResult,
    RunStatus,
    WorkerScore,
)
from qa.reliability import Evidence, vote_weight
from qa.selectors import project_agreement
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
from tasks.schema import project_schema

logger = logging.getLogger(__name__)

COUNTED = [AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED]
QUORUM = 0.5
WRITE_BATCH = 500
# Images whose boxes a run merges in one batch. The merge's working memory is a few hundred
# bytes a box (16 MB at its peak for 2,000 images of 20 boxes by 5 workers), bounded by the
# chunk however large the project; the fixed cost of a call (about 0.4 ms) is paid once a
# chunk instead of once a task.
MERGE_CHUNK = 2000


def vote_weights(project: Project, worker_ids: Sequence[int]) -> dict[int, float]:
    """Each worker's weight in consensus; newcomers count as a typical worker."""
    rows = WorkerScore.objects.filter(project=project, worker_id__in=list(worker_ids)).values_list(
        "worker_id", "gold_seen", "gold_score_sum", "agreement_seen", "agreement_sum",
        "model_seen", "model_sum",
    )  # fmt: skip
    weights = {w: vote_weight(Evidence()) for w in worker_ids}
    for worker_id, gold, gold_sum, agreed, agreed_sum, model, model_sum in rows:
        evidence = Evidence(gold, gold_sum, agreed, agreed_sum, model, model_sum)
        weights[worker_id] = vote_weight(evidence)
    if MODEL_VOTER in weights:
        # The model's weight is the one its own evidence earned (gold, and the fit).
        weights[MODEL_VOTER] = model_scores.current_weight(project)
    return weights


def shapes_merge(
    project: Project, answers: Sequence[Answer], *, width: int, height: int
) -> list[MergedObject]:
    threshold = project.iou_threshold
    if project.kind == Kind.BBOX:
        return merge_boxes(answers, iou_threshold=threshold, quorum=QUORUM)
    if project.kind == Kind.POLYGON:
        return merge_polygons(
            answers, width=width, height=height, iou_threshold=threshold, quorum=QUORUM
        )
    if project.kind == Kind.MASK:
        if project.mask_mode == MaskMode.SEMANTIC:
            # A pixel vote has no quorum: each pixel takes the weighted vote's label.
            return merge_semantic_batch([answers], [(width, height)])[0]
        return merge_masks(
            answers, width=width, height=height, iou_threshold=threshold, quorum=QUORUM
        )
    return merge_keypoints(
        answers, sigmas=services.project_sigmas(project), oks_threshold=threshold, quorum=QUORUM
    )


def shapes_merge_many(
    project: Project,
    crowds: Sequence[Sequence[Answer]],
    sizes: Sequence[tuple[int, int]],
    *,
    model: Any = None,
) -> list[list[MergedObject]]:
    """:func:`shapes_merge` of many tasks: ``crowds[k]`` on an image of ``sizes[k]`` (width,
    height). With the project's worker ``model`` (``qa.worker_model``), the kind's EM merge
    applies it: an object is kept by its posterior of being real, and members are placed by
    their worker's precision; the same model for every chunk, so the results do not depend on
    how a run cuts the project. Without one, the fixed-quorum merge with the vote weights."""
    threshold = project.iou_threshold
    if project.kind == Kind.BBOX:
        if model is not None:
            return merge_boxes_batch(crowds, iou_threshold=threshold, method="em", model=model)
        return merge_boxes_batch(crowds, iou_threshold=threshold, quorum=QUORUM)
    if model is not None and project.kind == Kind.POLYGON:
        return merge_polygons_batch(crowds, sizes, iou_threshold=threshold, model=model)
    if model is not None and project.kind == Kind.MASK:
        if project.mask_mode == MaskMode.SEMANTIC:
            return merge_semantic_batch(crowds, sizes, model=model)
        return merge_masks_batch(crowds, sizes, iou_threshold=threshold, model=model)
    if model is not None and project.kind == Kind.KEYPOINTS:
        return merge_keypoints_batch(
            crowds,
            sigmas=services.project_sigmas(project),
            oks_threshold=threshold,
            method="em",
            model=model,
        )
    return [
        shapes_merge(project, crowd, width=width, height=height)
        for crowd, (width, height) in zip(crowds, sizes, strict=True)
    ]


@dataclass(frozen=True)
class TaskConsensus:
    confidence: float
    agreement: dict[int, float]  # worker -> agreement of their answer with the consensus
    annotations: list[dict[str, Any]] = field(default_factory=list)  # the merged answer
    # The model's agreement with the consensus when it voted (it is no worker: never in
    # ``agreement``, which feeds the workers' scores); None when it did not.
    model_agreement: float | None = None


def _model_answers(
    project: Project, tasks: Sequence[Task], voter: ModelVoter | None
) -> list[list[dict[str, Any]] | None]:
    """The voting model's answer to each task (None where it has none)."""
    if voter is None:
        return [None] * len(tasks)
    return [
        voter.answer(
            project, t.image_id, t.region, image_size=[0, 0, t.image.width, t.image.height]
        )
        for t in tasks
    ]


def task_consensus(project: Project, task: Task, answers: Sequence[Assignment]) -> TaskConsensus:
    """The consensus of one task's counted answers: classification by reliability-weighted
    vote (confidence: the leading label's posterior); shapes merged (confidence: the
    weighted mean F1 of the answers against the merged objects; boxes the model votes on,
    how sure the worker model is of the objects, ``box_certainty``). The weights read the
    project's worker model once it has been fitted (``qa.worker_model``), so dynamic overlap
    asks for more answers where the workers it has are ones the model doubts."""
    return tasks_consensus(project, [task], [answers])[0]


def tasks_consensus(
    project: Project, tasks: Sequence[Task], answers: Sequence[Sequence[Assignment]]
) -> list[TaskConsensus]:
    """:func:`task_consensus` of many tasks of the project (``answers[k]`` those of
    ``tasks[k]``): the weights and the worker model read once, the shapes merged in one
    batch. Each task's result is the one it gets alone."""
    if not tasks:
        return []
    weights = vote_weights(project, sorted({a.worker_id for group in answers for a in group}))
    # The project's model votes as one more member of each task's crowd, where it may
    # (``qa.model_scores``), with the weight it earned.
    voter = model_scores.model_voter(project, sorted({t.image_id for t in tasks}))
    if voter is not None:
        weights[MODEL_VOTER] = voter.weight
    model_items = _model_answers(project, tasks, voter)
    if project.kind == Kind.CLASSIFICATION:
        labels = list(project_schema(project).labels)
        return [
            _vote(group, weights, labels, model)
            for group, model in zip(answers, model_items, strict=True)
        ]
    crowds = [
        [Answer(a.worker_id, weights[a.worker_id], a.answer or []) for a in g]
        + ([] if model is None else [Answer(MODEL_VOTER, weights[MODEL_VOTER], model)])
        for g, model in zip(answers, model_items, strict=True)
    ]
    sizes = [(task.image.width, task.image.height) for task in tasks]
    # The project's worker model, as the last fit learnt it, keeps and places objects as a
    # run does; before the first fit, the fixed quorum.
    model = worker_model.stored_model(project, list(weights))
    found = shapes_merge_many(project, crowds, sizes, model=model)
    results = []
    for crowd, objects, (width, height) in zip(crowds, found, sizes, strict=True):
        merged = [o.to_item() for o in objects]
        agreement: dict[int, float] = {
            int(a.worker): services.answer_compare(  # type: ignore[call-overload]
                project=project, reference=merged, answer=[dict(i) for i in a.items],
                width=width, height=height,
            ).f1
            for a in crowd
        }  # fmt: skip
        total = sum(weights[w] for w in agreement)
        confidence = sum(weights[w] * f for w, f in agreement.items()) / total if total else 0.0
        model_agreement = agreement.pop(MODEL_VOTER, None)
        results.append(TaskConsensus(confidence, agreement, merged, model_agreement))
    if voter is not None and project.kind == Kind.BBOX:
        # With the model voting on boxes, a task is as certain as the worker model is of
        # which objects are there and what they are (``box_certainty``), not the mean
        # agreement of whole answers: that would let a worker and a model disagreeing on
        # one object in five close the task, and hold open every task where a model of 85%
        # recall missed something the worker rightly marked.
        voting = [k for k, c in enumerate(crowds) if any(a.worker == MODEL_VOTER for a in c)]
        rates = worker_model.decision_box_model(project, list(weights), fitted=model)
        certainty = box_certainty(
            [crowds[k] for k in voting], model=rates, iou_threshold=project.iou_threshold
        )
        for k, confidence in zip(voting, certainty, strict=True):
            results[k] = replace(results[k], confidence=confidence)
    return results


def _vote(
    answers: Sequence[Assignment],
    weights: dict[int, float],
    labels: list[str],
    model: list[dict[str, Any]] | None = None,
) -> TaskConsensus:
    pairs = [(a.worker_id, a.answer[0]["label"]) for a in answers if a.answer]
    if not pairs:
        return TaskConsensus(0.0, {})
    if model:
        pairs.append((MODEL_VOTER, model[0]["label"]))
    encoded, _, workers, keys = cls.encode(((0, w, label) for w, label in pairs), labels=labels)
    result = cls.weighted_vote(encoded, [weights[w] for w in workers])  # type: ignore[index]
    winner = keys[int(result.label[0])]
    agreement = {w: float(label == winner) for w, label in pairs}
    model_agreement = agreement.pop(MODEL_VOTER, None)
    return TaskConsensus(
        float(result.confidence[0]), agreement, [{"label": winner}], model_agreement
    )


def task_reference(project: Project, task: Task) -> dict[str, Any]:
    """What a reviewer compares one answer with: the gold answer of a gold task, else the
    consensus of the task's counted answers so far (suspended workers' left out)."""
    if task.is_gold:
        gold = GoldAnswer.objects.filter(image_id=task.image_id).first()
        return {
            "source": "gold",
            "annotations": gold.annotations if gold else [],
            "confidence": None,
            "answers": None,
        }
    answers = [
        a
        for a in Assignment.objects.filter(task=task, status__in=COUNTED, counted=True)
        if a.answer is not None
    ]
    suspended = services.suspended_workers(
        project_id=project.pk, worker_ids=[a.worker_id for a in answers]
    )
    counted = [a for a in answers if a.worker_id not in suspended]
    if not counted:
        return {"source": "consensus", "annotations": [], "confidence": None, "answers": 0}
    consensus = task_consensus(project, task, counted)
    return {
        "source": "consensus",
        "annotations": consensus.annotations,
        "confidence": round(consensus.confidence, 4),
        "answers": len(counted),
    }


# --- Project runs ------------------------------------------------------------------------------


def consensus_run_request(*, project: Project, user: User | None = None) -> ConsensusRun:
    """Queue a computation of the project's consensus; the job starts after commit."""
    from crowd.jobs import send_on_commit
    from qa.jobs import consensus_compute

    run = ConsensusRun.objects.create(project=project, requested_by=user)
    send_on_commit(consensus_compute, run.pk)
    return run


def model_rows(
    project: Project, answers: Sequence[tuple[int, int, int, int, Any]]
) -> tuple[list[tuple[int, int, int, int, Any]], ModelVoter | None]:
    """The voting model's answers to the tasks people answered, as rows like theirs
    (assignment 0, worker :data:`MODEL_VOTER`): it joins a task's crowd, never answers a task
    alone."""
    voter = model_scores.model_voter(project, sorted({i for _, _, i, _, _ in answers}))
    if voter is None:
        return [], None
    task_ids = sorted({t for _, t, _, _, _ in answers})
    rows: list[tuple[int, int, int, int, Any]] = []
    for start in range(0, len(task_ids), MERGE_CHUNK):
        tasks = Task.objects.filter(pk__in=task_ids[start : start + MERGE_CHUNK]).select_related(
            "image"
        )
        for task, items in zip(tasks, _model_answers(project, list(tasks), voter), strict=True):
            if items is not None:
                rows.append((0, task.pk, task.image_id, MODEL_VOTER, items))
    return rows, voter


def counted_answers(project: Project) -> list[tuple[int, int, int, int, Any]]:
    """(assignment, task, image, worker, answer) of every answer that counts in consensus."""
    suspended = services.suspended_workers(project_id=project.pk)
    rows = (
        Assignment.objects.filter(project=project, status__in=COUNTED, task__is_gold=False)
        .order_by("task_id", "pk")
        .values_list("pk", "task_id", "task__image_id", "worker_id", "answer")
    )
    return [r for r in rows if r[3] not in suspended]


TALLIED_AGREEMENT = (
    "tasks", "fleiss_kappa", "krippendorff_alpha", "mean_pairwise_iou", "mean_pairwise_f1",
)  # fmt: skip


def run_tally(
    project: Project, answers: Sequence[tuple[int, int, int, int, Any]]
) -> dict[str, Any]:
    """What a run counted, read when it reads its ``answers`` (those that count) and recorded
    with it: the dataset card of a version built from the run reports these figures, not the
    project's as they are when the version is built or read."""
    gold = GoldResult.objects.filter(project=project).aggregate(
        results=Count("pk"), mean_score=Avg("score"), passed=Count("pk", filter=Q(passed=True))
    )
    images = Image.objects.filter(project=project).aggregate(
        ready=Count("pk", filter=Q(status=ImageStatus.READY)),
        failed=Count("pk", filter=Q(status=ImageStatus.FAILED)),
    )
    agreement = project_agreement(project)
    return {
        "answers": len(answers),
        "workers": len({worker for _, _, _, worker, _ in answers}),
        "suspended": len(services.suspended_workers(project_id=project.pk)),
        "gold": gold,
        "agreement": {key: agreement.get(key) for key in TALLIED_AGREEMENT},
        "images": images,
    }


def consensus_compute(*, run_id: int) -> ConsensusRun | None:
    """Compute and store the consensus of every answered image of the run's project,
    replacing earlier results. Safe to run twice, even at once: the copy that claims the run
    computes it (see ``crowd.claims``); another finds it done, or leaves it to the live copy
    that holds it, and returns the run as it stands."""
    claim = claims.claim(
        ConsensusRun,
        run_id,
        done=RunStatus.DONE,
        fields=lambda: {"status": RunStatus.RUNNING, "started_at": timezone.now(), "error": ""},
    )
    if claim is None:
        return ConsensusRun.objects.filter(pk=run_id).first()
    with claim:
        run = ConsensusRun.objects.select_related("project").get(pk=run_id)
        project = run.project
        try:
            answers = counted_answers(project)
            tally = run_tally(project, answers)
            # The voting model joins every crowd as one more member: the worker model learns
            # it like anyone, and it counts by the weight it earned.
            extra, voter = model_rows(project, answers)
            answers = sorted(answers + extra, key=lambda row: (row[1], row[3] == MODEL_VOTER))
            # The worker model over the whole project first: the run's weights and (shapes)
            # its merge read it, and so do scores and dynamic overlap from now on.
            fitted = worker_model.fit(project, answers)
            if fitted is not None:
                with transaction.atomic():
                    claim.fence()
                    worker_model.record(project, fitted)
                tally["worker_model"] = {"method": fitted.method, "workers": len(fitted.workers)}
            if project.kind == Kind.CLASSIFICATION:
                method, results = _classification_results(project, answers)
            else:
                method, results = _shape_results(project, answers, fitted)
            if voter is not None:
                tally["model"] = _model_tally(project, voter, results)
            accepted = auto_accept.auto_accepted_results(project)
            if accepted:
                tally["auto_accepted"] = _auto_accept_tally(project, accepted)
            results += accepted
            results += _gold_results(project)
            params: dict[str, Any] = {"iou_threshold": project.iou_threshold}
            if project.kind != Kind.CLASSIFICATION:
                # Shapes merge by the worker model once it is fitted; by the quorum before.
                if fitted is None:
                    params["quorum"] = QUORUM
                else:
                    params["model"] = fitted.method
            claim.fence(method=method, images_total=len(results), params=params, tally=tally)
            _store(run, results, claim)
            if not claim.release(status=RunStatus.DONE, finished_at=timezone.now()):
                raise ClaimLost(f"consensus run {run_id} was taken over before it was done")
        except ClaimLost as exc:
            logger.warning("%s; this copy stops, its results left to the other", exc)
            run.refresh_from_db()
            return run
        except Exception as exc:
            if not claim.release(
                status=RunStatus.FAILED, error=str(exc)[:500], finished_at=timezone.now()
            ):
                logger.warning("consensus run %s failed in a copy that had lost it", run_id)
                return run
            raise
    results_prune(project)
    # New human results: auto-accept's calibration may move.
    auto_accept.auto_accept_request(project.pk)
    run.refresh_from_db()
    return run


def _store(run: ConsensusRun, results: list[ConsensusResult], claim: claims.Claim) -> None:
    """Write the run's rows in batches; a retried run starts over from none. Each batch is
    written only while this copy holds the run's claim (ClaimLost otherwise)."""
    with transaction.atomic():
        claim.fence(images_done=0)
        ConsensusResult.objects.filter(run=run).delete()
    for start in range(0, len(results), WRITE_BATCH):
        batch = results[start : start + WRITE_BATCH]
        for row in batch:
            row.run = run
        with transaction.atomic():
            claim.fence(images_done=start + len(batch))
            ConsensusResult.objects.bulk_create(batch)


def latest_run(project: Project) -> ConsensusRun | None:
    """The project's newest finished consensus run: the one whose results are current."""
    return (
        ConsensusRun.objects.filter(project=project, status=RunStatus.DONE).order_by("-pk").first()
    )


def current_results(project: Project) -> QuerySet[ConsensusResult]:
    run = latest_run(project)
    return ConsensusResult.objects.filter(run=run) if run else ConsensusResult.objects.none()


def results_prune(project: Project) -> int:
    """Drop the rows of superseded runs that no unfinished export still reads."""
    from qa.models import DatasetExport

    keep = {run.pk} if (run := latest_run(project)) else set()
    keep |= set(
        DatasetExport.objects.filter(
            project=project, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        ).values_list("consensus_run_id", flat=True)
    )
    stale = ConsensusResult.objects.filter(project=project).exclude(run_id__in=keep - {None})
    deleted, _ = stale.delete()
    return deleted


def _classification_results(
    project: Project, answers: list[tuple[int, int, int, int, Any]]
) -> tuple[str, list[ConsensusResult]]:
    labelled = [(a, t, i, w, ans[0]["label"]) for a, t, i, w, ans in answers if ans]
    if not labelled:
        return "none", []
    labels = list(project_schema(project).labels)
    encoded, tasks, workers, keys = cls.encode(
        ((t, w, label) for _, t, _, w, label in labelled), labels=labels
    )
    weights = vote_weights(project, [int(w) for w in workers])  # type: ignore[call-overload]
    result = cls.aggregate(encoded, weights=[weights[int(w)] for w in workers])  # type: ignore[call-overload]
    by_task: dict[Any, list[tuple[int, int, str]]] = defaultdict(list)
    image_of: dict[Any, int] = {}
    for a, t, i, w, label in labelled:
        by_task[t].append((a, w, label))
        image_of[t] = i
    low = set(
        Task.objects.filter(project=project, low_confidence=True).values_list("pk", flat=True)
    )
    out = []
    for index, task in enumerate(tasks):
        confidence = float(result.confidence[index])
        label = keys[int(result.label[index])]
        people = [(a, w, lab) for a, w, lab in by_task[task] if w != MODEL_VOTER]
        contributors: dict[str, Any] = {"answers": [
            {"assignment": a, "worker": w, "label": lab, "weight": round(weights[w], 4)}
            for a, w, lab in people
        ]}  # fmt: skip
        model = [lab for _, w, lab in by_task[task] if w == MODEL_VOTER]
        if model:
            agreeing = sum(1 for _, _, lab in people if lab == label)
            contributors["model"] = {
                "label": model[0], "weight": round(weights[MODEL_VOTER], 4),
                "agreed": int(model[0] == label), "rests_on_model": int(
                    model[0] == label and agreeing <= 1
                ),
            }  # fmt: skip
        out.append(
            ConsensusResult(
                project=project, image_id=image_of[task], method=result.method,
                annotations=[{"label": label, "score": round(confidence, 6),
                              "num_votes": int(result.votes[index])}],
                confidence=confidence, votes=len(people),
                low_confidence=task in low or confidence < project.agreement_threshold,
                contributors=contributors,
            )
        )  # fmt: skip
    return result.method, out


def _shape_results(
    project: Project,
    answers: list[tuple[int, int, int, int, Any]],
    fitted: worker_model.ProjectFit | None = None,
) -> tuple[str, list[ConsensusResult]]:
    weights = vote_weights(project, sorted({w for _, _, _, w, _ in answers}))
    by_image: dict[int, dict[int, list[tuple[int, int, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for a, t, i, w, ans in answers:
        by_image[i][t].append((a, w, ans or []))
    images = Image.objects.in_bulk(list(by_image))
    tasks = Task.objects.in_bulk([t for per in by_image.values() for t in per])
    method = "merge" if fitted is None else fitted.method
    image_ids = list(by_image)
    out = []
    for start in range(0, len(image_ids), MERGE_CHUNK):
        chunk = [
            (images[i], by_image[i], [tasks[t] for t in sorted(by_image[i])])
            for i in image_ids[start : start + MERGE_CHUNK]
        ]
        # One crowd a task (a tile) of the chunk's images, in order, merged in one call.
        crowds = [
            [Answer(w, weights[w], items) for _, w, items in per_task[task.pk]]
            for _, per_task, image_tasks in chunk
            for task in image_tasks
        ]
        sizes = [
            (image.width, image.height) for image, _, image_tasks in chunk for _ in image_tasks
        ]
        merged = iter(shapes_merge_many(project, crowds, sizes, model=fitted and fitted.model))
        # Masks crossing a seam are joined at the edge tolerance the fit clustered them at.
        tolerance = float(getattr(fitted and fitted.model, "edge_tolerance", 0.0) or 0.0)
        for image, per_task, image_tasks in chunk:
            objects_per_tile = list(islice(merged, len(image_tasks)))
            out.append(
                _shape_result(
                    project,
                    image,
                    per_task,
                    image_tasks,
                    objects_per_tile,
                    weights,
                    method,
                    tolerance,
                )
            )
    return method, out


def _shape_result(
    project: Project,
    image: Image,
    per_task: dict[int, list[tuple[int, int, Any]]],
    tasks: list[Task],
    objects_per_tile: list[list[MergedObject]],
    weights: dict[int, float],
    method: str,
    tolerance: float = 0.0,
) -> ConsensusResult:
    """One image's result from the merged objects of its tasks (its tiles, in order);
    ``tolerance``: the masks' edge tolerance (:func:`_unite_tiles`)."""
    assignment_of: dict[tuple[int, Any], int] = {
        (tile, w): a for tile, task in enumerate(tasks) for a, w, _ in per_task[task.pk]
    }
    objects = _unite_tiles(project, objects_per_tile, [t.region for t in tasks], tolerance)
    confidences = [c for t in tasks if (c := t.confidence) is not None]
    confidence = float(np.mean(confidences)) if confidences else None
    answered = [x for v in per_task.values() for x in v]
    contributors: dict[str, Any] = {
        "weights": {str(w): round(weights[w], 4) for _, w, _ in answered if w != MODEL_VOTER},
        # The model's items appear as assignment 0.
        "objects": [
            [[assignment_of[(m.tile or 0, m.worker)], m.item] for m in o.members] for o in objects
        ],
    }
    if any(w == MODEL_VOTER for _, w, _ in answered):
        with_model = [o for o in objects if MODEL_VOTER in o.workers]
        contributors["model"] = {
            "weight": round(weights[MODEL_VOTER], 4),
            "agreed": len(with_model),
            # Objects the model marked with at most one person: without it, one answer.
            "rests_on_model": sum(
                1 for o in with_model if len({w for w in o.workers if w != MODEL_VOTER}) <= 1
            ),
        }
    return ConsensusResult(
        project=project, image=image, method=method, confidence=confidence,
        annotations=[o.to_item() for o in objects],
        votes=sum(1 for _, w, _ in answered if w != MODEL_VOTER),
        low_confidence=any(t.low_confidence for t in tasks),
        contributors=contributors,
    )  # fmt: skip


def _model_tally(
    project: Project, voter: ModelVoter, results: Sequence[ConsensusResult]
) -> dict[str, Any]:
    """What the run's labels owe the model: how many it agreed with, and how many rest on
    it (it and at most one person gave them), for the dataset card."""
    row = model_scores.model_score(project, voter.version)
    labels = sum(len(r.annotations) for r in results)
    model = [r.contributors.get("model") for r in results]
    return {
        "version": voter.version,
        "weight": round(voter.weight, 4),
        "gold_seen": row.gold_seen,
        "gold_score": round(row.gold_score_sum / row.gold_seen, 4) if row.gold_seen else None,
        "labels": labels,
        "agreed": sum(m["agreed"] for m in model if m),
        "rests_on_model": sum(m["rests_on_model"] for m in model if m),
    }


def _auto_accept_tally(project: Project, results: Sequence[ConsensusResult]) -> dict[str, Any]:
    """What the run's images owe the model alone, for the dataset card."""
    from qa.models import AutoAcceptState

    state = AutoAcceptState.objects.filter(project=project).first()
    figures = state.figures if state else {}
    versions = sorted({r.contributors["auto_accepted"]["model_version"] for r in results})
    return {
        "images": len(results),
        "labels": sum(len(r.annotations) for r in results),
        "versions": versions,
        "threshold": state.threshold if state else None,
        "settings": figures.get("settings"),
        "checked": figures.get("checked"),
        "accuracy": figures.get("accuracy"),
        "lower_bound": figures.get("lower_bound"),
    }


def _unite_tiles(
    project: Project,
    objects_per_tile: list[list[MergedObject]],
    regions: list[list[int]],
    tolerance: float = 0.0,
) -> list[MergedObject]:
    """One image's objects from its tiles' merges. Boxes crossing a seam are united into one
    box, masks into one mask (each tile deciding the pixels of its core, pieces compared
    dilated by ``tolerance`` pixels, the edge tolerance of the worker-model fit); polygons
    and keypoint instances found twice in an overlap keep the better copy."""
    if len(objects_per_tile) == 1:
        return objects_per_tile[0]
    if project.kind == Kind.BBOX:
        return merge_across_tiles(objects_per_tile, regions)
    if project.kind == Kind.MASK:
        return unite_mask_tiles(
            objects_per_tile,
            regions,
            iou_threshold=project.iou_threshold,
            semantic=project.mask_mode == MaskMode.SEMANTIC,
            tolerance=tolerance,
        )
    kept: list[MergedObject] = []
    flat = [(o, tile) for tile, objs in enumerate(objects_per_tile) for o in objs]
    for obj, tile in sorted(flat, key=lambda x: -x[0].score):
        box = _bounds(obj)
        if any(
            k.label == obj.label and box_iou([box], [_bounds(k)])[0, 0] >= project.iou_threshold
            for k in kept
        ):
            continue
        kept.append(obj._replace(tiles=(tile,) * len(obj.items)))
    return kept


def _bounds(obj: MergedObject) -> list[float]:
    if obj.points is not None:
        xs, ys = [p[0] for p in obj.points], [p[1] for p in obj.points]
    else:
        shown = [k for k in obj.keypoints or () if k[2] > 0] or list(obj.keypoints or ())
        xs, ys = [k[0] for k in shown], [k[1] for k in shown]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _gold_results(project: Project) -> list[ConsensusResult]:
    """Gold images ship their expert answer."""
    return [
        ConsensusResult(
            project=project,
            image_id=g.image_id,
            method="gold",
            confidence=1.0,
            votes=0,
            annotations=[{**item, "score": 1.0, "num_votes": 0} for item in g.annotations],
            contributors={"gold": True},
        )
        for g in GoldAnswer.objects.filter(project=project)
    ]
