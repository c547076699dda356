"""The effect of pre-labels on the crowd, for the project's managers: gold scores and time per
task of answers given with pre-labels and of those given without (the tasks the holdout draw
withheld them from), overall and per worker, with the differences and their intervals.

Only answers to tasks whose image had a prediction count: there the draw alone decided whether
the worker saw the model's objects, so the two arms differ by the pre-labels and nothing else.
The overall comparison and the pre-label outcomes leave out the answers of workers suspended
from the project, as consensus and agreement do: a spammer's answers ignore the image and the
pre-labels alike, so they only add noise to both sides. Suspended workers keep their own row,
marked.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd.permissions import IsManager, request_user
from qa import prelabel_stats
from qa.models import GoldAnswer, WorkerScore, WorkerStatus
from tasks import prelabels, selectors
from tasks.models import Assignment, AssignmentStatus, Image, ImageStatus, Prediction, Project
from tasks.prelabel_core import OUTCOMES

MAX_WORKERS = 500  # per-worker rows, most answers first


def _arms() -> dict[bool, dict[str, Any]]:
    return {
        flag: {"gold": [], "seconds": [], "answers": [], "tasks": defaultdict(list)}
        for flag in (True, False)
    }


def _task_means(arm: dict[str, Any]) -> list[float]:
    return [sum(scores) / len(scores) for scores in arm["tasks"].values()]


def _figures(arms: dict[bool, dict[str, Any]]) -> dict[str, Any]:
    shown, held = arms[True], arms[False]
    return prelabel_stats.compare(
        shown["gold"], held["gold"], shown["seconds"], held["seconds"],
        with_answers=len(shown["answers"]), without_answers=len(held["answers"]),
        with_gold_tasks=_task_means(shown), without_gold_tasks=_task_means(held),
    )  # fmt: skip


def _coverage(project: Project) -> dict[str, Any]:
    """How many images, gold ones apart, have a prediction of the current model version: a
    gold image without one shows no pre-labels where the others do, which tells gold apart."""
    version = prelabels.current_version(project)
    ready = Image.objects.filter(project=project, status=ImageStatus.READY)
    gold_ids = set(GoldAnswer.objects.filter(project=project).values_list("image_id", flat=True))
    all_ids = set(ready.values_list("pk", flat=True))
    predicted = (
        set(
            Prediction.objects.filter(project=project, model_version=version).values_list(
                "image_id", flat=True
            )
        )
        if version
        else set()
    )
    gold_ids &= all_ids
    other = all_ids - gold_ids
    warnings = []
    if project.prelabels and version:
        gold_share = len(gold_ids & predicted) / len(gold_ids) if gold_ids else None
        other_share = len(other & predicted) / len(other) if other else None
        if gold_share is not None and other_share is not None and gold_share != other_share:
            warnings.append(
                f"{len(gold_ids & predicted)} of {len(gold_ids)} gold images and "
                f"{len(other & predicted)} of {len(other)} other images have a prediction of "
                f"{version!r}: where only some do, a missing pre-label hints at gold. Predict "
                "every image (POST .../predictions/run/), or import predictions for all."
            )
    return {
        "model_version": version,
        "images": len(all_ids),
        "images_predicted": len(all_ids & predicted),
        "gold_images": len(gold_ids),
        "gold_images_predicted": len(gold_ids & predicted),
        "warnings": warnings,
    }


def prelabel_effect(project: Project, *, count_suspended: bool = False) -> dict[str, Any]:
    """The comparison; ``count_suspended`` counts suspended workers' answers overall too (what
    the comparison did before, for benchmarks to set beside it)."""
    suspended = set(
        WorkerScore.objects.filter(project=project, status=WorkerStatus.SUSPENDED).values_list(
            "worker_id", flat=True
        )
    )
    rows = (
        Assignment.objects.filter(
            project=project, status__in=AssignmentStatus.answered(), prelabels__isnull=False
        )
        .order_by()
        .values_list(
            "worker_id", "worker__username", "time_spent_ms", "prelabels", "gold_result__score",
            "task_id",
        )
    )  # fmt: skip
    overall = _arms()
    workers: dict[int, dict[str, Any]] = {}
    outcomes: dict[str, int] = defaultdict(int)
    excluded = left_out = 0
    for worker_id, username, spent, record, gold_score, task_id in rows.iterator(chunk_size=2000):
        if not isinstance(record, dict) or record.get("model_version") is None:
            excluded += 1  # no prediction of the image: the draw decided nothing there
            continue
        shown = not record.get("held_out", False)
        entry = workers.setdefault(worker_id, {"username": username, "arms": _arms()})
        counted = count_suspended or worker_id not in suspended
        left_out += not counted
        for arms in (overall, entry["arms"]) if counted else (entry["arms"],):
            arms[shown]["answers"].append(1)
            if spent is not None:
                arms[shown]["seconds"].append(spent / 1000)
            if gold_score is not None:
                arms[shown]["gold"].append(gold_score)
                arms[shown]["tasks"][task_id].append(gold_score)
        if shown and counted:
            for name, count in (record.get("counts") or {}).items():
                outcomes[name] += int(count)
    offered = outcomes["kept"] + outcomes["moved"] + outcomes["relabelled"] + outcomes["deleted"]
    ranked = sorted(
        workers.items(),
        key=lambda kv: (
            -(len(kv[1]["arms"][True]["answers"]) + len(kv[1]["arms"][False]["answers"]))
        ),
    )
    return {
        "prelabels": project.prelabels,
        "prelabel_holdout": project.prelabel_holdout,
        "overall": _figures(overall),
        "outcomes": {
            **{name: outcomes[name] for name in OUTCOMES},
            "kept_share": round(outcomes["kept"] / offered, 4) if offered else None,
        },
        "workers": [
            {
                "worker": worker_id,
                "username": entry["username"],
                "suspended": worker_id in suspended,
                **_figures(entry["arms"]),
            }
            for worker_id, entry in ranked[:MAX_WORKERS]
        ],
        "answers_without_prediction": excluded,
        "answers_of_suspended_workers": left_out,
        "coverage": _coverage(project),
    }


_Difference = inline_serializer(
    "PrelabelDifference",
    {
        "estimate": serializers.FloatField(),
        "ci95": serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
    },
    allow_null=True,
)
_Arm = inline_serializer(
    "PrelabelArm",
    {
        "answers": serializers.IntegerField(),
        "gold_answers": serializers.IntegerField(),
        "gold_score_mean": serializers.FloatField(allow_null=True),
        "timed_answers": serializers.IntegerField(),
        "median_seconds": serializers.FloatField(allow_null=True),
    },
)
_COMPARISON: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "with_prelabels": _Arm,
    "without_prelabels": _Arm,
    "gold_score_difference": inline_serializer(
        "PrelabelGoldDifference",
        {
            "estimate": serializers.FloatField(),
            "ci95": serializers.ListField(child=serializers.FloatField()),
            "p_value": serializers.FloatField(help_text="Welch's t-test, two-sided."),
        },
        allow_null=True,
        help_text="Mean gold score with minus without, over gold tasks (each task's mean "
        "gold score: the unit the holdout draw randomises), Welch's 95% interval and p; null "
        "with under 2 gold tasks a side.",
    ),
    "gold_score_flag": serializers.ChoiceField(
        ["lower_with_prelabels", "higher_with_prelabels"],
        allow_null=True,
        help_text="lower_with_prelabels when the gold score difference's 95% interval lies "
        "below 0 (the model leads the crowd astray), higher_with_prelabels when above; null "
        "when it holds 0 or there is too little gold.",
    ),
    "median_seconds_difference": _Difference,
}
PrelabelEffectOut = inline_serializer(
    "PrelabelEffectOut",
    {
        "prelabels": serializers.BooleanField(),
        "prelabel_holdout": serializers.FloatField(),
        "overall": inline_serializer("PrelabelComparison", _COMPARISON),
        "outcomes": inline_serializer(
            "PrelabelOutcomes",
            {
                **{name: serializers.IntegerField() for name in OUTCOMES},
                "kept_share": serializers.FloatField(
                    allow_null=True, help_text="Of the pre-labels offered, those kept unchanged."
                ),
            },
        ),
        "workers": inline_serializer(
            "PrelabelWorkerComparison",
            {
                "worker": serializers.IntegerField(),
                "username": serializers.CharField(),
                "suspended": serializers.BooleanField(
                    help_text="Suspended from the project: their answers are left out of "
                    "overall and outcomes."
                ),
                **_COMPARISON,
            },
            many=True,
        ),
        "answers_without_prediction": serializers.IntegerField(),
        "answers_of_suspended_workers": serializers.IntegerField(
            help_text="Answers left out of overall and outcomes: their workers are suspended."
        ),
        "coverage": inline_serializer(
            "PrelabelCoverage",
            {
                "model_version": serializers.CharField(allow_null=True),
                "images": serializers.IntegerField(),
                "images_predicted": serializers.IntegerField(),
                "gold_images": serializers.IntegerField(),
                "gold_images_predicted": serializers.IntegerField(),
                "warnings": serializers.ListField(child=serializers.CharField()),
            },
        ),
    },
)


class ProjectPrelabelEffectApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: PrelabelEffectOut},
        description="Managers of the project only: gold scores and time per task of answers "
        "given with the model's pre-labels and without them (the prelabel_holdout share), "
        "overall (suspended workers' answers left out) and per worker, with the differences "
        "(with minus without) and 95% intervals "
        "(Welch for the mean gold score, bootstrap for the median time), what workers did "
        "with the pre-labels, and how many images have a prediction, gold ones apart.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        return Response(prelabel_effect(project))
