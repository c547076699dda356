"""The model as a member of the crowd: each model version is scored on gold like a worker, and
the project's current version votes in consensus with the weight it earned.

A model version's *answer* to an image is its prediction's objects scoring at least the
project's ``ml_backend_min_score`` (``DEFAULT_MIN_SCORE`` when unset), as a worker's answer
has them (scores dropped; box consensus keeps them, reading a box's score as evidence, its
prior the gold's real and spurious boxes per score bin, ``details["score_bins"]``). On each
gold image it has a prediction of, that answer is scored
against the gold answer by the very function that scores a worker's gold answer
(``qa.services.answer_compare``: same matching, thresholds and score per kind), and the sums
feed the same Beta posterior (``qa.reliability``). The calibration of its scores is measured on
every predicted object of those images, whatever its score: correct when it is matched to a
gold object of its label at the project's IoU threshold (OKS for keypoints; the gold label for
classification), against its score (``qa.calibration``).

In consensus the model is one more voter, :data:`MODEL_VOTER`, never a user: it has no
``WorkerScore``, no assignment and no pay, and is left out of every list of workers and of
the agreement evidence. Only the project's current version votes (the version of its newest
prediction: two versions of one model are not two independent opinions), and only once it has
answered ``PROBATION_GOLD`` gold images without being confidently below
``max(min_worker_score, MODEL_MIN_ACCURACY)`` on them: a model no gold has judged, or one gold
judges poor, changes nothing. Its weight is a worker's (``vote_weight``) from its gold
evidence and, once the project's worker model has been fitted with it, from what that fit
learnt of it, exactly as a worker's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Max

from qa.calibration import calibration
from qa.consensus.box_em import GoldRates, gold_score_counts
from qa.geometry import match_annotations
from qa.models import GoldAnswer, ModelScore
from qa.regions import restrict
from qa.reliability import (
    PROBATION_GOLD,
    Evidence,
    probability_below,
    reliability,
    vote_weight,
)
from qa.scoring import GoldScore
from tasks.models import Image, Kind, Prediction, Project

# The pseudo-worker id the current model version votes under in consensus (user ids are
# positive: it can never be a person's).
MODEL_VOTER = -1
# What a stored score was computed by: a row of an earlier computation (before the gold's
# box score bins were counted) is computed again when next read.
COMPUTED = "c2"
# The object score a model's answer is cut at when the project sets no ``ml_backend_min_score``.
DEFAULT_MIN_SCORE = 0.5
# A model votes only while gold does not put it confidently below this accuracy (or the
# project's minimum worker score, if higher): a model answers every image at once, so a poor
# one would sway every task rather than a worker's few.
MODEL_MIN_ACCURACY = 0.5
SUSPEND_CONFIDENCE = 0.9


def min_score(project: Project) -> float:
    value = project.ml_backend_min_score
    return DEFAULT_MIN_SCORE if value is None else float(value)


def model_answer(
    project: Project, items: Sequence[dict[str, Any]], *, scores: bool = False
) -> list[dict[str, Any]]:
    """A prediction's objects as the model's answer: those scoring at least the project's
    minimum (an object without a score is the model's plain claim and kept), without scores
    unless ``scores`` (box consensus reads a box's score as evidence, ``qa.consensus.box_em``)."""
    cut = min_score(project)
    return [
        item if scores else {k: v for k, v in item.items() if k != "score"}
        for item in items
        if item.get("score") is None or float(item["score"]) >= cut
    ]


def current_version(project: Project) -> str | None:
    """The version of the project's newest prediction: the one that votes."""
    row = (
        Prediction.objects.filter(project=project)
        .order_by("-pk")
        .values_list("model_version", flat=True)
        .first()
    )
    return row


def versions(project: Project) -> list[str]:
    """Every model version with predictions in the project, newest first."""
    rows = (
        Prediction.objects.filter(project=project)
        .values("model_version")
        .annotate(last=Max("pk"))
        .order_by("-last")
        .values_list("model_version", flat=True)
    )
    return list(rows)


def _fingerprint(project: Project, version: str) -> str:
    gold = GoldAnswer.objects.filter(project=project).aggregate(n=Count("pk"), t=Max("updated_at"))
    gold_images = GoldAnswer.objects.filter(project=project).values("image_id")
    predicted = Prediction.objects.filter(
        project=project, model_version=version, image_id__in=gold_images
    ).aggregate(n=Count("pk"), last=Max("pk"))
    stamp = gold["t"].isoformat() if gold["t"] else ""
    return (
        f"{COMPUTED}:g{gold['n']}:{stamp}:p{predicted['n']}:{predicted['last']}:"
        f"s{min_score(project)}:i{project.iou_threshold}:{project.gold_pass_score}"
    )[:200]


def _object_outcomes(
    project: Project, image: Image, gold: list[dict[str, Any]], items: list[dict[str, Any]]
) -> tuple[list[float], list[bool]]:
    """Each scored predicted object's score, and whether it is right on this gold image."""
    scored = [
        (k, float(item["score"])) for k, item in enumerate(items) if item.get("score") is not None
    ]
    if not scored:
        return [], []
    if project.kind == Kind.CLASSIFICATION:
        labels = {item["label"] for item in gold}
        return [s for _, s in scored], [items[k]["label"] in labels for k, _ in scored]
    from qa.services import project_sigmas

    found = match_annotations(
        gold,
        [{k: v for k, v in item.items() if k != "score"} for item in items],
        kind=project.kind,
        threshold=project.iou_threshold,
        width=image.width,
        height=image.height,
        sigmas=project_sigmas(project) if project.kind == Kind.KEYPOINTS else None,
    )
    right = {m.cand for m in found.matches}
    return [s for _, s in scored], [k in right for k, _ in scored]


def _box_outcomes(
    project: Project, gold: list[dict[str, Any]], answer: list[dict[str, Any]]
) -> tuple[list[float], list[bool]]:
    """Each scored box of the model's answer to a gold image: its score, and whether it is a
    real object (matched to a gold box at the IoU threshold, whatever the labels)."""
    scored = [k for k, item in enumerate(answer) if item.get("score") is not None]
    if not scored:
        return [], []
    found = match_annotations(
        gold,
        [{k: v for k, v in item.items() if k != "score"} for item in answer],
        kind=Kind.BBOX,
        threshold=project.iou_threshold,
    )
    strays = set(found.extras)
    return [float(answer[k]["score"]) for k in scored], [k not in strays for k in scored]


def _compute(project: Project, version: str) -> dict[str, Any]:
    from qa.services import answer_compare

    gold_of = {
        g.image_id: g.annotations
        for g in GoldAnswer.objects.filter(project=project).select_related("image")
    }
    predictions = Prediction.objects.filter(
        project=project, model_version=version, image_id__in=list(gold_of)
    ).select_related("image")
    seen = passed = 0
    score_sum = 0.0
    counts = {"matched": 0, "missed": 0, "extra": 0, "wrong_label": 0}
    scores: list[float] = []
    correct: list[bool] = []
    # Boxes: the answer's scored boxes, each with whether it was a real object (matched at
    # the IoU threshold, whatever its label): the prior of what a box's score says in
    # consensus (``GoldRates.scores``).
    box_scores: list[float] = []
    box_real: list[bool] = []
    for prediction in predictions.order_by("image_id"):
        image = prediction.image
        gold = gold_of[image.pk]
        items = list(prediction.annotations or [])
        answer = model_answer(project, items, scores=True)
        result: GoldScore = answer_compare(
            project=project,
            reference=gold,
            answer=[{k: v for k, v in item.items() if k != "score"} for item in answer],
            width=image.width,
            height=image.height,
        )
        if project.kind == Kind.BBOX:
            box_s, box_r = _box_outcomes(project, gold, answer)
            box_scores += box_s
            box_real += box_r
        seen += 1
        passed += int(result.score >= project.gold_pass_score)
        score_sum += result.score
        for key in counts:
            counts[key] += int(getattr(result, key))
        s, c = _object_outcomes(project, image, gold, items)
        scores += s
        correct += c
    found = counts["matched"] + counts["wrong_label"]
    gold_objects = found + counts["missed"]
    answered = found + counts["extra"]
    details: dict[str, Any] = {
        **counts,
        "min_score": min_score(project),
        "recall": round(counts["matched"] / gold_objects, 4) if gold_objects else None,
        "precision": round(counts["matched"] / answered, 4) if answered else None,
    }
    if box_scores:
        real, spurious = gold_score_counts(box_scores, box_real)
        details["score_bins"] = {"real": list(real), "spurious": list(spurious)}
    return {
        "gold_seen": seen,
        "gold_passed": passed,
        "gold_score_sum": score_sum,
        "details": details,
        "calibration": calibration(scores, correct).json(),
    }


def model_score(project: Project, version: str) -> ModelScore:
    """The version's standing, recomputed when its predictions of gold images, the gold or
    the project's thresholds changed since it was last computed."""
    fingerprint = _fingerprint(project, version)
    row = ModelScore.objects.filter(project=project, model_version=version).first()
    if row is not None and row.fingerprint == fingerprint:
        return row
    values = _compute(project, version)
    if row is None:
        try:
            with transaction.atomic():
                return ModelScore.objects.create(
                    project=project, model_version=version, fingerprint=fingerprint, **values
                )
        except IntegrityError:  # computed by a concurrent reader
            row = ModelScore.objects.get(project=project, model_version=version)
    ModelScore.objects.filter(pk=row.pk).update(fingerprint=fingerprint, **values)
    row.refresh_from_db()
    return row


def evidence(row: ModelScore) -> Evidence:
    return Evidence(
        gold_seen=row.gold_seen,
        gold_score_sum=row.gold_score_sum,
        model_seen=row.model_seen,
        model_sum=row.model_sum,
    )


def gold_evidence(row: ModelScore) -> Evidence:
    return Evidence(gold_seen=row.gold_seen, gold_score_sum=row.gold_score_sum)


def minimum_accuracy(project: Project) -> float:
    return max(project.min_worker_score, MODEL_MIN_ACCURACY)


def votes(project: Project, row: ModelScore) -> tuple[bool, str]:
    """Whether the version may vote, and why not: it must have answered enough gold, and gold
    must not put it confidently below the minimum accuracy (judged on gold alone, as a
    worker's suspension is)."""
    if row.gold_seen < PROBATION_GOLD:
        return False, (f"answered {row.gold_seen} gold images; it votes from {PROBATION_GOLD} on")
    minimum = minimum_accuracy(project)
    if probability_below(gold_evidence(row), minimum) >= SUSPEND_CONFIDENCE:
        return False, (
            f"its gold accuracy of {round(100 * reliability(gold_evidence(row)))}% is "
            f"confidently below the minimum of {round(100 * minimum)}%"
        )
    return True, ""


@dataclass(frozen=True)
class ModelVoter:
    """The project's current model version as a voter: its weight and its predictions'
    objects per image (the model's answers, cut at the minimum score)."""

    version: str
    weight: float
    answers: dict[int, list[dict[str, Any]]]

    def answer(
        self, project: Project, image_id: int, region: Sequence[int], image_size: Sequence[int]
    ) -> list[dict[str, Any]] | None:
        """The model's answer to a task (a tile: its objects seen through the region), or
        None when it has no prediction of the image."""
        items = self.answers.get(image_id)
        if items is None:
            return None
        if project.kind in (Kind.CLASSIFICATION, Kind.MASK):
            return items
        return restrict(project.kind, [], items, region, image_size=image_size)[1]


def model_voter(project: Project, image_ids: Sequence[int]) -> ModelVoter | None:
    """The voter for these images, or None when the project has no model that may vote."""
    version = current_version(project)
    if version is None:
        return None
    row = model_score(project, version)
    allowed, _ = votes(project, row)
    if not allowed:
        return None
    rows = Prediction.objects.filter(
        project=project, model_version=version, image_id__in=list(image_ids)
    ).values_list("image_id", "annotations")
    scored = project.kind == Kind.BBOX
    answers = {image: model_answer(project, items or [], scores=scored) for image, items in rows}
    return ModelVoter(version, vote_weight(evidence(row)), answers)


def model_json(project: Project, row: ModelScore, *, current: str | None) -> dict[str, Any]:
    allowed, reason = votes(project, row)
    is_current = row.model_version == current
    return {
        "model_version": row.model_version,
        "current": is_current,
        "votes": allowed and is_current,
        "not_voting_reason": (
            "an earlier version: only the newest votes" if not is_current else reason or None
        ),
        "gold_seen": row.gold_seen,
        "gold_passed": row.gold_passed,
        "gold_score": round(row.gold_score_sum / row.gold_seen, 4) if row.gold_seen else None,
        "score": round(reliability(evidence(row)), 4),
        "weight": round(vote_weight(evidence(row)), 4),
        "gold": row.details,
        "calibration": row.calibration,
        "model": _fit_json(project, row),
        "computed_at": row.computed_at.isoformat(),
    }


def _fit_json(project: Project, row: ModelScore) -> dict[str, Any] | None:
    from qa.selectors import _model_fit, _model_json

    return _model_json(row, _model_fit(project))


def project_models(project: Project) -> dict[str, Any]:
    """Every model version of the project with its gold score and calibration (managers)."""
    current = current_version(project)
    return {
        "current_version": current,
        "min_score": min_score(project),
        "minimum_accuracy": minimum_accuracy(project),
        "versions": [
            model_json(project, model_score(project, version), current=current)
            for version in versions(project)
        ],
    }


def current_weight(project: Project) -> float:
    """The current version's weight in consensus (a worker's newcomer weight before any)."""
    version = current_version(project)
    if version is None:
        return vote_weight(Evidence())
    return vote_weight(evidence(model_score(project, version)))


def current_row(project: Project) -> ModelScore | None:
    version = current_version(project)
    return None if version is None else model_score(project, version)


def fit_record(project: Project, *, answers: int, accuracy: float, params: dict[str, Any]) -> None:
    """Store what the project's worker model learnt of the current version (the fit counted
    it as one more member of the crowd): it then stands in for agreement in its weight, as
    for a worker."""
    row = current_row(project)
    if row is None:
        return
    ModelScore.objects.filter(pk=row.pk).update(
        model_seen=float(answers), model_sum=float(answers) * accuracy, model_params=params
    )


def gold_rates(project: Project) -> GoldRates | None:
    """The current version's recall, false marks a picture and weight in answers on gold, as
    ``qa.worker_model.gold_priors`` gives a worker's, and its boxes' scores (real and spurious
    boxes per score bin) where it answered box gold."""
    row = current_row(project)
    if row is None or not votes(project, row)[0]:
        return None
    d = row.details
    found = float(d.get("matched", 0)) + float(d.get("wrong_label", 0))
    gold = found + float(d.get("missed", 0))
    if not gold:
        return None
    from qa.worker_model import GOLD_PRIOR_WEIGHT

    bins = d.get("score_bins")
    scores = None
    if isinstance(bins, dict):
        scores = (tuple(map(float, bins["real"])), tuple(map(float, bins["spurious"])))
    return GoldRates(
        found / gold,
        float(d.get("extra", 0)) / row.gold_seen,
        GOLD_PRIOR_WEIGHT * row.gold_seen,
        scores,
    )


def gold_objects(project: Project) -> float | None:
    """Objects a gold image the current version answered holds (found, wrong label or
    missed): the rate of objects a picture the box decision assumes before the project's
    first fit. None when it has answered none."""
    row = current_row(project)
    if row is None or not row.gold_seen:
        return None
    d = row.details
    objects = sum(float(d.get(key, 0)) for key in ("matched", "wrong_label", "missed"))
    return objects / row.gold_seen or None
