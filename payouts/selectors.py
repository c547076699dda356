"""Money reads: fair pay for a project and a worker's own effective hourly rate."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Sum

from crowd.money import format_amount, money_json, parse_amount
from payouts.models import EntryKind, LedgerEntry
from tasks.models import Assignment, AssignmentStatus, Project
from tasks.selectors import median_seconds_per_task


def fair_pay(project: Project) -> dict[str, Any]:
    """The project's effective hourly rate (reward over the median active time per task) and
    a warning when it is below ``FAIR_PAY_HOURLY_FLOOR``."""
    floor = parse_amount(settings.FAIR_PAY_HOURLY_FLOOR, project.currency)
    median = median_seconds_per_task(project)
    out: dict[str, Any] = {
        "median_seconds_per_task": None if median is None else round(median, 1),
        "effective_hourly_rate": None,
        "hourly_floor": money_json(floor, project.currency),
        "fair_pay_warning": None,
    }
    if median is None or median <= 0:
        return out
    hourly = round(project.reward * 3600 / median)
    out["effective_hourly_rate"] = money_json(hourly, project.currency)
    if hourly < floor:
        out["fair_pay_warning"] = (
            f"Workers earn about {format_amount(hourly, project.currency)} {project.currency} "
            f"an hour here (median {median:.0f} s a task), below the floor of "
            f"{format_amount(floor, project.currency)}: raise the reward to at least "
            f"{format_amount(int(np.ceil(floor * median / 3600)), project.currency)}."
        )
    return out


def worker_hourly_rates(worker_id: int) -> list[dict[str, Any]]:
    """What the worker earned per hour of active time, per currency: their rewards,
    adjustments and bonuses over the time they spent on answered tasks."""
    earned = (
        LedgerEntry.objects.filter(
            worker_id=worker_id,
            kind__in=[EntryKind.REWARD, EntryKind.ADJUSTMENT, EntryKind.BONUS],
        )
        .values("currency")
        .annotate(total=Sum("amount"))
    )
    spent = (
        Assignment.objects.filter(worker_id=worker_id, status__in=AssignmentStatus.answered())
        .values("project__currency")
        .annotate(ms=Sum("time_spent_ms"))
    )
    ms_by_currency = {row["project__currency"]: row["ms"] or 0 for row in spent}
    rates = []
    for row in earned:
        ms = ms_by_currency.get(row["currency"], 0)
        if ms > 0:
            hourly = round(row["total"] * 3_600_000 / ms)
            rates.append(money_json(hourly, row["currency"]))
    return rates
