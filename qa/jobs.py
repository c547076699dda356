"""Background jobs of quality: thin, take ids, safe to run twice.

Safe to run twice at the same time too (a job redelivered while its first copy still runs):
each service claims its row, and a copy that finds it claimed by a live copy returns without
error, so the broker does not retry it (see ``crowd.claims``).

That leaves a row stranded when its holder dies with no copy of the job left to take over
(the other copy already acknowledged its message, or the broker lost the message with its own
restart), or when the message of a queued row was lost before it started. The periodic sweep
sends such jobs again (:func:`stranded_jobs_resend`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
from django.conf import settings
from django.db.models import DateTimeField, ExpressionWrapper, Model, Q
from django.db.models.functions import Now
from django.utils import timezone
from dramatiq.middleware import CurrentMessage

logger = logging.getLogger(__name__)


@dramatiq.actor(queue_name="consensus", max_retries=3, time_limit=60 * 60 * 1000)
def consensus_compute(run_id: int) -> None:
    from qa import merge

    merge.consensus_compute(run_id=run_id)


@dramatiq.actor(queue_name="exports", max_retries=3, time_limit=4 * 60 * 60 * 1000)
def export_build(export_id: int) -> None:
    from qa.exports import build

    try:
        build.export_build(export_id=export_id)
    except Exception:
        # A failure the broker retries (the file store down for a while, the database
        # restarting) leaves the version queued, with the reason; the last one, failed.
        message = CurrentMessage.get_current_message()
        if message is not None:
            retries = int(message.options.get("retries", 0))
            limit = int(message.options.get("max_retries", export_build.options["max_retries"]))
            if retries < limit:
                build.export_retry_pending(
                    export_id=export_id, attempt=retries + 1, attempts=limit + 1
                )
        raise


@dramatiq.actor(queue_name="consensus", max_retries=3, time_limit=30 * 60 * 1000)
def worker_model_refit(project_id: int) -> None:
    from qa import worker_model

    worker_model.refit(project_id=project_id)


@dramatiq.actor(queue_name="consensus", max_retries=3, time_limit=30 * 60 * 1000)
def auto_accept_run(project_id: int) -> None:
    from qa import auto_accept

    auto_accept.auto_accept_run(project_id=project_id)


# --- Stranded jobs ------------------------------------------------------------------------------

# A row without a live claim this long after it was queued, last started, or sent again is
# taken as one whose message was lost. If the message was only waiting in a busy queue, the
# second does no harm: the claim lets one copy build the row, and the other finds it done.
UNSTARTED_AFTER = timedelta(minutes=10)
# The claim token a row gets when the sweep sends its job again: the prefix and the time, in a
# fixed-width UTC form that sorts as it reads. The lease stays lapsed (or unset), so the job
# claims the row at once; another sweep sees this lapse was dealt with.
RESENT = "resent "
MAX_STRANDED_PER_SWEEP = 100


def lapse_margin() -> timedelta:
    """How long a claim stays lapsed before the sweep takes its holder for dead with no
    other copy coming: a live redelivery (a dead worker's message given back by the broker
    after its heartbeat timeout) takes over within about a lease of the lapse."""
    lease = float(settings.JOB_LEASE_SECONDS)
    heartbeat = settings.JOB_HEARTBEAT_TIMEOUT_MS / 1000
    return timedelta(seconds=2 * max(lease, heartbeat))


def _stamp(at: datetime) -> str:
    return RESENT + at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stranded(now: datetime) -> Q:
    """Rows not done or failed that no live copy of their job holds or is about to start."""
    from qa.models import RunStatus

    lapsed_before = ExpressionWrapper(Now() - lapse_margin(), output_field=DateTimeField())
    quiet_since = now - UNSTARTED_AFTER
    holder_died = Q(lease_expires_at__lt=lapsed_before)
    # Never claimed (its message lost), or freed by a copy stopped without a final state (a
    # time limit) whose retry never came.
    never_finished = Q(lease_expires_at__isnull=True) & (
        Q(started_at__lt=quiet_since) | Q(started_at__isnull=True, created_at__lt=quiet_since)
    )
    resent_lately = Q(claim_token__startswith=RESENT) & Q(claim_token__gte=_stamp(quiet_since))
    return (
        Q(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        & (holder_died | never_finished)
        & ~resent_lately
    )


def stranded_jobs_resend() -> int:
    """Send again the job of every consensus run and dataset export left stranded (see the
    module), once per lapse: the row is stamped by the same conditional UPDATE that finds it
    still stranded, so a live copy that claimed it meanwhile, or another sweep, keeps it.

    Within the job's limits: an export whose build was started ``1 + max_retries`` times, or
    a consensus run older than its job's deliveries could take (``1 + max_retries`` time
    limits; runs keep no count of attempts), is marked failed instead, with a reason a
    manager can act on. Part of the periodic sweep; returns how many jobs were sent."""
    from qa.events import export_changed
    from qa.models import ConsensusRun, DatasetExport, RunStatus

    now = timezone.now()
    stranded = _stranded(now)
    sent = 0
    run_limit = _deliveries(consensus_compute) * timedelta(
        milliseconds=consensus_compute.options["time_limit"]
    )
    for pk, token, created_at in ConsensusRun.objects.filter(stranded).values_list(
        "pk", "claim_token", "created_at"
    )[:MAX_STRANDED_PER_SWEEP]:
        if created_at < now - run_limit:
            _fail(ConsensusRun, pk, token, stranded, now, _run_gave_up(run_limit))
        else:
            sent += _resend(ConsensusRun, pk, token, stranded, now, consensus_compute)
    export_limit = _deliveries(export_build)
    for pk, token, attempts in DatasetExport.objects.filter(stranded).values_list(
        "pk", "claim_token", "attempts"
    )[:MAX_STRANDED_PER_SWEEP]:
        if attempts >= export_limit:
            if _fail(DatasetExport, pk, token, stranded, now, _export_gave_up(attempts)):
                export = DatasetExport.objects.filter(pk=pk, status=RunStatus.FAILED).first()
                if export is not None:
                    export_changed(export)
        else:
            sent += _resend(DatasetExport, pk, token, stranded, now, export_build)
    return sent


def _deliveries(actor: dramatiq.Actor[Any, Any]) -> int:
    return 1 + int(actor.options.get("max_retries", 0))


def _run_gave_up(limit: timedelta) -> str:
    return (
        f"Its job stopped without finishing, more than {limit.total_seconds() / 3600:g} hours "
        "after the run was requested; request a new run."
    )


def _export_gave_up(attempts: int) -> str:
    return (
        f"Its build was started {attempts} times and stopped without finishing each time; "
        "request a new version."
    )


def _resend(
    model: type[Model],
    pk: int,
    token: str,
    stranded: Q,
    now: datetime,
    actor: dramatiq.Actor[Any, Any],
) -> int:
    rows = model._default_manager.filter(stranded, pk=pk, claim_token=token)
    if rows.update(claim_token=_stamp(now)) != 1:
        return 0  # claimed by a live copy, or dealt with by another sweep, meanwhile
    label = f"{model._meta.verbose_name} {pk}"
    logger.warning(
        "%s: no live copy of its job holds it (claim %r); its job is sent again",
        label, token or "none",
    )  # fmt: skip
    try:
        actor.send(pk)
    except Exception:
        # Stamped but not sent: the row is taken as lost again once the stamp is old.
        logger.exception("%s: its job could not be sent again", label)
        return 0
    return 1


def _fail(model: type[Model], pk: int, token: str, stranded: Q, now: datetime, reason: str) -> bool:
    from qa.models import RunStatus

    rows = model._default_manager.filter(stranded, pk=pk, claim_token=token)
    failed = rows.update(
        status=RunStatus.FAILED, error=reason[:500], finished_at=now,
        claim_token="", lease_expires_at=None,
    ) == 1  # fmt: skip
    if failed:
        logger.warning("%s failed: %s", f"{model._meta.verbose_name} {pk}", reason)
    return failed
