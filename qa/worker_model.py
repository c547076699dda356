"""The project's worker model: what all of a project's answers say of each worker.

One model a project, learnt from every answer that counts (not only those of one task), by
the kind's own EM in ``qa.consensus``:

- classification: Dawid-Skene, each worker's confusion matrix and the classes' priors; a
  worker's expected accuracy is ``sum_k prior_k * confusion[k, k]``;
- boxes: each worker's recall, false marks a picture, placement noise, systematic shift and
  label confusion (:func:`qa.consensus.boxes.box_model`), with the gold results as the prior
  the EM starts from where the project has gold;
- polygons: recall, false marks, the outline's outward bias and noise, label accuracy
  (:func:`qa.consensus.polygons.polygon_model`);
- keypoints: recall, false marks, placement noise, left-right swaps and visibility
  (:func:`qa.consensus.keypoints.keypoint_model`);
- instance masks: recall, false marks, label accuracy and pixel sensitivity and specificity
  (:func:`qa.consensus.masks.mask_model`); semantic masks: each worker's pixel accuracy
  (:func:`qa.consensus.masks.semantic_model`), which is also their expected accuracy.

For shapes the expected accuracy is the F1 a worker's answer to a typical picture scores
against the truth: with recall ``r``, ``l`` false marks and ``mu`` objects a picture,
``2 r mu / (mu (1 + r) + l)``. It enters the worker's score and vote weight as evidence that
stands in for their agreement (``qa.reliability``), once per answer the model rests on, so
the consensus run, dynamic overlap and the worker lists all read it.

A consensus run fits the model over the whole project and applies it chunk by chunk; the
periodic sweep asks for a refit (:func:`refits_request`) when a project's answers grew by
``REFIT_GROWTH`` since the last one, so the scores follow a project that is being worked
without anyone asking for a run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.core.cache import cache
from django.db.models import Q, Sum
from django.utils import timezone

from qa.consensus import classification as cls
from qa.consensus.box_em import GoldRates
from qa.models import GoldResult, WorkerModelFit, WorkerScore
from tasks.models import Image, Kind, MaskMode, Project, Task
from tasks.schema import project_schema

if TYPE_CHECKING:
    from qa.consensus.boxes import BoxModel

logger = logging.getLogger(__name__)

# (assignment, task, image, worker, answer) of each answer that counts, as ``qa.merge`` reads.
AnswerRow = tuple[int, int, int, int, Any]

# A project is refitted when its counted answers grew by this share since the last fit, and
# by at least ``REFIT_MIN_ANSWERS``: the model of a busy project follows it without an EM a
# minute, and a small one is not refitted for every few answers.
REFIT_GROWTH = 0.25
REFIT_MIN_ANSWERS = 50
# The sweep looks for projects to refit at most this often (every process together).
REFIT_CHECK_SECONDS = 300
REFIT_CHECKED = "qa:worker-models-checked"
# Gold answers of a worker count as this many answers each in the box model's prior: an
# expert-checked answer says more of a worker's recall than an answer judged by the crowd.
GOLD_PRIOR_WEIGHT = 2.0


@dataclass(frozen=True)
class WorkerFit:
    worker: int
    answers: int  # answers the fit rests on
    accuracy: float  # expected accuracy, in (0, 1)
    params: dict[str, Any]  # the model's parameters, JSON-able, for the manager


@dataclass(frozen=True)
class ProjectFit:
    method: str
    answers: int
    workers: list[WorkerFit]
    crowd: dict[str, Any] = field(default_factory=dict)
    # The kind's own model, for the run that applies it chunk by chunk (shapes).
    model: Any = None


def shape_accuracy(recall: float, false_marks: float, objects: float) -> float:
    """F1 of a worker's answer to a typical picture (see the module)."""
    denominator = objects * (1.0 + recall) + false_marks
    if not denominator:
        return 0.5
    return float(np.clip(2.0 * recall * objects / denominator, 1e-3, 1 - 1e-3))


def fit(project: Project, answers: Sequence[AnswerRow]) -> ProjectFit | None:
    """The project's worker model from its counted ``answers``; None when they are too few
    to learn one (classification below Dawid-Skene's minimum, or no shapes at all)."""
    if project.kind == Kind.CLASSIFICATION:
        return _classification_fit(project, answers)
    crowds, images_of = _crowds(answers)
    if not crowds:
        return None
    if project.kind == Kind.BBOX:
        return _box_fit(project, crowds, len(answers))
    if project.kind == Kind.POLYGON:
        from qa.consensus.polygons import polygon_model

        images = Image.objects.in_bulk(sorted(set(images_of)))
        sizes = [(images[i].width, images[i].height) for i in images_of]
        model: Any = polygon_model(
            crowds, sizes, iou_threshold=project.iou_threshold, prior=_gold_rates(project)
        )
        return _shape_fit("polygon_em", model, len(answers))
    if project.kind == Kind.MASK:
        return _mask_fit(project, crowds, images_of, len(answers))
    from qa import services
    from qa.consensus.keypoints import keypoint_model

    sigmas = services.project_sigmas(project)
    model = keypoint_model(
        crowds, sigmas=sigmas, oks_threshold=project.iou_threshold, prior=_gold_rates(project)
    )
    return _shape_fit("keypoint_em", model, len(answers))


def _crowds(answers: Sequence[AnswerRow]) -> tuple[list[list[Any]], list[int]]:
    """One crowd a task (a tile), in task order: ``[worker, 1.0, items]`` each (weights play
    no part in learning the model), and each task's image."""
    by_task: dict[int, list[Any]] = defaultdict(list)
    image_of: dict[int, int] = {}
    for _, task, image, worker, items in answers:
        by_task[task].append([worker, 1.0, items or []])
        image_of[task] = image
    order = sorted(by_task)
    return [by_task[task] for task in order], [image_of[task] for task in order]


def _classification_fit(project: Project, answers: Sequence[AnswerRow]) -> ProjectFit | None:
    labelled = [(t, w, ans[0]["label"]) for _, t, _, w, ans in answers if ans]
    if len(labelled) < cls.MIN_ANSWERS_FOR_DS:
        return None
    encoded, _, workers, keys = cls.encode(labelled, labels=list(project_schema(project).labels))
    result = cls.dawid_skene(encoded)
    assert result.worker_confusion is not None
    assert result.priors is not None
    confusion, priors = result.worker_confusion, result.priors
    per_worker = np.bincount(encoded.worker, minlength=encoded.n_workers)
    accuracy = np.einsum("k,wkk->w", priors, confusion)
    fits = [
        WorkerFit(
            worker=int(workers[w]),  # type: ignore[call-overload]
            answers=int(per_worker[w]),
            accuracy=float(np.clip(accuracy[w], 1e-3, 1 - 1e-3)),
            params={
                "accuracy": round(float(accuracy[w]), 4),
                "confusion": np.round(confusion[w], 4).tolist(),
            },
        )
        for w in range(encoded.n_workers)
    ]
    crowd = {"labels": [str(k) for k in keys], "priors": np.round(priors, 4).tolist()}
    return ProjectFit("dawid_skene", len(labelled), fits, crowd)


def gold_priors(project: Project, worker_ids: Sequence[int] | None = None) -> dict[int, GoldRates]:
    """Each worker's recall, false marks a picture and weight in answers on the project's gold
    (of ``worker_ids`` only, when given): objects found (matched or with a wrong label) over
    the gold's objects, and extra objects an answer; the model's with its boxes' scores."""
    totals: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    results = GoldResult.objects.filter(project=project)
    if worker_ids is not None:
        results = results.filter(worker_id__in=[w for w in worker_ids if w > 0])
    for worker, details in results.values_list("worker_id", "details"):
        found = float(details.get("matched", 0)) + float(details.get("wrong_label", 0))
        gold = found + float(details.get("missed", 0))
        row = totals[worker]
        row[0] += found
        row[1] += gold
        row[2] += float(details.get("extra", 0))
        row[3] += 1.0
    priors = {
        worker: GoldRates(found / gold if gold else 0.5, extra / n, GOLD_PRIOR_WEIGHT * n)
        for worker, (found, gold, extra, n) in totals.items()
        if gold
    }
    from qa import model_scores

    # The model's own gold answers (its predictions of the gold images) are its prior alike.
    if (rates := model_scores.gold_rates(project)) is not None:
        priors[model_scores.MODEL_VOTER] = rates
    return priors


def _gold_rates(project: Project) -> dict[Hashable, GoldRates] | None:
    """:func:`gold_priors` as the shape models take them; None without gold results."""
    rates: dict[Hashable, GoldRates] = dict(gold_priors(project).items())
    return rates or None


def _box_fit(project: Project, crowds: list[list[Any]], n_answers: int) -> ProjectFit:
    from qa.consensus.boxes import box_model

    model = box_model(crowds, iou_threshold=project.iou_threshold, prior=_gold_rates(project))
    fits = [
        WorkerFit(
            worker=int(worker),  # type: ignore[call-overload]
            answers=int(values.images),
            accuracy=shape_accuracy(values.recall, values.false_marks, model.objects),
            params=_jsonable(values._asdict()),
        )
        for worker, values in model.workers().items()
    ]
    crowd = {
        "objects": model.objects,
        "crowd": _jsonable(model.crowd._asdict()),
        "labels": list(model.labels),
        "label_prior": list(model.label_prior),
    }
    return ProjectFit("box_em", n_answers, fits, crowd, model)


def _shape_fit(method: str, model: Any, n_answers: int) -> ProjectFit:
    """The fit of a polygon or keypoint model: per worker, recall and false marks give the
    expected accuracy; the rest of their parameters go to the manager."""
    fits = [
        WorkerFit(
            worker=int(worker),
            answers=int(values.images),
            accuracy=shape_accuracy(values.recall, values.false_marks, model.objects),
            params=_jsonable(values._asdict()),
        )
        for worker, values in model.workers.items()
    ]
    crowd = {
        "objects": model.objects,
        "crowd": _jsonable(model.crowd._asdict()),
        # What rebuilding the model needs besides the workers (``stored_model``).
        "n_labels": getattr(model, "n_labels", None),
        "keypoints": dict(getattr(model, "labels", {})),
        # Instance masks: the tolerance their clustering compares masks at.
        "edge_tolerance": getattr(model, "edge_tolerance", None),
    }
    return ProjectFit(method, n_answers, fits, crowd, model)


def _mask_fit(
    project: Project, crowds: list[list[Any]], images_of: list[int], n_answers: int
) -> ProjectFit:
    from qa.consensus.masks import mask_model, semantic_model

    images = Image.objects.in_bulk(sorted(set(images_of)))
    sizes = [(images[i].width, images[i].height) for i in images_of]
    if project.mask_mode != MaskMode.SEMANTIC:
        model: Any = mask_model(
            crowds, sizes, iou_threshold=project.iou_threshold, prior=_gold_rates(project)
        )
        return _shape_fit("mask_em", model, n_answers)
    model = semantic_model(crowds, sizes)
    fits = [
        WorkerFit(
            worker=int(worker),
            answers=int(values.images),
            accuracy=float(np.clip(values.accuracy, 1e-3, 1 - 1e-3)),
            params=_jsonable(values._asdict()),
        )
        for worker, values in model.workers.items()
    ]
    crowd = {"crowd": _jsonable(model.crowd._asdict()), "n_labels": model.n_labels}
    return ProjectFit("mask_semantic_em", n_answers, fits, crowd, model)


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """A model's parameters as JSON holds them: tuples as lists, numbers as Python's."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value.item() if isinstance(value, np.generic) else value

    return {key: plain(value) for key, value in values.items()}


def stored_model(project: Project, worker_ids: Sequence[int]) -> Any:
    """The shape model the project's last fit learnt, for the given workers (a task's): what
    the decision of one task applies between runs, so it keeps and places objects as the run
    does. Workers the fit has not seen take the crowd's parameters. None before a fit (and
    for classification, whose tasks are decided by the weighted vote)."""
    fit_row = WorkerModelFit.objects.filter(project=project).first()
    if fit_row is None or not fit_row.crowd or fit_row.method not in REBUILD:
        return None
    from qa import model_scores

    rows = WorkerScore.objects.filter(
        project=project, worker_id__in=list(worker_ids), model_seen__gt=0
    ).values_list("worker_id", "model_params")
    params = {w: p for w, p in rows if p}
    if model_scores.MODEL_VOTER in worker_ids:
        row = model_scores.current_row(project)
        if row is not None and row.model_seen > 0 and row.model_params:
            params[model_scores.MODEL_VOTER] = row.model_params
    return REBUILD[fit_row.method](fit_row.crowd, params)


def decision_box_model(
    project: Project, worker_ids: Sequence[int], *, fitted: BoxModel | None = None
) -> BoxModel:
    """The rates a box task's decision weighs its voters by (``qa.consensus.boxes.
    box_certainty``): the last fit's (``fitted``, as :func:`stored_model` rebuilt it, None
    before the first fit), with each voter the fit has not seen (a newcomer, a model version
    newer than the fit) on their gold rates shrunk toward the crowd's, else the crowd's.
    Before the first fit the crowd is the box EM's starting one and the objects a picture are
    the gold images' (a model votes once it has answered some)."""
    from qa import model_scores
    from qa.consensus.boxes import box_model_for

    voters = set(worker_ids)
    gold = {w: rates for w, rates in gold_priors(project, worker_ids).items() if w in voters}
    objects = 1.0
    if fitted is None:
        objects = model_scores.gold_objects(project) or objects
    return box_model_for(fitted, gold, objects=objects)


def _box_model(crowd: Mapping[str, Any], params: Mapping[int, Mapping[str, Any]]) -> BoxModel:
    from qa.consensus.boxes import BoxModel, BoxWorker

    def worker(values: Mapping[str, Any]) -> BoxWorker:
        known = {k: v for k, v in values.items() if k in BoxWorker._fields}
        known["confusion"] = tuple(tuple(row) for row in known.get("confusion", ()))
        known["shift"] = tuple(known.get("shift", (0.0, 0.0, 0.0, 0.0)))
        known["score_odds"] = tuple(known.get("score_odds", ()))
        return BoxWorker(**known)

    return BoxModel(
        ids=tuple(params),
        per_worker=tuple(worker(values) for values in params.values()),
        crowd=worker(crowd["crowd"]),
        objects=float(crowd["objects"]),
        labels=tuple(crowd.get("labels", ())),
        label_prior=tuple(crowd.get("label_prior", ())),
    )


def _polygon_model(crowd: Mapping[str, Any], params: Mapping[int, Mapping[str, Any]]) -> Any:
    from qa.consensus.polygons import PolygonModel, PolygonWorker

    def worker(values: Mapping[str, Any]) -> PolygonWorker:
        return PolygonWorker(**{k: v for k, v in values.items() if k in PolygonWorker._fields})

    return PolygonModel(
        workers={w: worker(values) for w, values in params.items()},
        crowd=worker(crowd["crowd"]),
        objects=float(crowd["objects"]),
        n_labels=int(crowd.get("n_labels") or 2),
    )


def _keypoint_model(crowd: Mapping[str, Any], params: Mapping[int, Mapping[str, Any]]) -> Any:
    from qa.consensus.keypoints import KeypointModel, KeypointWorker

    def worker(values: Mapping[str, Any]) -> KeypointWorker:
        known = {k: v for k, v in values.items() if k in KeypointWorker._fields}
        known["keypoint_noise"] = {
            label: tuple(noise) for label, noise in known.get("keypoint_noise", {}).items()
        }
        return KeypointWorker(**known)

    return KeypointModel(
        workers={w: worker(values) for w, values in params.items()},
        crowd=worker(crowd["crowd"]),
        objects=float(crowd["objects"]),
        labels=dict(crowd.get("keypoints", {})),
    )


def _mask_model(crowd: Mapping[str, Any], params: Mapping[int, Mapping[str, Any]]) -> Any:
    from qa.consensus.masks import MaskModel, MaskWorker

    def worker(values: Mapping[str, Any]) -> MaskWorker:
        return MaskWorker(**{k: v for k, v in values.items() if k in MaskWorker._fields})

    return MaskModel(
        workers={w: worker(values) for w, values in params.items()},
        crowd=worker(crowd["crowd"]),
        objects=float(crowd["objects"]),
        n_labels=int(crowd.get("n_labels") or 2),
        edge_tolerance=float(crowd.get("edge_tolerance") or 0.0),
    )


def _semantic_model(crowd: Mapping[str, Any], params: Mapping[int, Mapping[str, Any]]) -> Any:
    from qa.consensus.masks import SemanticModel, SemanticWorker

    def worker(values: Mapping[str, Any]) -> SemanticWorker:
        return SemanticWorker(**{k: v for k, v in values.items() if k in SemanticWorker._fields})

    return SemanticModel(
        workers={w: worker(values) for w, values in params.items()},
        crowd=worker(crowd["crowd"]),
        n_labels=int(crowd.get("n_labels") or 2),
    )


REBUILD = {
    "box_em": _box_model,
    "polygon_em": _polygon_model,
    "keypoint_em": _keypoint_model,
    "mask_em": _mask_model,
    "mask_semantic_em": _semantic_model,
}


def record(project: Project, result: ProjectFit) -> None:
    """Store the fit: each worker's evidence and parameters, and the project's fit row."""
    from qa import model_scores, services

    services.worker_models_record(
        project=project,
        fits={
            f.worker: (f.answers, f.accuracy, f.params)
            for f in result.workers
            if f.worker != model_scores.MODEL_VOTER
        },
    )
    for f in result.workers:
        if f.worker == model_scores.MODEL_VOTER:  # the model: a member, never a worker
            model_scores.fit_record(
                project, answers=f.answers, accuracy=f.accuracy, params=f.params
            )
    WorkerModelFit.objects.update_or_create(
        project=project,
        defaults={
            "method": result.method,
            "answers": result.answers,
            "workers": len(result.workers),
            "crowd": result.crowd,
            "fitted_at": timezone.now(),
        },
    )


def refit(*, project_id: int) -> ProjectFit | None:
    """Fit the project's model on its answers now and store it (the refit job)."""
    from qa.merge import counted_answers, model_rows

    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    answers = counted_answers(project)
    # The voting model is a member of the crowd here too, as in a consensus run.
    extra, _ = model_rows(project, answers)
    answers = sorted([*answers, *extra], key=lambda row: (row[1], row[3] < 0))
    result = fit(project, answers)
    if result is not None:
        record(project, result)
    return result


def refits_request() -> int:
    """Ask for a refit of every project whose counted answers grew by ``REFIT_GROWTH`` since
    its last fit (or last request), at most once per growth step: the request is recorded by a
    conditional UPDATE, so two sweeps send one job. Part of the periodic sweep."""
    from crowd.jobs import send_on_commit
    from qa.jobs import worker_model_refit

    if not cache.add(REFIT_CHECKED, 1, timeout=REFIT_CHECK_SECONDS):
        return 0
    # The tasks' counters of answers that count: one row a task, not one an answer.
    counted = (
        Task.objects.filter(is_gold=False, answers__gt=0)
        .values("project_id")
        .annotate(n=Sum("answers"))
        .filter(n__gte=REFIT_MIN_ANSWERS)
        .values_list("project_id", "n")
    )
    sent = 0
    for project_id, n in counted:
        fit_row, _ = WorkerModelFit.objects.get_or_create(project_id=project_id)
        last = max(fit_row.answers, fit_row.requested_answers)
        if n < last + max(REFIT_MIN_ANSWERS, REFIT_GROWTH * last):
            continue
        claimed = WorkerModelFit.objects.filter(
            Q(pk=fit_row.pk),
            Q(requested_answers=fit_row.requested_answers),
        ).update(requested_answers=n, requested_at=timezone.now())
        if claimed:
            send_on_commit(worker_model_refit, project_id)
            sent += 1
    return sent
