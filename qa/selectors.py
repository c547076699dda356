"""Reads on quality: workers with their evidence, agreement metrics, gold, consensus runs and
the dataset versions a user may download."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import combinations
from statistics import median
from typing import Any

import numpy as np
from django.db.models import Count, Q, QuerySet

from crowd.contracts import worker_earnings
from crowd.models import Role, User
from crowd.money import money_json
from qa import agreement as stats
from qa.geometry import match_annotations
from qa.models import (
    ConsensusRun,
    DatasetExport,
    GoldAnswer,
    GoldResult,
    ModelScore,
    WorkerModelFit,
    WorkerScore,
)
from qa.services import comparable, project_sigmas
from tasks.models import Assignment, AssignmentStatus, Kind, Project, TaskState
from tasks.schema import project_schema
from tasks.selectors import projects_for_user

# Spam signals look at the project's most recent answers.
SIGNAL_WINDOW = 20_000
FAST_FRACTION = 0.25  # a median time under a quarter of the project's median is suspicious
MIN_ANSWERS_FOR_SIGNALS = 10
IDENTICAL_SHARE = 0.9
# Agreement metrics look at the most recent completed tasks.
AGREEMENT_WINDOW = 5_000
GOLD_HISTORY = 200


def _recent_answers(project: Project) -> list[dict[str, Any]]:
    rows = Assignment.objects.filter(
        project=project, status__in=AssignmentStatus.answered()
    ).order_by("-submitted_at")
    return [dict(r) for r in rows.values("worker_id", "time_spent_ms", "answer")[:SIGNAL_WINDOW]]


def worker_signals(project: Project) -> dict[int, list[dict[str, Any]]]:
    """Spam signals per worker, each with its evidence: answers far faster than the
    project's median, the same answer whatever the image, empty answers where gold has
    objects."""
    answers = _recent_answers(project)
    flags: dict[int, list[dict[str, Any]]] = defaultdict(list)
    times = [a["time_spent_ms"] for a in answers if a["time_spent_ms"] is not None]
    by_worker: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in answers:
        by_worker[a["worker_id"]].append(a)
    project_median = median(times) if times else None
    canonical = [json.dumps(a["answer"], sort_keys=True) for a in answers]
    overall_top = Counter(canonical).most_common(1)[0][1] / len(canonical) if canonical else 0.0
    for worker_id, rows in by_worker.items():
        if len(rows) < MIN_ANSWERS_FOR_SIGNALS:
            continue
        spent = [r["time_spent_ms"] for r in rows if r["time_spent_ms"] is not None]
        if project_median and spent and median(spent) < FAST_FRACTION * project_median:
            flags[worker_id].append(
                {
                    "signal": "too_fast",
                    "detail": f"Median time per answer {median(spent) / 1000:.1f} s against "
                    f"the project's {project_median / 1000:.1f} s.",
                    "worker_median_ms": int(median(spent)),
                    "project_median_ms": int(project_median),
                    "answers": len(spent),
                }
            )
        same, count = Counter(json.dumps(r["answer"], sort_keys=True) for r in rows).most_common(1)[
            0
        ]
        share = count / len(rows)
        if share >= IDENTICAL_SHARE and overall_top < IDENTICAL_SHARE:
            flags[worker_id].append(
                {
                    "signal": "identical_answers",
                    "detail": f"{count} of their last {len(rows)} answers are the same answer.",
                    "share": round(share, 4),
                    "answers": len(rows),
                    "answer": json.loads(same),
                }
            )
    for worker_id, empty, of in _empty_on_gold(project):
        flags[worker_id].append(
            {
                "signal": "empty_on_gold",
                "detail": f"Marked nothing on {empty} of {of} gold images that have objects.",
                "count": empty,
                "of": of,
            }
        )
    return dict(flags)


def _empty_on_gold(project: Project) -> Iterable[tuple[int, int, int]]:
    if project.kind == Kind.CLASSIFICATION:
        return []
    rows = (
        GoldResult.objects.filter(project=project, details__gold_objects__gt=0)
        .values("worker_id")
        .annotate(
            of=Count("pk"),
            empty=Count("pk", filter=Q(details__answer_objects=0)),
        )
    )
    return [
        (r["worker_id"], r["empty"], r["of"])
        for r in rows
        if r["empty"] >= 2 and r["empty"] * 2 >= r["of"]
    ]


def _submitted_counts(project: Project) -> dict[int, int]:
    rows = (
        Assignment.objects.filter(project=project, status__in=AssignmentStatus.answered())
        .values("worker_id")
        .annotate(n=Count("pk"))
    )
    return {r["worker_id"]: r["n"] for r in rows}


def _model_json(row: WorkerScore | ModelScore, fit: ModelFit) -> dict[str, Any] | None:
    """What the project's worker model (``qa.worker_model``) says of the worker (or of a
    model version, a member of the crowd like them), or None."""
    method, labels = fit
    if row.model_seen <= 0 or not method:
        return None
    params = row.model_params

    def rounded(value: Any) -> Any:
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return round(value, 4) if isinstance(value, float) else value

    return {
        "method": method,
        "answers": int(row.model_seen),
        "accuracy": round(row.model_sum / row.model_seen, 4),
        **{key: rounded(params[key]) for key in MODEL_FIELDS if key in params},
        **({"labels": labels} if "confusion" in params else {}),
    }


MODEL_FIELDS = (
    "recall", "false_marks", "noise", "label_accuracy", "shift", "confusion", "bias", "swaps",
    "visibility",
)  # fmt: skip
ModelFit = tuple[str, list[str]]  # the fit's method, and the labels its confusions are over


def _model_fit(project: Project) -> ModelFit:
    fit = WorkerModelFit.objects.filter(project=project).values_list("method", "crowd").first()
    if fit is None:
        return "", []
    method, crowd = fit
    return method, list(crowd.get("labels", []))


def worker_json(
    row: WorkerScore,
    project: Project,
    *,
    submitted: int,
    earned: int,
    flags: list[Any],
    model_fit: ModelFit = ("", []),
) -> dict[str, Any]:
    return {
        "worker": row.worker_id,
        "username": row.worker.username,
        "score": round(row.score, 4),
        "gold_seen": row.gold_seen,
        "gold_passed": row.gold_passed,
        "agreement": None if row.agreement is None else round(row.agreement, 4),
        "agreement_seen": row.agreement_seen,
        "status": row.status,
        "status_reason": row.status_reason or None,
        "suspended_at": row.suspended_at.isoformat() if row.suspended_at else None,
        "suspended_by": row.suspended_by.username if row.suspended_by else None,
        "submitted": submitted,
        "earned": money_json(earned, project.currency),
        "flags": flags,
        "model": _model_json(row, model_fit),
    }


def project_workers(project: Project) -> list[dict[str, Any]]:
    rows = list(
        WorkerScore.objects.filter(project=project)
        .select_related("worker", "suspended_by")
        .order_by("score", "worker_id")
    )
    submitted = _submitted_counts(project)
    earned = worker_earnings.ask(project, [r.worker_id for r in rows])
    signals = worker_signals(project)
    fit = _model_fit(project)
    return [
        worker_json(
            r,
            project,
            submitted=submitted.get(r.worker_id, 0),
            earned=earned.get(r.worker_id, 0),
            flags=signals.get(r.worker_id, []),
            model_fit=fit,
        )
        for r in rows
    ]


def project_worker(project: Project, worker_id: int) -> dict[str, Any] | None:
    row = (
        WorkerScore.objects.filter(project=project, worker_id=worker_id)
        .select_related("worker", "suspended_by")
        .first()
    )
    if row is None:
        return None
    data = worker_json(
        row,
        project,
        submitted=Assignment.objects.filter(
            project=project, worker_id=worker_id, status__in=AssignmentStatus.answered()
        ).count(),
        earned=worker_earnings.ask(project, [worker_id]).get(worker_id, 0),
        flags=worker_signals(project).get(worker_id, []),
        model_fit=_model_fit(project),
    )
    exam = {"seen": row.exam_seen, "size": project.exam_tasks}
    data["exam"] = exam if project.exam_tasks else None
    data["gold_history"] = [
        {
            "assignment": g.assignment_id,
            "image": g.image_id,
            "score": round(g.score, 4),
            "passed": g.passed,
            "exam": g.exam,
            "details": g.details,
            "created_at": g.created_at.isoformat(),
        }
        for g in GoldResult.objects.filter(project=project, worker_id=worker_id).order_by(
            "-created_at", "-pk"
        )[:GOLD_HISTORY]
    ]
    return data


# --- Agreement --------------------------------------------------------------------------------


def _completed_answers(
    project: Project,
) -> tuple[dict[int, list[tuple[int, Any]]], dict[int, tuple[int, int]]]:
    """(worker, answer) per recently completed non-gold task, and each task's image size."""
    task_ids = list(
        project.tasks.filter(state=TaskState.DONE, is_gold=False)
        .order_by("-done_at")
        .values_list("pk", flat=True)[:AGREEMENT_WINDOW]
    )
    answers: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    rows = Assignment.objects.filter(
        task_id__in=task_ids, status__in=AssignmentStatus.answered()
    ).values_list("task_id", "worker_id", "answer", "task__image__width", "task__image__height")
    sizes: dict[int, tuple[int, int]] = {}
    for task_id, worker_id, answer, width, height in rows:
        answers[task_id].append((worker_id, answer or []))
        sizes[task_id] = (width, height)
    return answers, sizes


def project_agreement(project: Project) -> dict[str, Any]:
    """Inter-annotator agreement over the project's recently completed tasks."""
    answers, sizes = _completed_answers(project)
    if project.kind == Kind.CLASSIFICATION:
        return _classification_agreement(project, answers)
    return _shape_agreement(project, answers, sizes)


def _classification_agreement(
    project: Project, answers: dict[int, list[tuple[int, Any]]]
) -> dict[str, Any]:
    labels = list(project_schema(project).labels)
    index = {name: i for i, name in enumerate(labels)}
    triples = [
        (task, worker, answer[0]["label"])
        for task, rows in answers.items()
        for worker, answer in rows
        if answer and answer[0].get("label") in index
    ]
    counts = np.zeros((len(answers), len(labels)), dtype=np.int64)
    task_index = {task: i for i, task in enumerate(answers)}
    for task, _, label in triples:
        counts[task_index[task], index[label]] += 1
    rated = counts[counts.sum(axis=1) >= 2]
    pairs = stats.pairwise_cohen(triples)
    per_worker = stats.coder_mean_pairwise(pairs)
    partners = Counter(w for pair in pairs for w in pair)
    names = _usernames({w for _, w, _ in triples})
    return {
        "kind": project.kind,
        "tasks": len(rated),
        "answers": len(triples),
        "fleiss_kappa": _finite(stats.fleiss_kappa(rated)) if len(rated) else None,
        "krippendorff_alpha": _finite(stats.krippendorff_alpha_from_triples(triples))
        if len(rated)
        else None,
        "mean_pairwise_kappa": _round(stats.mean_pairwise(pairs)),
        "pairs": [
            {
                "workers": [a, b],
                "usernames": [names.get(a), names.get(b)],
                "kappa": _finite(k),
                "tasks": n,
            }
            for (a, b), (k, n) in pairs.items()
        ],
        "workers": [
            {"worker": w, "username": names.get(w), "mean_kappa": _round(k), "pairs": partners[w]}
            for w, k in sorted(per_worker.items())
        ],
    }


NOTHING = "(nothing)"


def _usernames(worker_ids: Iterable[int]) -> dict[int, str]:
    return dict(User.objects.filter(pk__in=list(worker_ids)).values_list("pk", "username"))


def _shape_agreement(
    project: Project,
    answers: dict[int, list[tuple[int, Any]]],
    sizes: dict[int, tuple[int, int]],
) -> dict[str, Any]:
    """Workers' answers to the same task matched pairwise. The confusion matrix counts
    coincidences (both orders of each pair off the diagonal); its last row and column, named
    ``NOTHING`` and at index ``nothing``, are an object one worker marked and the other did
    not."""
    labels = list(project_schema(project).labels)
    coincidences: list[tuple[str | None, str | None]] = []
    sims: list[float] = []
    per_worker: dict[int, list[float]] = defaultdict(list)
    sigmas = project_sigmas(project) if project.kind == Kind.KEYPOINTS else None
    for task, rows in answers.items():
        compared = [(w, comparable(project, list(items))) for w, items in rows]
        for (wa, a), (wb, b) in combinations(compared, 2):
            m = match_annotations(
                a, b, kind=project.kind, threshold=project.iou_threshold,
                width=sizes[task][0], height=sizes[task][1], sigmas=sigmas,
            )  # fmt: skip
            sims.extend(pair.similarity for pair in m.matches)
            coincidences += [(a[p.ref]["label"], b[p.cand]["label"]) for p in m.matches]
            coincidences += [(p.ref_label, p.cand_label) for p in m.label_mismatches]
            coincidences += [(a[i]["label"], None) for i in m.misses]
            coincidences += [(None, b[j]["label"]) for j in m.extras]
            total = len(a) + len(b)
            f1 = 1.0 if total == 0 else 2 * len(m.matches) / total
            per_worker[wa].append(f1)
            per_worker[wb].append(f1)
    confusion = stats.confusion_matrix(coincidences, labels)
    names = _usernames(per_worker)
    symmetric = confusion + confusion.T
    np.fill_diagonal(symmetric, np.diag(confusion))
    return {
        "kind": project.kind,
        "tasks": len(answers),
        "mean_pairwise_iou": _mean(sims),
        "mean_pairwise_f1": _mean([f for fs in per_worker.values() for f in fs]),
        "confusion": {
            "labels": [*labels, NOTHING],
            "nothing": len(labels),
            "matrix": symmetric.tolist(),
        },
        "workers": [
            {"worker": w, "username": names.get(w), "mean_f1": _mean(fs), "pairs": len(fs)}
            for w, fs in sorted(per_worker.items())
        ],
    }


def _finite(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def _round(value: float | None) -> float | None:
    return None if value is None else _finite(value)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


# --- Gold, runs and exports -------------------------------------------------------------------


def gold_list(project: Project) -> QuerySet[GoldAnswer]:
    """The project's gold answers, oldest first, each with its image's ``task_count``."""
    return (
        GoldAnswer.objects.filter(project=project)
        .annotate(task_count=Count("image__tasks"))
        .order_by("pk")
    )


def consensus_run_last(project: Project) -> ConsensusRun | None:
    """The project's newest consensus run, finished or not."""
    return ConsensusRun.objects.filter(project=project).order_by("-pk").first()


def exports_for_user(
    user: User,
    *,
    project_id: int | None = None,
    fmt: str | None = None,
    status: str | None = None,
) -> QuerySet[DatasetExport]:
    """Every dataset version ``user`` may download, newest first: a manager's of the projects
    they manage, a client's of the projects shared with them (none for a worker)."""
    if user.role == Role.WORKER:
        return DatasetExport.objects.none()
    exports = DatasetExport.objects.filter(project__in=projects_for_user(user))
    if project_id is not None:
        exports = exports.filter(project_id=project_id)
    if fmt is not None:
        exports = exports.filter(format=fmt)
    if status is not None:
        exports = exports.filter(status=status)
    return exports.select_related("project").order_by("-created_at", "-pk")
