"""What a run shows: a progress line while the crowd works, and at the end the merged labels
measured against the truth, the tasks, the cost, the reviews and the workers by behaviour,
as JSON-able data (``crowd_report``) and as text (``report_text``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db.models import Count, Q

from crowd.models import User
from crowd.money import format_amount
from frontend.sim.engine import RunStats, real_tasks
from frontend.sim.truth import Truth
from qa import services as qa_services
from qa.models import ConsensusResult, ConsensusRun, GoldAnswer, WorkerScore, WorkerStatus
from tasks.hooks import progress_contributions
from tasks.models import Assignment, AssignmentStatus, Image, Kind, Project, Task, TaskState


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def quality_measure(*, project: Project, truth: Truth, run: ConsensusRun) -> dict[str, Any]:
    """The run's merged labels against the truth, over the real images whose tasks are all
    done. Shapes are matched the way gold is scored (``qa.services.answer_compare``)."""
    images = {
        pk: (name, w, h)
        for pk, name, w, h in Image.objects.filter(project=project).values_list(
            "pk", "name", "width", "height"
        )
    }
    gold = set(GoldAnswer.objects.filter(project=project).values_list("image_id", flat=True))
    open_tasks = (
        Task.objects.filter(project=project, is_gold=False)
        .values("image_id")
        .annotate(still_open=Count("pk", filter=Q(state=TaskState.OPEN)))
    )
    done = sorted(
        row["image_id"]
        for row in open_tasks
        if row["still_open"] == 0 and row["image_id"] not in gold
    )
    merged = dict(
        ConsensusResult.objects.filter(run=run, image_id__in=done).values_list(
            "image_id", "annotations"
        )
    )
    result: dict[str, Any] = {"images": len(done)}
    if project.kind == Kind.CLASSIFICATION:
        right = 0
        for image_id in done:
            answer = merged.get(image_id) or []
            expected = truth.images[images[image_id][0]][0]["label"]
            right += bool(answer) and answer[0]["label"] == expected
        result["accuracy"] = _ratio(right, len(done))
        return result
    matched = truth_items = answer_items = 0
    similarity = 0.0
    for image_id in done:
        name, width, height = images[image_id]
        score = qa_services.answer_compare(
            project=project, reference=truth.images[name], answer=merged.get(image_id) or [],
            width=width, height=height,
        )  # fmt: skip
        matched += score.matched
        truth_items += score.matched + score.missed + score.wrong_label
        answer_items += score.matched + score.extra + score.wrong_label
        similarity += (score.mean_iou or 0.0) * score.matched
    precision, recall = _ratio(matched, answer_items), _ratio(matched, truth_items)
    f1 = (
        round(2 * precision * recall / (precision + recall), 4)
        if precision and recall
        else (0.0 if done else None)
    )
    mean = "mean_oks" if project.kind == Kind.KEYPOINTS else "mean_iou"
    result.update(
        {"f1": f1, "precision": precision, "recall": recall, mean: _ratio(similarity, matched),
         "objects": truth_items, "threshold": project.iou_threshold}
    )  # fmt: skip
    return result


def crowd_report(
    *,
    project: Project,
    truth: Truth,
    stats: RunStats,
    run: ConsensusRun,
    reviews: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Everything the command prints, as JSON-able data.

    Counts say whose they are: ``run`` counts this run's answers (those it handed in and the
    product accepted, read back from the database), ``tasks`` and ``cost`` the project's, all
    runs and people together (a project worked before, like a demo one, has more)."""
    project.refresh_from_db()
    done, total = real_tasks(project.pk)
    answered = Assignment.objects.filter(project=project, status__in=AssignmentStatus.answered())
    this_run = answered.filter(pk__in=stats.assignment_ids)
    real_answers = answered.filter(task__is_gold=False)
    done_answers = real_answers.filter(task__state=TaskState.DONE).count()
    names = {w["worker"]: w for w in stats.workers}
    users = dict(User.objects.filter(username__in=list(names)).values_list("pk", "username"))
    scores = {
        users[row.worker_id]: row
        for row in WorkerScore.objects.filter(project=project, worker_id__in=list(users))
    }
    behaviours: dict[str, dict[str, Any]] = {}
    suspended = []
    for name, w in names.items():
        row = scores.get(name)
        entry = behaviours.setdefault(
            w["behaviour"],
            {"behaviour": w["behaviour"], "workers": 0, "answers": 0, "gold_seen": 0,
             "gold_passed": 0, "score_sum": 0.0, "suspended": 0},
        )  # fmt: skip
        entry["workers"] += 1
        entry["answers"] += w["answers"]
        if row is None:
            continue
        entry["gold_seen"] += row.gold_seen
        entry["gold_passed"] += row.gold_passed
        entry["score_sum"] += row.score
        if row.status == WorkerStatus.SUSPENDED:
            entry["suspended"] += 1
            suspended.append(
                {"worker": name, "behaviour": w["behaviour"], "score": round(row.score, 3),
                 "gold_seen": row.gold_seen, "gold_passed": row.gold_passed,
                 "reason": row.status_reason}
            )  # fmt: skip
    for entry in behaviours.values():
        entry["mean_score"] = round(entry.pop("score_sum") / entry["workers"], 3)
    spend = progress_contributions.collect(project)
    submitted = answered.count()
    currency = project.currency
    return {
        "project": {"id": project.pk, "name": project.name, "kind": project.kind,
                    "images": len(truth.images),
                    "gold": GoldAnswer.objects.filter(project=project).count()},
        "run": {"via": stats.via, "seconds": stats.seconds,
                "answers": this_run.count(),
                "gold_answers": this_run.filter(task__is_gold=True).count(),
                "skipped": stats.skipped, "abandoned": stats.abandoned, "late": stats.late,
                "ended": stats.ended, **({"http": stats.http} if stats.http else {})},
        "tasks": {"total": total, "done": done,
                  "answers_per_done_task": _ratio(done_answers, done),
                  "answers": submitted,
                  "answers_to_real_tasks": real_answers.count(),
                  "answers_to_gold_tasks": submitted - real_answers.count()},
        "consensus": {"run": run.pk, "method": run.method, "status": run.status},
        "quality": quality_measure(project=project, truth=truth, run=run),
        "cost": {"currency": currency, "reward": format_amount(project.reward, currency),
                 "answers": submitted,
                 "submitted_rewards": format_amount(submitted * project.reward, currency),
                 "spent": spend["spent"]["amount"], "committed": spend["committed"]["amount"]},
        "reviews": reviews,
        "behaviours": sorted(behaviours.values(), key=lambda e: e["behaviour"]),
        "suspended": suspended,
        "workers": stats.workers,
    }  # fmt: skip


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_text(report: dict[str, Any]) -> str:
    """The report as a few aligned lines and a table per behaviour."""
    p, r, t, q, c = (report[k] for k in ("project", "run", "tasks", "quality", "cost"))
    lines = [
        f"Project   {p['id']} {p['name']!r} ({p['kind']}): {p['images']} images, {p['gold']} gold",
        f"Run       via {r['via']}, {r['seconds']} s; this run: {r['answers']} answers "
        f"({r['gold_answers']} of them to gold tasks), {r['skipped']} skipped, "
        f"{r['abandoned']} abandoned, {r['late']} late; ended: {r['ended']}",
        f"Tasks     {t['done']}/{t['total']} real tasks done, "
        f"{_fmt(t['answers_per_done_task'], 2)} answers per done task; the project's answers, "
        f"all runs: {t['answers']} ({t['answers_to_gold_tasks']} to gold tasks)",
    ]
    if p["kind"] == "classification":
        lines.append(f"Quality   accuracy {_fmt(q['accuracy'])} over {q['images']} done images")
    else:
        similar = "mean OKS" if p["kind"] == "keypoints" else "mean IoU"
        value = q.get("mean_oks", q.get("mean_iou"))
        lines.append(
            f"Quality   F1@{q['threshold']} {_fmt(q['f1'])} (precision {_fmt(q['precision'])}, "
            f"recall {_fmt(q['recall'])}), {similar} {_fmt(value)} of matches, over "
            f"{q['images']} done images ({q['objects']} objects)"
        )
    lines.append(
        f"Cost      reward {c['reward']} {c['currency']}; the project's {c['answers']} answers "
        f"= {c['submitted_rewards']}; spent (ledger) {c['spent']}, committed {c['committed']}"
    )
    if report["reviews"]:
        v = report["reviews"]
        lines.append(f"Reviews   {v['approved']} approved, {v['rejected']} rejected")
    if r.get("http"):
        lines.append("HTTP      " + ", ".join(f"{k}: {n}" for k, n in r["http"].items()))
    # Answers are this run's; gold and scores are the workers' in the project, all runs.
    header = ("behaviour", "workers", "answers (run)", "gold seen", "gold passed", "mean score",
              "suspended")  # fmt: skip
    rows = [header] + [
        (e["behaviour"], e["workers"], e["answers"], e["gold_seen"], e["gold_passed"],
         _fmt(e["mean_score"]), e["suspended"])
        for e in report["behaviours"]
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines.append("")
    lines += ["  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)) for row in rows]
    if report["suspended"]:
        lines.append("")
        lines.append("Suspended:")
        lines += [
            f"  {s['worker']} ({s['behaviour']}): score {s['score']}, {s['gold_passed']}/"
            f"{s['gold_seen']} gold passed. {s['reason']}"
            for s in report["suspended"]
        ]
    return "\n".join(lines)


class ProgressBar:
    """A one-line progress bar for a terminal (a plain line every few seconds otherwise)."""

    def __init__(self, write: Callable[[str], object], *, tty: bool, width: int = 30) -> None:
        self.write = write
        self.tty = tty
        self.width = width
        self.start = time.monotonic()
        self.last_line = 0.0
        self.shown = False

    def __call__(self, done: int, total: int, answers: int, note: str) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        filled = int(self.width * done / total) if total else self.width
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} tasks  "
            f"{answers} answers  {answers / elapsed:.1f}/s"
        ) + (f"  {note}" if note else "")
        if self.tty:
            self.write("\r" + line.ljust(100))
            self.shown = True
        elif time.monotonic() - self.last_line >= 5:
            self.write(line + "\n")
            self.last_line = time.monotonic()

    def close(self) -> None:
        if self.shown:
            self.write("\n")
