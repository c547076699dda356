"""Auto-accept: the model alone labels an image when its confidence passes a threshold
calibrated on human-checked images to reach the project's target accuracy with a stated
confidence; a spot-checked share of those images still goes to people.

**Confidence of an image** (:func:`image_confidence`), from the current model version's
prediction, each object's ``score`` (the prediction's own score for an object without one):

- classification: the top class's score; the model's answer is that class;
- shapes: how sure the model is of its least certain decision: every object scoring at least
  the project's ``min_score`` is a "yes, it is there" held with its score, every object below
  it a "no" held with 1 - score, and the image is as confident as the weakest of them (an
  image without objects: the prediction's score, else 1). The answer is the model's answer as
  it is scored on gold (``model_scores.model_answer``).

An image without a usable score has no confidence and is never auto-accepted.

**Calibration** (:func:`calibrate`): over the images people checked and the current version
predicted: gold images (against the gold answer) and images of the latest consensus run with
at least one human answer, not low-confidence, as people gave them: the model votes in
consensus, so for classification the people's weighted vote alone, and for shapes only
results of which no object rests on the model (it and at most one person). The model's
answer is right when ``answer_compare`` (the function a worker's gold answers are scored
by) scores it at least the project's ``gold_pass_score`` against the human result. The
threshold is chosen by ``auto_accept_core.choose_threshold``.

**Spot-checks**: a share ``spot_check_rate`` of the images is drawn (a keyed hash of project
and image, as the pre-label hold-out's: fixed, unpredictable without ``SECRET_KEY``, and
blind to gold) to go to people even when they pass; their human results join the calibration
like any other, and are reported on their own. If they put the accuracy of what passes
confidently below the target (its upper bound under it), auto-accept stops and says so.

**Applying** (:func:`auto_accept_run`, the ``auto_accept_run`` job): each passing image not
drawn for a spot-check, whose tasks are all open, not gold, without an answer or a lease, is
completed by ``tasks.routing.image_auto_accept`` (conditional updates that lose to a claim
and leave the image to people). Gold images never: gold is the yardstick.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.utils.crypto import salted_hmac

from qa import auto_accept_core as core
from qa.model_scores import current_version, min_score, model_answer
from qa.models import AutoAcceptState, ConsensusResult, GoldAnswer
from tasks import prelabel_core, routing
from tasks.models import Image, ImageStatus, Kind, Prediction, Project, Task, TaskState
from tasks.routing import image_auto_accept
from tasks.services import AUTO_ACCEPT_DEFAULTS

logger = logging.getLogger(__name__)

# The consensus method of an image the model labelled alone (``ConsensusResult.method``).
METHOD = "auto_accept"
SPOT_CHECK_SALT = "qa.auto_accept.spot_check"
READ_CHUNK = 500


def settings_of(project: Project) -> dict[str, Any] | None:
    """The project's auto-accept settings with defaults filled in (None: off)."""
    if project.auto_accept is None:
        return None
    return {**AUTO_ACCEPT_DEFAULTS, **project.auto_accept}


@cache
def _spot_check_key() -> bytes:
    return salted_hmac(SPOT_CHECK_SALT, "key").digest()


def spot_check_value(project_id: int, image_id: int) -> float:
    return prelabel_core.holdout_value(_spot_check_key(), project_id, image_id)


def spot_checked(project: Project, image_id: int, rate: float) -> bool:
    """Whether the image is drawn to go to people even when the model's confidence passes."""
    return spot_check_value(project.pk, image_id) < rate


def _score(item: dict[str, Any], image_score: float | None) -> float | None:
    value = item.get("score")
    if value is None:
        return image_score
    return float(value)


def image_confidence(
    project: Project, items: Sequence[dict[str, Any]], image_score: float | None
) -> tuple[float | None, list[dict[str, Any]]]:
    """The model's confidence in its answer to an image, and that answer (see the module)."""
    if project.kind == Kind.CLASSIFICATION:
        scored = [(_score(item, image_score), item) for item in items]
        if not scored or any(s is None for s, _ in scored):
            return None, []
        top_score, top = max(scored, key=lambda pair: float(pair[0] or 0.0))
        return float(top_score or 0.0), [{"label": top["label"]}]
    cut = min_score(project)
    certainty: list[float] = []
    for item in items:
        s = _score(item, image_score)
        if s is None:
            return None, []
        certainty.append(s if s >= cut else 1.0 - s)
    if not certainty:
        certainty = [1.0 if image_score is None else float(image_score)]
    # Objects without a score of their own were judged by the image's score above.
    filled = [{**item, "score": _score(item, image_score)} for item in items]
    return min(certainty), model_answer(project, filled)


def _reference(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k not in ("score", "num_votes")} for item in items]


def _people_result(
    project: Project, annotations: list[dict[str, Any]], contributors: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """An image's result as people gave it: the model votes in consensus, and a result it
    decided is no check of it. Classification: the people's weighted vote alone; shapes: the
    result, unless some object of it rests on the model (it and at most one person)."""
    model = contributors.get("model")
    if not model:
        return _reference(annotations)
    if project.kind == Kind.CLASSIFICATION:
        votes: dict[str, float] = {}
        for answer in contributors.get("answers") or []:
            votes[answer["label"]] = votes.get(answer["label"], 0.0) + float(answer["weight"])
        if not votes:
            return None
        return [{"label": max(sorted(votes), key=lambda label: votes[label])}]
    if model.get("rests_on_model"):
        return None
    return _reference(annotations)


def _human_results(
    project: Project,
) -> tuple[dict[int, list[dict[str, Any]]], set[int], int | None]:
    """Per human-checked image its human result, the gold images among them, and the
    consensus run read."""
    from qa.merge import latest_run

    references: dict[int, list[dict[str, Any]]] = {}
    run = latest_run(project)
    if run is not None:
        rows = (
            ConsensusResult.objects.filter(run=run, votes__gte=1, low_confidence=False)
            .exclude(method__in=["gold", METHOD])
            .values_list("image_id", "annotations", "contributors")
        )
        for image_id, annotations, contributors in rows.iterator(chunk_size=READ_CHUNK):
            found = _people_result(project, annotations or [], contributors or {})
            if found is not None:
                references[image_id] = found
    gold = dict(GoldAnswer.objects.filter(project=project).values_list("image_id", "annotations"))
    references.update({image_id: _reference(items) for image_id, items in gold.items()})
    return references, set(gold), run.pk if run is not None else None


def calibrate(project: Project) -> AutoAcceptState:
    """Choose the threshold from the human-checked images and store it (see the module)."""
    from qa.services import answer_compare

    config = settings_of(project)
    version = current_version(project)
    figures: dict[str, Any] = {"settings": config}
    threshold: float | None = None
    reason = ""
    if config is None:
        reason = "auto-accept is off for this project"
    elif version is None:
        reason = "the project has no predictions"
    else:
        references, gold, run_id = _human_results(project)
        figures["consensus_run"] = run_id
        confidences: list[float] = []
        correct: list[bool] = []
        spot: list[tuple[float, bool]] = []
        ids = sorted(references)
        for start in range(0, len(ids), READ_CHUNK):
            rows = Prediction.objects.filter(
                project=project, model_version=version, image_id__in=ids[start : start + READ_CHUNK]
            ).values_list("image_id", "annotations", "score", "image__width", "image__height")
            for image_id, items, image_score, width, height in rows:
                conf, answer = image_confidence(project, items or [], image_score)
                if conf is None:
                    continue
                result = answer_compare(
                    project=project, reference=references[image_id], answer=answer,
                    width=width, height=height,
                )  # fmt: skip
                right = result.score >= project.gold_pass_score
                confidences.append(conf)
                correct.append(right)
                if image_id not in gold and spot_checked(
                    project, image_id, float(config["spot_check_rate"])
                ):
                    spot.append((conf, right))
        chosen = core.choose_threshold(
            confidences, correct,
            target=float(config["target_accuracy"]), confidence=float(config["confidence"]),
            min_checked=int(config["min_checked"]),
        )  # fmt: skip
        threshold, reason = chosen.threshold, chosen.reason
        figures.update(
            images=len(confidences),
            images_right=sum(correct),
            gold_images=len(gold & set(ids)),
            checked=chosen.checked,
            correct=chosen.correct,
            accuracy=None if chosen.accuracy is None else round(chosen.accuracy, 4),
            lower_bound=round(chosen.lower_bound, 4),
        )
        # Spot-checks: the drawn images at or above the threshold that people answered.
        cut = threshold if threshold is not None else float("inf")
        above = [right for conf, right in spot if conf >= cut]
        n, k = len(above), sum(above)
        upper = core.upper_bound(k, n, float(config["confidence"]))
        figures["spot_checks"] = {
            "checked": n,
            "correct": k,
            "accuracy": round(k / n, 4) if n else None,
            "lower_bound": round(core.lower_bound(k, n, float(config["confidence"])), 4),
            "upper_bound": round(upper, 4),
        }
        target = float(config["target_accuracy"])
        if threshold is not None and n and upper < target:
            reason = (
                f"stopped: spot-checks found {k} of {n} auto-acceptable images right, an "
                f"accuracy confidently below the target of {target:.1%} (upper bound "
                f"{upper:.1%})"
            )
            figures["stopped_threshold"] = threshold
            threshold = None
    state, _ = AutoAcceptState.objects.update_or_create(
        project=project,
        defaults={
            "model_version": version or "",
            "threshold": threshold,
            "reason": reason[:500],
            "figures": figures,
        },
    )
    return state


def _candidates(project: Project, version: str) -> Any:
    """Images whose every task is open, not gold, unanswered and unleased, with a prediction
    of the version, and no gold answer; none a manager sent back to the crowd."""
    blocking = Task.objects.filter(image=OuterRef("pk")).filter(
        Q(is_gold=True)
        | ~Q(state=TaskState.OPEN)
        | Q(answers__gt=0)
        | Q(open_leases__gt=0)
        | Q(people_only=True)
    )
    return (
        Image.objects.filter(project=project, status=ImageStatus.READY)
        .filter(Exists(Task.objects.filter(image=OuterRef("pk"))))
        .filter(Exists(Prediction.objects.filter(image=OuterRef("pk"), model_version=version)))
        .exclude(Exists(blocking))
        .exclude(Exists(GoldAnswer.objects.filter(image=OuterRef("pk"))))
        .order_by("pk")
    )


def auto_accept_run(*, project_id: int) -> dict[str, Any]:
    """Calibrate, then complete the tasks of every passing image that is not spot-checked.
    Safe to run twice, even at once: each image is completed by a conditional update."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return {"accepted": 0}
    state = calibrate(project)
    config = settings_of(project)
    if config is None or state.threshold is None or not state.model_version:
        return {"accepted": 0, "reason": state.reason}
    rate = float(config["spot_check_rate"])
    accepted = spot = 0
    ids = list(_candidates(project, state.model_version).values_list("pk", flat=True))
    for start in range(0, len(ids), READ_CHUNK):
        rows = Prediction.objects.filter(
            project=project,
            model_version=state.model_version,
            image_id__in=ids[start : start + READ_CHUNK],
        ).values_list("image_id", "annotations", "score")
        for image_id, items, image_score in rows:
            conf, _ = image_confidence(project, items or [], image_score)
            if conf is None or conf < state.threshold:
                continue
            if spot_checked(project, image_id, rate):
                spot += 1
                continue
            accepted += int(
                image_auto_accept(
                    project=project,
                    image_id=image_id,
                    model_version=state.model_version,
                    confidence=conf,
                )
            )
    if accepted:
        logger.info("auto-accepted %s images of project %s", accepted, project_id)
    return {"accepted": accepted, "spot_checked": spot}


def auto_accepted_reopen(*, project: Project, image_ids: list[int] | None) -> dict[str, int]:
    """Send images the model labelled alone back to the crowd (``None``: all of them): the
    images reopened and those the model still labels. ``routing.NotAutoAccepted`` (a 400)
    naming the images the model did not label alone in the project, and nothing reopened."""
    reopened = routing.auto_accepted_reopen(project=project, image_ids=image_ids)
    return {"reopened": reopened, "images_auto_accepted": _images_auto_accepted(project)}


def _images_auto_accepted(project: Project) -> int:
    return routing.auto_accepted_tasks(project).values("image_id").distinct().count()


def auto_accept_request(project_id: int) -> None:
    """Queue the job after commit (nothing while the project's auto-accept is off)."""
    from crowd.jobs import send_on_commit
    from qa.jobs import auto_accept_run as job

    if Project.objects.filter(pk=project_id, auto_accept__isnull=False).exists():
        send_on_commit(job, project_id)


def auto_accepted_results(project: Project) -> list[ConsensusResult]:
    """The consensus results of the images the model labelled alone: its answer with each
    object's score (classification: the class with the confidence), no votes."""
    # An image made gold since ships its gold answer instead.
    tasks = (
        Task.objects.filter(project=project, is_gold=False)
        .exclude(auto_accepted_version="")
        .exclude(image_id__in=GoldAnswer.objects.filter(project=project).values("image_id"))
        .values_list("image_id", "auto_accepted_version", "confidence")
    )
    by_image: dict[int, tuple[str, float | None]] = {}
    for image_id, version, confidence in tasks:
        by_image[image_id] = (version, confidence)
    state = AutoAcceptState.objects.filter(project=project).first()
    out: list[ConsensusResult] = []
    ids = sorted(by_image)
    for start in range(0, len(ids), READ_CHUNK):
        chunk = ids[start : start + READ_CHUNK]
        predictions = Prediction.objects.filter(project=project, image_id__in=chunk)
        found = {
            (p.image_id, p.model_version): p
            for p in predictions.only("image_id", "model_version", "annotations", "score")
        }
        for image_id in chunk:
            version, confidence = by_image[image_id]
            prediction = found.get((image_id, version))
            if prediction is None:
                continue  # its prediction was removed since: nothing to ship
            conf, answer = image_confidence(project, prediction.annotations or [], prediction.score)
            if project.kind == Kind.CLASSIFICATION:
                items = [{**answer[0], "score": conf, "num_votes": 0}] if answer else []
            else:
                cut = min_score(project)
                items = [
                    {**item, "score": s, "num_votes": 0}
                    for item in prediction.annotations or []
                    if (s := _score(item, prediction.score)) is not None and s >= cut
                ]
            out.append(
                ConsensusResult(
                    project=project,
                    image_id=image_id,
                    method=METHOD,
                    confidence=confidence if confidence is not None else conf,
                    votes=0,
                    annotations=items,
                    low_confidence=False,
                    contributors={
                        "auto_accepted": {
                            "model_version": version,
                            "threshold": state.threshold if state else None,
                        }
                    },
                )
            )
    return out


def project_auto_accept(project: Project) -> dict[str, Any]:
    """What managers see: the setting, the calibration as last computed, and the images the
    model labelled alone."""
    state = AutoAcceptState.objects.filter(project=project).first()
    accepted = _images_auto_accepted(project)
    figures = state.figures if state else {}
    return {
        "settings": settings_of(project),
        "enabled": bool(state and state.threshold is not None and project.auto_accept),
        "model_version": (state.model_version or None) if state else None,
        "threshold": state.threshold if state else None,
        "reason": (state.reason or None) if state else "not computed yet",
        "images_checked": figures.get("images", 0),
        "checked": figures.get("checked", 0),
        "correct": figures.get("correct", 0),
        "accuracy": figures.get("accuracy"),
        "lower_bound": figures.get("lower_bound"),
        "gold_images": figures.get("gold_images", 0),
        "consensus_run": figures.get("consensus_run"),
        "spot_checks": figures.get("spot_checks"),
        "images_auto_accepted": accepted,
        "computed_at": state.computed_at.isoformat() if state else None,
    }
