"""The manager's part of a run: reviews (suspended workers' answers rejected, the rest
approved, which moves money) and a fresh consensus run, through the services the manager's
API calls, in this process whichever way the workers go."""

from __future__ import annotations

from django.db import transaction

from crowd.models import User
from payouts.services import reviews_bulk
from qa import merge
from qa import services as qa_services
from qa.models import ConsensusRun
from tasks.models import Assignment, AssignmentStatus, Project

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
