"""Writes on projects, labels, membership and tasks."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from crowd import storage
from crowd.errors import Conflict, InvalidInput, NotFound
from crowd.models import Role, User
from crowd.money import MoneyError, normalize_currency, parse_amount
from tasks import events, hooks, planner_stats, task_order
from tasks.models import (
    Assignment,
    AssignmentStatus,
    Image,
    Kind,
    Label,
    MaskMode,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    StalledAction,
    Task,
    TaskOrder,
)
from tasks.schema import project_labels

logger = logging.getLogger(__name__)

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324"]  # fmt: skip
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_LABELS = 500
MAX_KEYPOINTS = 100

# Fields a PATCH may change, with the rule that applies once the project has tasks.
SETTINGS_FIELDS = (
    "name", "instructions", "min_overlap", "max_overlap", "agreement_threshold", "gold_rate",
    "assignment_seconds", "min_worker_score", "tile_size", "tile_overlap", "iou_threshold",
    "gold_pass_score", "keypoint_sigma", "exam_tasks", "exam_pass_score", "review_delay_hours",
    "auto_reject_failed_gold", "auto_bonus_min_score", "auto_bonus_min_answers",
    "stalled_action", "stalled_grace_minutes", "mask_mode", "prelabels",
    "prelabel_holdout", "task_order",
)  # fmt: skip
# Auto-accept's settings and their defaults (``qa.auto_accept``): the accuracy the model's
# labels must reach, the confidence of that bound, the share of passing images still sent to
# people, and the fewest human-checked images above a threshold it may rest on.
AUTO_ACCEPT_DEFAULTS: dict[str, float | int] = {
    "target_accuracy": 0.95, "confidence": 0.95, "spot_check_rate": 0.05, "min_checked": 30,
}  # fmt: skip
_AUTO_ACCEPT_RANGES = {
    "target_accuracy": (0.5, 1.0, "above 0.5 and below 1"),
    "confidence": (0.5, 1.0, "above 0.5 and below 1"),
    "spot_check_rate": (0.0, 1.0, "from 0 (none) to 1 (every passing image)"),
}
MAX_MIN_CHECKED = 100_000

# Amounts a PATCH may change, as decimal strings in the project's currency.
MONEY_FIELDS = ("reward", "budget", "auto_bonus_amount")


def _labels_in(raw: Any, kind: str) -> list[dict[str, Any]]:
    """Normalise ``labels`` (names, or {"name","color","keypoints"}) or raise InvalidInput."""
    problems: list[str] = []
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(errors={"labels": ["Give at least one label."]})
    if len(raw) > MAX_LABELS:
        raise InvalidInput(errors={"labels": [f"At most {MAX_LABELS} labels."]})
    labels: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        spec = {"name": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            problems.append(f'Label {i + 1}: give a name, or {{"name", "color"}}.')
            continue
        name = spec["name"].strip()
        color = spec.get("color") or PALETTE[i % len(PALETTE)]
        keypoints: Any = spec.get("keypoints", [])
        if not name or len(name) > 100:
            problems.append(f"Label {i + 1}: a name of 1 to 100 characters.")
        elif name.casefold() in seen:
            problems.append(f"Label {name!r} is given twice.")
        seen.add(name.casefold())
        if not isinstance(color, str) or not _COLOR.match(color):
            problems.append(f"Label {name!r}: colour must look like #1f77b4.")
        if kind == Kind.KEYPOINTS:
            if (
                not isinstance(keypoints, list)
                or not keypoints
                or len(keypoints) > MAX_KEYPOINTS
                or not all(isinstance(k, str) and k.strip() for k in keypoints)
            ):
                problems.append(
                    f'Label {name!r}: keypoint projects need "keypoints": a list of names.'
                )
            elif len({k.strip() for k in keypoints}) != len(keypoints):
                problems.append(f"Label {name!r}: keypoint names must be unique.")
        elif keypoints:
            problems.append(f"Label {name!r}: only keypoint projects have keypoints.")
        names = [k.strip() for k in keypoints] if isinstance(keypoints, list) else []
        labels.append({"name": name, "color": str(color).lower(), "keypoints": names})
    if problems:
        raise InvalidInput(errors={"labels": problems})
    return labels


def _check_settings(project: Project) -> None:
    errors: dict[str, list[str]] = {}

    def bad(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not project.name.strip():
        bad("name", "Give the project a name.")
    if project.min_overlap < 1:
        bad("min_overlap", "At least 1.")
    if project.max_overlap < project.min_overlap:
        bad("max_overlap", "Must be at least min_overlap.")
    if project.max_overlap > 50:
        bad("max_overlap", "At most 50.")
    if not 0 <= project.agreement_threshold <= 1:
        bad("agreement_threshold", "Between 0 and 1.")
    if not 0 <= project.gold_rate < 1:
        bad("gold_rate", "At least 0 and below 1.")
    if not 0 <= project.min_worker_score <= 1:
        bad("min_worker_score", "Between 0 and 1.")
    if not 30 <= project.assignment_seconds <= 24 * 3600:
        bad("assignment_seconds", "Between 30 seconds and 24 hours.")
    if project.tile_size and project.tile_size < 256:
        bad("tile_size", "0 (no tiling) or at least 256 pixels.")
    if project.tile_size and not 0 <= project.tile_overlap <= project.tile_size // 2:
        bad("tile_overlap", "Between 0 and half the tile size.")
    if project.reward < 0:
        bad("reward", "Cannot be negative.")
    if project.budget is not None and project.budget < 0:
        bad("budget", "Cannot be negative.")
    if project.auto_bonus_amount < 0:
        bad("auto_bonus_amount", "Cannot be negative.")
    if not 0 <= project.auto_bonus_min_score <= 1:
        bad("auto_bonus_min_score", "Between 0 and 1.")
    if not 0 <= project.review_delay_hours <= 24 * 90:
        bad("review_delay_hours", "Between 0 (approve at once) and 2160 hours (90 days).")
    for field in ("iou_threshold", "gold_pass_score", "exam_pass_score"):
        if not 0 < getattr(project, field) <= 1:
            bad(field, "Above 0 and at most 1.")
    if not 0 < project.keypoint_sigma <= 1:
        bad("keypoint_sigma", "Above 0 and at most 1 (a fraction of the object's scale).")
    if not 0 <= project.exam_tasks <= 100:
        bad("exam_tasks", "Between 0 (no exam) and 100.")
    if project.stalled_action not in StalledAction.values:
        bad("stalled_action", f"One of: {', '.join(StalledAction.values)}.")
    if not 0 <= project.stalled_grace_minutes <= 30 * 24 * 60:
        bad("stalled_grace_minutes", "Between 0 (at once) and 43200 minutes (30 days).")
    if not 0 <= project.prelabel_holdout <= 1:
        bad("prelabel_holdout", "Between 0 (every task gets pre-labels) and 1 (none does).")
    if project.mask_mode not in MaskMode.values:
        bad("mask_mode", f"One of: {', '.join(MaskMode.values)}.")
    if project.task_order not in TaskOrder.values:
        bad("task_order", f"One of: {', '.join(TaskOrder.values)}.")
    if errors:
        raise InvalidInput(errors=errors)


def _money(data: dict[str, Any], project: Project) -> None:
    if "currency" in data:
        try:
            project.currency = normalize_currency(data["currency"])
        except MoneyError as exc:
            raise InvalidInput(errors={"currency": [str(exc)]}) from None
    for field in MONEY_FIELDS:
        if field not in data:
            continue
        if field == "budget" and data[field] in (None, ""):
            project.budget = None
            continue
        try:
            setattr(project, field, parse_amount(data[field], project.currency))
        except MoneyError as exc:
            raise InvalidInput(errors={field: [str(exc)]}) from None


def _ml_backend(data: dict[str, Any], project: Project) -> None:
    """``ml_backend``: null (none) or {"url", "min_score"?}; the URL's host:port must be in
    ML_BACKEND_HOSTS."""
    if "ml_backend" not in data:
        return
    spec = data["ml_backend"]
    if spec is None:
        project.ml_backend_url, project.ml_backend_min_score = "", None
        return
    from tasks.ml_backend import backend_url_problem

    url = spec["url"].strip()
    problem = backend_url_problem(url)
    if problem:
        raise InvalidInput(
            "The ML backend's URL is not allowed.",
            code="ml_backend_not_allowed",
            errors={"ml_backend": {"url": [problem]}},
        )
    project.ml_backend_url = url
    project.ml_backend_min_score = spec.get("min_score")


def _auto_accept(data: dict[str, Any], project: Project) -> bool:
    """``auto_accept``: null (off) or an object of :data:`AUTO_ACCEPT_DEFAULTS`' keys, each
    optional. Returns whether the request set it."""
    if "auto_accept" not in data:
        return False
    spec = data["auto_accept"]
    if spec is None:
        project.auto_accept = None
        return True
    if not isinstance(spec, dict):
        raise InvalidInput(
            errors={"auto_accept": ['null (off), or {"target_accuracy", "confidence", '
                                    '"spot_check_rate", "min_checked"} (each optional).']}
        )  # fmt: skip
    problems: dict[str, list[str]] = {}
    clean: dict[str, float | int] = {}
    for key, value in spec.items():
        if key not in AUTO_ACCEPT_DEFAULTS:
            problems[key] = [f"Unknown; one of: {', '.join(AUTO_ACCEPT_DEFAULTS)}."]
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key == "min_checked":
            if not (isinstance(value, int) and not isinstance(value, bool)) or not (
                1 <= value <= MAX_MIN_CHECKED
            ):
                problems[key] = [f"A whole number from 1 to {MAX_MIN_CHECKED}."]
            else:
                clean[key] = value
            continue
        low, high, words = _AUTO_ACCEPT_RANGES[key]
        ok = number and value == value  # NaN is not a number here
        ok = ok and low <= value <= high if key == "spot_check_rate" else ok and low < value < high
        if not ok:
            problems[key] = [f"A number {words}."]
        else:
            clean[key] = float(value)
    if problems:
        raise InvalidInput(
            "The auto-accept settings are not valid.", errors={"auto_accept": problems}
        )
    project.auto_accept = clean
    return True


def _save_labels(project: Project, labels: list[dict[str, Any]]) -> None:
    Label.objects.bulk_create(
        Label(project=project, order=i, **spec) for i, spec in enumerate(labels)
    )


@transaction.atomic
def project_create(*, owner: User, data: dict[str, Any]) -> Project:
    if owner.role != Role.MANAGER:
        raise InvalidInput("Only managers create projects.")
    kind = data.get("kind")
    if kind not in Kind.values:
        raise InvalidInput(errors={"kind": [f"One of: {', '.join(Kind.values)}."]})
    labels = _labels_in(data.get("labels"), kind)
    project = Project(owner=owner, kind=kind)
    for field in SETTINGS_FIELDS:
        if field in data:
            setattr(project, field, data[field])
    _money(data, project)
    _ml_backend(data, project)
    _auto_accept(data, project)
    _check_settings(project)
    project.save()
    _save_labels(project, labels)
    ProjectMember.objects.create(project=project, user=owner, role=MemberRole.MANAGER)
    return project


@transaction.atomic
def project_update(*, project: Project, data: dict[str, Any]) -> Project:
    """Change settings. Once tasks exist the kind is fixed, and labels may be recoloured or
    added but not removed, renamed or given other keypoints: answers refer to them."""
    project = Project.objects.select_for_update().get(pk=project.pk)
    has_tasks = Task.objects.filter(project=project).exists()
    if "kind" in data and data["kind"] != project.kind:
        if has_tasks:
            raise Conflict("The kind cannot change once the project has tasks.", code="kind_locked")
        if data["kind"] not in Kind.values:
            raise InvalidInput(errors={"kind": [f"One of: {', '.join(Kind.values)}."]})
        project.kind = data["kind"]
    if "mask_mode" in data and data["mask_mode"] != project.mask_mode and has_tasks:
        # Answers were checked against the mode (semantic ones do not overlap).
        raise Conflict(
            "The mask mode cannot change once the project has tasks.", code="mask_mode_locked"
        )
    for field in SETTINGS_FIELDS:
        if field in data:
            setattr(project, field, data[field])
    if "currency" in data and has_tasks and data["currency"] != project.currency:
        raise Conflict(
            "The currency cannot change once the project has tasks.", code="currency_locked"
        )
    _money(data, project)
    _ml_backend(data, project)
    auto_accept_set = _auto_accept(data, project)
    _check_settings(project)
    if "labels" in data or "kind" in data:
        labels = _labels_in(data.get("labels", project_labels(project)), project.kind)
        if has_tasks:
            _check_label_change(project, labels)
        Label.objects.filter(project=project).delete()
        _save_labels(project, labels)
    project.save()
    if auto_accept_set or "gold_pass_score" in data or "iou_threshold" in data:
        hooks.auto_accept_inputs_changed.notify(project.pk)
    if "task_order" in data and project.task_order == TaskOrder.UNCERTAIN_FIRST:
        # The confidences are kept as predictions come; read them afresh once here, so a
        # project switched over routes by its model as it is now.
        task_order.confidences_refresh(project=project)
    return project


def _check_label_change(project: Project, labels: list[dict[str, Any]]) -> None:
    new = {spec["name"]: spec for spec in labels}
    for old in project.labels.all():
        if old.name not in new:
            raise Conflict(
                f"Label {old.name!r} cannot be removed or renamed once the project has tasks.",
                code="labels_locked",
            )
        if new[old.name]["keypoints"] != old.keypoints:
            raise Conflict(
                f"The keypoints of {old.name!r} cannot change once the project has tasks.",
                code="labels_locked",
            )


_TRANSITIONS = {
    "start": ({ProjectState.DRAFT, ProjectState.PAUSED}, ProjectState.ACTIVE),
    "pause": ({ProjectState.ACTIVE}, ProjectState.PAUSED),
}


@transaction.atomic
def project_transition(*, project: Project, action: str) -> Project:
    """draft -> active <-> paused. Starting needs at least one task ready to route."""
    project = Project.objects.select_for_update().get(pk=project.pk)
    allowed_from, target = _TRANSITIONS[action]
    if project.state == target:
        return project  # repeating a start or pause is harmless
    if project.state not in allowed_from:
        raise Conflict(f"A {project.state} project cannot {action}.", code="invalid_state")
    if target == ProjectState.ACTIVE and not Task.objects.filter(project=project).exists():
        raise Conflict(
            "Upload images (and let them finish processing) before starting.", code="no_tasks"
        )
    if target == ProjectState.ACTIVE and project.exam_tasks:
        gold_images = (
            Task.objects.filter(project=project, is_gold=True).values("image").distinct().count()
        )
        if gold_images < project.exam_tasks:
            raise Conflict(
                f"The exam asks for {project.exam_tasks} gold tasks but the project has gold "
                f"answers for {gold_images} images. Add gold, or lower exam_tasks.",
                code="not_enough_gold",
            )
    project.state = target
    project.save(update_fields=["state", "updated_at"])
    if target == ProjectState.ACTIVE:
        # Before any worker claims: the claim's plan needs statistics that know its tasks.
        planner_stats.routing_tables_analyze_on_commit()
        events.project_opened(project)
    else:
        events.project_changed(project.pk)
    return project


def project_client_add(*, project: Project, username: str) -> ProjectMember:
    user = User.objects.filter(username__iexact=username).first()
    if user is None:
        raise InvalidInput(errors={"username": [f"No user named {username!r}."]})
    if user.role != Role.CLIENT:
        raise InvalidInput(errors={"username": [f"{user.username!r} is not a client account."]})
    try:
        with transaction.atomic():
            member, _ = ProjectMember.objects.get_or_create(
                project=project, user=user, defaults={"role": MemberRole.CLIENT}
            )
    except IntegrityError:
        member = ProjectMember.objects.get(project=project, user=user)
    return member


def tasks_mark_gold(*, image: Image, gold: bool = True) -> int:
    """Mark (or unmark) every task of the image as gold; called by ``qa`` when it stores or
    removes the image's expert answer."""
    marked = tasks_mark_gold_bulk(image_ids=[image.pk], gold=gold)
    if not marked:
        raise NotFound("The image has no tasks yet.")
    return marked


def tasks_mark_gold_bulk(*, image_ids: Sequence[int], gold: bool = True) -> int:
    """Mark (or unmark) every task of these images as gold, a chunk of images a query; the
    tasks marked."""
    marked = 0
    for start in range(0, len(image_ids), 500):
        chunk = image_ids[start : start + 500]
        marked += Task.objects.filter(image_id__in=chunk).update(is_gold=gold)
    return marked


# --- Deleting ---------------------------------------------------------------------------------


@transaction.atomic
def project_delete(*, project: Project) -> None:
    """Delete the project with everything of it: images, tasks, answers, gold, consensus,
    exports; its stored files go once the deletion commits (see ``project_files_delete``).
    Conflict when money was earned in it: the ledger is append-only and keeps the project."""
    try:
        project.delete()
    except ProtectedError:
        raise Conflict(
            "Workers have earned money in this project: the ledger keeps it, so it cannot be "
            "deleted. Pause it instead.",
            code="project_has_earnings",
        ) from None


def project_files_delete(sender: type[Project], instance: Project, **kwargs: Any) -> None:
    """``post_delete`` of a project, whatever deleted it: its folder of the store (originals,
    upright copies, thumbnails) goes after the commit."""
    stored_files_delete_on_commit(prefixes=[f"projects/{instance.pk}/"])


def stored_files_delete_on_commit(
    *, names: Iterable[str] = (), prefixes: Iterable[str] = ()
) -> None:
    """Delete these stored files, and every file under these prefixes, by a job sent once the
    current transaction commits (at once outside one).

    After the commit, never before: a transaction that rolls back keeps rows whose files must
    still be there. By a job: a project's files may be many, and a store that is down meanwhile
    is retried for hours. A job that cannot be sent (the broker down) deletes them here.
    """
    from tasks.jobs import stored_files_delete

    names, prefixes = [n for n in names if n], [p for p in prefixes if p]
    if not names and not prefixes:
        return

    def send() -> None:
        try:
            stored_files_delete.send(names, prefixes)
        except Exception:
            logger.warning("the files' deletion job could not be sent; deleting them now")
            try:
                storage.files_delete(names=names, prefixes=prefixes)
            except Exception:
                logger.exception("stored files left behind: %s %s", names, prefixes)

    transaction.on_commit(send)


@transaction.atomic
def image_delete(*, image: Image) -> None:
    """Delete an image and its tasks; its file and thumbnail go from the store after the
    commit. Conflict once a worker has answered or holds one of its tasks: answers are paid
    for, scored and merged, and stay with their image."""
    Image.objects.select_for_update().filter(pk=image.pk).first()
    worked = Assignment.objects.filter(
        task__image=image,
        status__in=[AssignmentStatus.LEASED, *AssignmentStatus.answered()],
    )
    if worked.exists():
        raise Conflict(
            "Workers have answered or hold this image's tasks; it stays with their answers.",
            code="image_in_use",
        )
    names = [image.file.name, image.thumbnail.name]
    project_id = image.project_id
    image.delete()
    stored_files_delete_on_commit(names=names)
    events.project_changed(project_id)
