"""The manager's part of a run: reviews (suspended workers' answers rejected, the rest
approved, which moves money) and a fresh consensus run, through the services the manager's
API calls, in this process whichever way the workers go."""

from __future__ import annotations

import zlib
from typing import Any

from django.db import transaction

from crowd.models import User
from frontend.sim.errors import SimError
from frontend.sim.truth import Truth
from payouts.services import reviews_bulk
from qa import merge
from qa import services as qa_services
from qa.models import ConsensusRun
from qa.sim.model import model_parse
from qa.sim.scenes import labels_json
from tasks.models import Assignment, AssignmentStatus, Image, Project
from tasks.predictions import predictions_import

SUSPENDED_REASON = "Suspended for low accuracy on check tasks; these answers are not paid."


def _submitted(project: Project) -> list[tuple[int, int]]:
    return list(
        Assignment.objects.filter(project=project, status=AssignmentStatus.SUBMITTED)
        .order_by("pk")
        .values_list("pk", "worker_id")
    )


def reviews_suspended(*, project: Project, by: User) -> int:
    """The manager rejects the submitted answers of suspended workers; returns how many."""
    # The simulator plays the manager too, through the review service the review API calls.
    suspended = qa_services.suspended_workers(project_id=project.pk)
    ids = [pk for pk, worker in _submitted(project) if worker in suspended]
    if not ids:
        return 0
    result = reviews_bulk(
        project=project, by=by, approve=False, reason=SUSPENDED_REASON, assignment_ids=ids
    )
    return len(result["done"])


def reviews_finish(*, project: Project, manager: User) -> dict[str, int]:
    """The manager reviews every submitted answer: suspended workers' are rejected, the rest
    approved, which credits their rewards (and any automatic bonus) to the ledger. Counts
    the rejections made while the crowd worked too."""
    suspended = qa_services.suspended_workers(project_id=project.pk)
    submitted = _submitted(project)
    approved = reviews_bulk(
        project=project, by=manager, approve=True, reason="",
        assignment_ids=[pk for pk, worker in submitted if worker not in suspended],
    )  # fmt: skip
    rejected = reviews_bulk(
        project=project, by=manager, approve=False, reason=SUSPENDED_REASON,
        assignment_ids=[pk for pk, worker in submitted if worker in suspended],
    )  # fmt: skip
    return {
        "approved": len(approved["done"]),
        "rejected": Assignment.objects.filter(
            project=project, status=AssignmentStatus.REJECTED, reviewed_by=manager
        ).count(),
        "refused": len(approved["refused"]) + len(rejected["refused"]),
    }


def consensus_fresh(*, project: Project, user: User | None) -> ConsensusRun:
    """A consensus run requested as ``POST /projects/{id}/consensus/`` does, computed here
    before its job starts (the job then finds it done), so the results are there on return."""
    with transaction.atomic():
        run = merge.consensus_run_request(project=project, user=user)
        done = merge.consensus_compute(run_id=run.pk)
    assert done is not None
    return done


def model_predictions(*, project: Project, truth: Truth, spec: str, seed: int) -> tuple[str, int]:
    """The manager imports a simulated model's predictions of every image (gold included: it
    is scored there like a worker) through the service the predictions API calls. Returns the
    model version and how many images it predicted: items of the project's kind."""
    try:
        model = model_parse(spec, seed=seed, labels=[label["name"] for label in labels_json()])
    except ValueError as exc:
        raise SimError(f"--model: {exc}") from None
    images = Image.objects.filter(project=project).values_list("pk", "name", "width", "height")
    version = f"sim-model-{seed}-{zlib.crc32(spec.encode()):08x}"
    predictions = [
        {
            "image": pk,
            "annotations": model.predict(
                name, truth.images.get(name, []), width, height, kind=project.kind
            ),
        }
        for pk, name, width, height in images
    ]
    predictions_import(project=project, data={"model_version": version, "predictions": predictions})
    return version, len(predictions)


def model_text(project: Project, tally: dict[str, Any] | None) -> str:
    """The simulated model's standing after the run: its gold score and calibration, and
    what the consensus owes it."""
    from qa import model_scores

    found = model_scores.project_models(project)["versions"]
    if not found:
        return "Model: no predictions."
    v = found[0]
    cal = v["calibration"]
    line = (
        f"Model {v['model_version']}: gold score {v['gold_score']} on {v['gold_seen']} gold "
        f"images (recall {v['gold']['recall']}, precision {v['gold']['precision']}), weight "
        f"{v['weight']}, calibration error {cal['ece']} (mean score {cal['mean_score']} against "
        f"accuracy {cal['accuracy']}); "
        + ("votes in consensus" if v["votes"] else f"does not vote: {v['not_voting_reason']}")
    )
    if tally:
        line += (
            f"; of {tally['labels']} labels it agreed with {tally['agreed']}, "
            f"{tally['rests_on_model']} rest on it"
        )
    return line + "\n"


def prelabel_effect_text(effect: dict[str, Any]) -> str:
    """The dashboard's comparison of answers with and without pre-labels, as one line."""
    overall = effect["overall"]
    w, o = overall["with_prelabels"], overall["without_prelabels"]
    gold = overall["gold_score_difference"]
    times = overall["median_seconds_difference"]
    line = (
        f"Pre-labels ({round(effect['prelabel_holdout'] * 100)}% of tasks held out): mean gold "
        f"score {w['gold_score_mean']} with ({w['gold_answers']} gold answers), "
        f"{o['gold_score_mean']} without ({o['gold_answers']})"
    )
    if gold is not None:
        line += f"; difference {gold['estimate']} {gold['ci95']}, p {gold['p_value']}"
    if times is not None:
        line += f"; median time {times['estimate']} s {times['ci95']}"
    line += f"; kept unchanged: {effect['outcomes']['kept_share']}"
    flag = overall["gold_score_flag"]
    if flag == "lower_with_prelabels":
        line += "; FLAGGED: the crowd follows the model's mistakes"
    elif flag == "higher_with_prelabels":
        line += "; gold scores are higher with pre-labels"
    return line + "\n"
