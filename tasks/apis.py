"""Projects, images and image files over HTTP. Thin: parse, call a service or selector, render."""

from __future__ import annotations

import copy
import mimetypes
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.urls import reverse
from drf_spectacular.serializers import PolymorphicProxySerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd import storage
from crowd.apis import MoneyOut
from crowd.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from crowd.models import Role, User
from crowd.money import format_amount
from crowd.pagination import PAGE_PARAMETERS, page_of, paginate
from crowd.permissions import IsManager, IsManagerOrClient, IsWorker, request_user
from crowd.schema import AnnotationsField
from crowd.throttles import ScopedRateThrottle
from tasks import imports, ingest, predictions, prelabels, routing, selectors, services, stalled
from tasks.hooks import progress_contributions
from tasks.models import (
    Assignment,
    Image,
    Kind,
    MaskMode,
    Project,
    ProjectState,
    StalledAction,
    TaskOrder,
)
from tasks.schema import labels_load, project_labels

# --- Schema-only shapes -----------------------------------------------------------------------
# The serializers named ...Out describe what the views render; they are not used to render.


@extend_schema_field(
    {
        "type": "string",
        "enum": list(Kind.values),
        "description": "What workers mark; fixed once the project has tasks.",
    }
)
class KindField(serializers.CharField):
    """``kind``: read as text and checked by the service, which names the kinds on error."""


LABEL_IN_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "color": {"type": "string", "description": "#rrggbb; a palette colour if omitted."},
        "keypoints": {
            "type": "array",
            "items": {"type": "string"},
            "description": "keypoints projects only: the names of the label's points, in order.",
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}


@extend_schema_field(
    {
        "type": "array",
        "items": {"oneOf": [{"type": "string", "description": "A label name."}, LABEL_IN_SCHEMA]},
        "minItems": 1,
        "maxItems": services.MAX_LABELS,
        "description": "Label names, or {name, color, keypoints} objects (keypoints projects "
        "need keypoints). Once tasks exist, labels may be recoloured or added, not removed.",
    }
)
class LabelsField(serializers.JSONField):
    """``labels``: parsed as JSON and normalised by the service, which names each problem."""


class LabelOut(serializers.Serializer):
    name = serializers.CharField()
    color = serializers.CharField(help_text="#rrggbb")
    keypoints = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="keypoints projects only: the label's point names, in order.",
    )


class MlBackendIn(serializers.Serializer):
    url = serializers.CharField(
        max_length=500,
        help_text="The backend's base address, http(s)://host:port[/path]; its host:port must "
        "be in the server's ML_BACKEND_HOSTS.",
    )
    min_score = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=1,
        help_text="Objects scored below this are not offered to workers as pre-labels.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A PATCH of the project is partial, and DRF carries that into this object's
        # fields: a backend is still named by its URL.
        if "url" not in attrs:
            raise serializers.ValidationError(
                {"url": [self.fields["url"].error_messages["required"]]}
            )
        return attrs


class MlBackendOut(serializers.Serializer):
    url = serializers.CharField()
    min_score = serializers.FloatField(allow_null=True)


class _ProjectBaseOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    instructions = serializers.CharField(allow_blank=True)
    kind = serializers.CharField(help_text="classification, bbox, polygon, keypoints or mask.")
    mask_mode = serializers.CharField(
        help_text="Masks: `instance` (any number of masks a label) or `semantic` (each pixel "
        "at most one label; an answer's masks may not overlap)."
    )
    labels = LabelOut(many=True)
    reward = serializers.CharField(help_text="Per answer, a decimal string in `currency`.")
    currency = serializers.CharField()
    assignment_seconds = serializers.IntegerField(help_text="How long a lease lasts.")
    state = serializers.CharField(help_text="draft, active or paused.")


class ProjectWorkerOut(_ProjectBaseOut):
    """A project as a worker sees it: what the work is and pays, not its configuration."""

    available = serializers.IntegerField(help_text="Answers the project could hand out now.")
    estimated_seconds = serializers.FloatField(
        allow_null=True, help_text="Median active time per task lately; null before any answer."
    )


class ProjectManagerOut(_ProjectBaseOut):
    """A project as its managers (and the clients it is shared with) see it."""

    owner = serializers.CharField(help_text="The creating manager's username.")
    min_overlap = serializers.IntegerField()
    max_overlap = serializers.IntegerField()
    agreement_threshold = serializers.FloatField()
    gold_rate = serializers.FloatField()
    min_worker_score = serializers.FloatField()
    tile_size = serializers.IntegerField(help_text="0: tasks are whole images.")
    tile_overlap = serializers.IntegerField()
    iou_threshold = serializers.FloatField()
    gold_pass_score = serializers.FloatField()
    keypoint_sigma = serializers.FloatField()
    exam_tasks = serializers.IntegerField()
    exam_pass_score = serializers.FloatField()
    review_delay_hours = serializers.IntegerField()
    auto_reject_failed_gold = serializers.BooleanField()
    budget = serializers.CharField(allow_null=True, help_text="Null: no budget.")
    auto_bonus_amount = serializers.CharField()
    auto_bonus_min_score = serializers.FloatField()
    auto_bonus_min_answers = serializers.IntegerField()
    stalled_action = serializers.CharField(help_text="close or reoffer.")
    stalled_grace_minutes = serializers.IntegerField()
    ml_backend = MlBackendOut(
        allow_null=True, help_text="The project's ML backend; null when it names none."
    )
    prelabels = serializers.BooleanField(help_text="Whether workers get the model's pre-labels.")
    prelabel_holdout = serializers.FloatField(
        help_text="The share of tasks (gold alike) drawn to get no pre-labels, to measure "
        "their effect."
    )
    auto_accept = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Managers only: the auto-accept settings (null: off).",
    )
    task_order = serializers.CharField(
        help_text="default (oldest first) or uncertain_first (least sure model first)."
    )
    created_at = serializers.DateTimeField()


class ProjectOut(PolymorphicProxySerializer):
    """A project as the caller's role sees it: a worker's view or a manager's (and client's).
    A class of its own, so ``ProjectOut(many=True)`` and ``page_of`` work as for others."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            component_name="Project",
            serializers=[ProjectWorkerOut, ProjectManagerOut],
            resource_type_field_name=None,
            **kwargs,
        )


class ProjectOutExtension(PolymorphicProxySerializerExtension):
    # drf-spectacular picks an extension by the serializer's exact class, not its bases.
    target_class = "tasks.apis.ProjectOut"


class ImageOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    status = serializers.CharField(help_text="pending, ready or failed.")
    error = serializers.CharField(allow_null=True, help_text="Why it failed; null otherwise.")
    format = serializers.CharField()
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    near_duplicate_of = serializers.IntegerField(
        allow_null=True, help_text="An image of the project this one nearly repeats."
    )
    near_duplicate_distance = serializers.IntegerField(allow_null=True)
    url = serializers.CharField(help_text="The image file (a path on this server).")
    thumbnail_url = serializers.CharField(allow_null=True, help_text="Null until it is made.")


class ImageUploadIn(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        help_text="Images, or .zip archives of images; any number up to the request's limit.",
    )


class UploadedFileOut(serializers.Serializer):
    name = serializers.CharField()
    result = serializers.CharField(help_text="created, duplicate or rejected.")
    id = serializers.IntegerField(required=False, help_text="created: the new image.")
    duplicate_of = serializers.IntegerField(required=False, help_text="duplicate: the image.")
    code = serializers.CharField(required=False, help_text="rejected: why, as a code.")
    error = serializers.CharField(required=False, help_text="rejected: why, in words.")


class RejectedFileOut(serializers.Serializer):
    name = serializers.CharField()
    error = serializers.CharField()
    code = serializers.CharField()


class UploadOut(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = RejectedFileOut(many=True)
    files = UploadedFileOut(many=True, help_text="Every file, archive entries one by one.")


# An invalid upload: the error, and when every file was refused (code upload_rejected) the
# per-file results beside it. (Inline: a Serializer subclass cannot declare ``errors``.)
UploadRejectedOut = inline_serializer(
    "UploadRejectedOut",
    {
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text="Field name -> messages.",
        ),
        "created": serializers.IntegerField(required=False),
        "duplicates": serializers.IntegerField(required=False),
        "rejected": RejectedFileOut(many=True, required=False),
        "files": UploadedFileOut(many=True, required=False),
    },
)


class ImageImportIn(serializers.Serializer):
    prefix = serializers.CharField(
        help_text='The folder of the bucket to import, e.g. "incoming/": every object whose '
        "key starts with it."
    )


class ImageImportFileOut(UploadedFileOut):
    key = serializers.CharField(help_text="The object's key in the bucket.")


class ImageImportOut(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.IntegerField()
    prefix = serializers.CharField()
    status = serializers.CharField(help_text="queued, running, done or failed.")
    error = serializers.CharField(allow_null=True, help_text="failed: why, in words.")
    files_done = serializers.IntegerField(help_text="Objects with a result so far.")
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    skipped = serializers.IntegerField(help_text="Keys an earlier import already brought in.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    files = ImageImportFileOut(many=True, required=False, help_text="One result per object.")


class ImageCountsOut(serializers.Serializer):
    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    ready = serializers.IntegerField()
    failed = serializers.IntegerField()
    near_duplicates = serializers.IntegerField()


class PredictionRunErrorOut(serializers.Serializer):
    image = serializers.IntegerField()
    error = serializers.CharField()


class PredictionRunOut(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.IntegerField()
    status = serializers.CharField(help_text="queued, running, done, failed or canceled.")
    backend_url = serializers.CharField()
    model_version = serializers.CharField(
        allow_null=True, help_text="The backend's model version, once it told it."
    )
    images_total = serializers.IntegerField(help_text="Images without a prediction of it.")
    images_done = serializers.IntegerField(help_text="Of those, asked so far.")
    predicted = serializers.IntegerField(help_text="Predictions stored.")
    failed = serializers.IntegerField(help_text="Images the backend gave no usable answer for.")
    error = serializers.CharField(
        allow_null=True, help_text="failed: why the run stopped; canceled: by whom."
    )
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


# A run with its per-image errors. (Inline: a Serializer subclass cannot declare ``errors``.)
PredictionRunDetailOut = inline_serializer(
    "PredictionRunDetailOut",
    {
        **copy.deepcopy(PredictionRunOut._declared_fields),
        "errors": PredictionRunErrorOut(
            many=True, help_text="Per image, why it has no prediction (the first 1000)."
        ),
    },
)


class ProgressOut(serializers.Serializer):
    tasks = serializers.IntegerField(help_text="All tasks, gold included.")
    done = serializers.IntegerField()
    in_progress = serializers.IntegerField(help_text="Open tasks with a lease out.")
    open = serializers.IntegerField(help_text="Open tasks with no lease out.")
    gold = serializers.IntegerField()
    stalled = serializers.IntegerField(help_text="Open tasks no worker left can answer.")
    assignments_submitted = serializers.IntegerField()
    images = ImageCountsOut()
    spent = MoneyOut(help_text="Paid out to workers so far.")
    # Contributed by the money app.
    committed = MoneyOut(required=False, help_text="Spent plus answers awaiting review.")
    budget = MoneyOut(required=False, allow_null=True)
    median_seconds_per_task = serializers.FloatField(required=False, allow_null=True)
    effective_hourly_rate = MoneyOut(
        required=False, allow_null=True, help_text="Reward over the median time per task."
    )
    hourly_floor = MoneyOut(required=False)
    fair_pay_warning = serializers.CharField(
        required=False, allow_null=True, help_text="Set when workers earn below the floor."
    )
    last_import = ImageImportOut(
        required=False,
        allow_null=True,
        help_text="The latest import from the bucket, as GET .../images/import/{id}/ shows it "
        "without its per-object results (those are there); null if none. Not in live frames.",
    )
    last_prediction_run = PredictionRunOut(
        required=False,
        allow_null=True,
        help_text="The latest run of the ML backend, without its per-image errors; null if "
        "none. Not in live frames.",
    )


class StalledTaskOut(serializers.Serializer):
    task = serializers.IntegerField()
    image = serializers.IntegerField()
    image_name = serializers.CharField()
    region = serializers.ListField(
        child=serializers.IntegerField(), min_length=4, max_length=4, help_text="[x, y, w, h]"
    )
    answers = serializers.IntegerField(help_text="Answers that count.")
    required_overlap = serializers.IntegerField()
    not_counting = serializers.IntegerField(help_text="Rejected or from suspended workers.")
    skipped = serializers.IntegerField(help_text="Skipped or let expire.")
    stalled_since = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField()
    message = serializers.CharField()


class StalledOut(serializers.Serializer):
    count = serializers.IntegerField(help_text="Stalled tasks in all (tasks lists up to 500).")
    workers = serializers.IntegerField(help_text="Workers who may work on the project.")
    action = serializers.CharField(help_text="The project's stalled_action: close or reoffer.")
    grace_minutes = serializers.IntegerField()
    tasks = StalledTaskOut(many=True)


class StalledResolvedOut(StalledOut):
    closed = serializers.IntegerField(required=False, help_text="action close: tasks closed.")
    reoffered = serializers.IntegerField(
        required=False, help_text="action reoffer: tasks offered again."
    )


class ThroughputPointOut(serializers.Serializer):
    t = serializers.DateTimeField(help_text="The minute's start.")
    submitted = serializers.IntegerField()
    done = serializers.IntegerField()


class ThroughputOut(serializers.Serializer):
    bucket_seconds = serializers.IntegerField()
    points = ThroughputPointOut(many=True, help_text="Oldest first, empty minutes included.")


class ClientGrantIn(serializers.Serializer):
    username = serializers.CharField(help_text="A client account's username.")


class ClientGrantOut(serializers.Serializer):
    project = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField(help_text="client")


class LeasedTaskOut(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField()
    image_url = serializers.CharField(help_text="The image file, for this worker only.")
    width = serializers.IntegerField(help_text="The full image's.")
    height = serializers.IntegerField(help_text="The full image's.")
    region = serializers.ListField(
        child=serializers.IntegerField(),
        min_length=4,
        max_length=4,
        help_text="[x, y, w, h]: the part to annotate, in full-image pixels.",
    )


@extend_schema_field(
    {
        "type": "object",
        "description": "An annotation item of the project's kind, with the model's score "
        "(null when it gave none) and model_version.",
        "additionalProperties": True,
        "properties": {
            "label": {"type": "string"},
            "score": {"type": "number", "nullable": True},
            "model_version": {"type": "string"},
        },
        "required": ["label", "score", "model_version"],
    }
)
class PrelabelOut(serializers.JSONField):
    """One pre-label of a lease."""


class LeaseOut(serializers.Serializer):
    id = serializers.IntegerField(help_text="The assignment to submit or skip.")
    status = serializers.CharField(help_text="leased")
    expires_at = serializers.DateTimeField()
    kind = serializers.CharField()
    mask_mode = serializers.CharField(
        help_text="Masks: `instance` (any number of masks a label) or `semantic` (each pixel "
        "at most one label); the same on every kind, where it means nothing."
    )
    labels = LabelOut(many=True)
    instructions = serializers.CharField(allow_blank=True)
    reward = serializers.CharField()
    currency = serializers.CharField()
    task = LeasedTaskOut()
    prelabels = serializers.ListField(
        child=PrelabelOut(),
        help_text="The model's objects in the task's region, to show as editable shapes "
        "(items as the kind has them, with score and model_version); empty when the project "
        "offers none, the image has no prediction, or the task is among the share held out.",
    )


class SubmitOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="submitted, or approved/rejected once reviewed.")
    clipped = serializers.IntegerField(
        help_text="Coordinates a little past the image's edge that were clipped to it."
    )


class RefusedOut(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class SubmitNextOut(SubmitOut):
    next = LeaseOut(
        allow_null=True,
        required=False,
        help_text="With ?next=1 only: the next lease, as next/ answers it; null when nothing "
        "is left for you.",
    )
    next_refused = RefusedOut(
        required=False,
        help_text="Why there is no next lease when you may not work on in this project "
        "(suspended, not qualified): the error next/ would answer.",
    )


class SubmitQueryIn(serializers.Serializer):
    next = serializers.BooleanField(
        required=False,
        default=False,
        help_text="1: answer with the next lease too, saving the worker a round trip.",
    )


class AnswerKeptOut(serializers.Serializer):
    assignment = serializers.IntegerField(required=False)
    status = serializers.CharField(required=False)
    submitted_at = serializers.DateTimeField(required=False, allow_null=True)


# A refused submission: already_submitted names the answer kept in ``errors``; lease_expired
# and skipped have none.
SubmitConflictOut = inline_serializer(
    "SubmitConflictOut",
    {
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "errors": AnswerKeptOut(),
    },
)


class SkipOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="skipped")


class AssignmentHistoryOut(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.IntegerField()
    project_name = serializers.CharField()
    task = serializers.IntegerField()
    status = serializers.CharField(
        help_text="leased, submitted, approved, rejected, skipped or expired."
    )
    leased_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    time_spent_ms = serializers.IntegerField(allow_null=True)
    reward = serializers.CharField()
    currency = serializers.CharField()
    reviewed_at = serializers.DateTimeField(allow_null=True)
    review_reason = serializers.CharField(allow_null=True)


# --- Input ------------------------------------------------------------------------------------


class ProjectIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(allow_blank=True, required=False, max_length=50_000)
    kind = KindField()
    labels = LabelsField()
    min_overlap = serializers.IntegerField(required=False, min_value=1, max_value=50)
    max_overlap = serializers.IntegerField(required=False, min_value=1, max_value=50)
    agreement_threshold = serializers.FloatField(required=False, min_value=0, max_value=1)
    gold_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    reward = serializers.CharField(required=False, max_length=32)
    currency = serializers.CharField(required=False, max_length=3, min_length=3)
    assignment_seconds = serializers.IntegerField(required=False, min_value=1)
    min_worker_score = serializers.FloatField(required=False, min_value=0, max_value=1)
    tile_size = serializers.IntegerField(required=False, min_value=0, max_value=1 << 20)
    tile_overlap = serializers.IntegerField(required=False, min_value=0, max_value=1 << 20)
    iou_threshold = serializers.FloatField(required=False, min_value=0, max_value=1)
    gold_pass_score = serializers.FloatField(required=False, min_value=0, max_value=1)
    keypoint_sigma = serializers.FloatField(required=False, min_value=0, max_value=1)
    exam_tasks = serializers.IntegerField(required=False, min_value=0, max_value=100)
    exam_pass_score = serializers.FloatField(required=False, min_value=0, max_value=1)
    review_delay_hours = serializers.IntegerField(required=False, min_value=0)
    auto_reject_failed_gold = serializers.BooleanField(required=False)
    budget = serializers.CharField(required=False, allow_null=True, max_length=32)
    auto_bonus_amount = serializers.CharField(required=False, max_length=32)
    auto_bonus_min_score = serializers.FloatField(required=False, min_value=0, max_value=1)
    auto_bonus_min_answers = serializers.IntegerField(required=False, min_value=0)
    stalled_action = serializers.ChoiceField(StalledAction.choices, required=False)
    stalled_grace_minutes = serializers.IntegerField(
        required=False, min_value=0, max_value=30 * 24 * 60
    )
    mask_mode = serializers.ChoiceField(MaskMode.choices, required=False)
    ml_backend = MlBackendIn(
        required=False,
        allow_null=True,
        help_text="A Label Studio ML backend to predict the images (null: none); 400 when its "
        "host:port is not in ML_BACKEND_HOSTS.",
    )
    prelabels = serializers.BooleanField(
        required=False, help_text="Show the model's objects to workers as pre-labels."
    )
    auto_accept = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Null (off), or {target_accuracy (0.95), confidence (0.95), spot_check_rate "
        "(0.05), min_checked (30)}: the model alone labels images whose confidence passes a "
        "threshold calibrated on human-checked images (managers only).",
    )
    prelabel_holdout = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        help_text="The share of tasks, drawn at random over all tasks (gold alike), that get "
        "no pre-labels, so their effect on gold scores and time can be measured (default 0.1).",
    )
    task_order = serializers.ChoiceField(
        TaskOrder.choices,
        required=False,
        help_text="Which task of equal need and priority is offered first: default (the "
        "oldest) or uncertain_first (the one whose image the current model version is least "
        "sure of; images without a prediction last).",
    )


def project_json(
    project: Project, user: User, figures: tuple[int, float | None] | None = None
) -> dict[str, Any]:
    """A project as ``user`` may see it; for workers, ``figures`` are its (available,
    median seconds) when the caller read them for many projects at once."""
    data: dict[str, Any] = {
        "id": project.pk,
        "name": project.name,
        "instructions": project.instructions,
        "kind": project.kind,
        "mask_mode": project.mask_mode,
        "labels": project_labels(project),
        "reward": format_amount(project.reward, project.currency),
        "currency": project.currency,
        "assignment_seconds": project.assignment_seconds,
        "state": project.state,
    }
    if user.role == Role.WORKER:
        available, median = figures or selectors.work_figures([project.pk])[project.pk]
        data.update(
            available=available if project.state == ProjectState.ACTIVE else 0,
            estimated_seconds=None if median is None else round(median, 1),
        )
    else:
        data.update(
            owner=project.owner.username,
            min_overlap=project.min_overlap,
            max_overlap=project.max_overlap,
            agreement_threshold=project.agreement_threshold,
            gold_rate=project.gold_rate,
            min_worker_score=project.min_worker_score,
            tile_size=project.tile_size,
            tile_overlap=project.tile_overlap,
            iou_threshold=project.iou_threshold,
            gold_pass_score=project.gold_pass_score,
            keypoint_sigma=project.keypoint_sigma,
            exam_tasks=project.exam_tasks,
            exam_pass_score=project.exam_pass_score,
            review_delay_hours=project.review_delay_hours,
            auto_reject_failed_gold=project.auto_reject_failed_gold,
            budget=None
            if project.budget is None
            else format_amount(project.budget, project.currency),
            auto_bonus_amount=format_amount(project.auto_bonus_amount, project.currency),
            auto_bonus_min_score=project.auto_bonus_min_score,
            auto_bonus_min_answers=project.auto_bonus_min_answers,
            stalled_action=project.stalled_action,
            stalled_grace_minutes=project.stalled_grace_minutes,
            ml_backend={"url": project.ml_backend_url, "min_score": project.ml_backend_min_score}
            if project.ml_backend_url
            else None,
            prelabels=project.prelabels,
            prelabel_holdout=project.prelabel_holdout,
            task_order=project.task_order,
            created_at=project.created_at.isoformat(),
        )
        if user.role == Role.MANAGER:
            data["auto_accept"] = project.auto_accept
    return data


def image_file_url(image_id: int) -> str:
    return reverse("image-file", kwargs={"image_id": image_id})


def image_thumbnail_url(image_id: int) -> str:
    return reverse("image-thumbnail", kwargs={"image_id": image_id})


def image_json(image: Image) -> dict[str, Any]:
    return {
        "id": image.pk,
        "name": image.name,
        "width": image.width,
        "height": image.height,
        "status": image.status,
        "error": image.error or None,
        "format": image.format,
        "size_bytes": image.size_bytes,
        "sha256": image.sha256,
        "near_duplicate_of": image.near_duplicate_of_id,
        "near_duplicate_distance": image.near_duplicate_distance,
        "url": image_file_url(image.pk),
        "thumbnail_url": image_thumbnail_url(image.pk) if image.thumbnail else None,
    }


class ProjectListApi(APIView):
    def get_permissions(self) -> list[Any]:
        return [IsManager()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(
        operation_id="projects_list",
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(ProjectOut, "PaginatedProjectList")},
        description="One page of the caller's projects, newest first: a manager's own, the "
        "active ones for workers (with the work available now and the time a task takes), "
        "and those shared with a client.",
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        # The id breaks ties between projects created in the same instant: pages never
        # overlap.
        rows = (
            selectors.projects_for_user(user).select_related("owner").order_by("-created_at", "-pk")
        )

        def render(page: Iterable[Project]) -> list[dict[str, Any]]:
            projects = list(page)
            labels_load(projects)
            if user.role != Role.WORKER:
                return [project_json(p, user) for p in projects]
            figures = selectors.work_figures([p.pk for p in projects])
            return [project_json(p, user, figures[p.pk]) for p in projects]

        return paginate(request, self, rows, render)

    @extend_schema(
        request=ProjectIn,
        responses={201: ProjectManagerOut},
        description="Managers only: creates a project in the draft state, owned by the caller. "
        "Add images, then start it to hand out tasks.",
    )
    def post(self, request: Request) -> Response:
        data = ProjectIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        project = services.project_create(owner=user, data=dict(data.validated_data))
        return Response(project_json(project, user), status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    def get_permissions(self) -> list[Any]:
        return [IsManager()] if self.request.method in ("PATCH", "DELETE") else [IsAuthenticated()]

    @extend_schema(
        responses={200: ProjectOut},
        description="One project as the caller's role sees it: workers get what the work is "
        "and pays (active projects only), managers and shared clients its settings.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        return Response(project_json(project, request_user(request)))

    @extend_schema(
        request=ProjectIn(partial=True),
        responses={200: ProjectManagerOut},
        description="Managers only: changes the given settings. Once the project has tasks its "
        "kind is fixed and labels may only be recoloured or added (409 otherwise).",
    )
    def patch(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        data = ProjectIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = services.project_update(project=project, data=dict(data.validated_data))
        return Response(project_json(project, request_user(request)))

    @extend_schema(
        request=None,
        responses={204: None},
        description="Managers only: deletes the project and everything of it (images, tasks, "
        "answers, gold, consensus, dataset versions); its files are removed from the store "
        "once the deletion has committed. 409 (project_has_earnings) once workers have earned "
        "money in it: the ledger keeps it.",
    )
    def delete(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        services.project_delete(project=project)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _ProjectActionApi(APIView):
    permission_classes = [IsManager]
    action = ""

    @extend_schema(request=None, responses={200: ProjectManagerOut})
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        project = services.project_transition(project=project, action=self.action)
        return Response(project_json(project, request_user(request)))


@extend_schema_view(
    post=extend_schema(
        description="Managers only: makes the project active, so workers are offered its "
        "tasks (409 without tasks, or without enough gold for its exam). Repeating it changes "
        "nothing."
    )
)
class ProjectStartApi(_ProjectActionApi):
    action = "start"


@extend_schema_view(
    post=extend_schema(
        description="Managers only: stops handing out tasks until the project is started "
        "again. Repeating it changes nothing."
    )
)
class ProjectPauseApi(_ProjectActionApi):
    action = "pause"


class ProjectImagesApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self) -> list[Any]:
        return [IsManager()] if self.request.method == "POST" else [IsManagerOrClient()]

    @extend_schema(
        operation_id="projects_images_list",
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(ImageOut, "PaginatedImageList")},
        description="Managers and the project's clients: one page of the project's images, "
        "with their processing status, near duplicates and file URLs.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        images = selectors.project_images(project)
        return paginate(request, self, images, lambda page: [image_json(i) for i in page])

    @extend_schema(
        request={"multipart/form-data": ImageUploadIn},
        responses={201: UploadOut, 200: UploadOut, 400: UploadRejectedOut},
        description="Managers only: stores one or more images or .zip archives of images. "
        "201 when something was created, 200 when every file was already there; 400 "
        "(upload_rejected, with the per-file results) when every file was refused.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > settings.MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(
                f"The upload is {length:,} bytes; at most {settings.MAX_UPLOAD_BYTES:,} per "
                "request. Split it into several uploads."
            )
        files = request.FILES.getlist("files")
        if not files:
            raise InvalidInput(errors={"files": ["Attach one or more images or .zip archives."]})
        report = ingest.images_upload(project=project, user=request_user(request), files=files)
        body = report.as_json()
        if body["created"]:
            return Response(body, status=status.HTTP_201_CREATED)
        if body["duplicates"]:  # all already there: nothing new, nothing wrong
            return Response(body, status=status.HTTP_200_OK)
        raise InvalidInput(
            "No file of the upload was stored: each was rejected (see files).",
            code="upload_rejected",
            errors={"files": [f"{r['name']}: {r['error']}" for r in body["rejected"]]},
            extra=body,
        )


class ProjectImageApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=None,
        responses={204: None},
        description="Managers only: deletes the image and its tasks; its file and thumbnail "
        "are removed from the store once the deletion has committed. 409 (image_in_use) once "
        "a worker has answered or holds one of its tasks.",
    )
    def delete(self, request: Request, project_id: int, image_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        image = project.images.filter(pk=image_id).first()
        if image is None:
            raise NotFound("No such image in this project.")
        services.image_delete(image=image)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectImageImportApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=ImageImportIn,
        responses={202: ImageImportOut},
        description="Managers only, with the files in a bucket: queues a job that ingests "
        "every object under the prefix like an upload (same checks, de-duplication and "
        "processing); a re-run skips the keys already brought in. 409 (no_bucket) when the "
        "files are on this server's disk; 400 (bad_prefix) for an empty, absolute or `..` "
        "prefix, or one reaching the server's own folders.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        prefix = request.data.get("prefix") if isinstance(request.data, dict) else None
        job = imports.images_import_create(
            project=project, user=request_user(request), prefix=prefix
        )
        return Response(imports.image_import_summary(job), status=status.HTTP_202_ACCEPTED)


class ProjectImageImportDetailApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: ImageImportOut},
        description="Managers only: an import's status, counts and one result per object.",
    )
    def get(self, request: Request, project_id: int, import_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        job = project.imports.filter(pk=import_id).first()
        if job is None:
            raise NotFound("No such import of this project.")
        return Response({**imports.image_import_summary(job), "files": job.files})


class ProjectProgressApi(APIView):
    permission_classes = [IsManagerOrClient]

    @extend_schema(
        responses={200: ProgressOut},
        description="Managers and the project's clients: task, image and answer counts and "
        "the money spent; the same figures as the live progress events.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        return Response(
            {
                **selectors.project_progress(project),
                **progress_contributions.collect(project),
                "last_import": imports.last_import(project),
                "last_prediction_run": predictions.last_run(project),
            }
        )


class StalledIn(serializers.Serializer):
    action = serializers.ChoiceField(
        ["close", "reoffer"],
        help_text="close: done now with low confidence on the answers they have; reoffer: "
        "offered again to the workers who skipped them or let their lease run out.",
    )
    tasks = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),  # a BIGINT id
        required=False,
        max_length=10_000,
        help_text="Only these stalled tasks (default: all of the project's).",
    )


class ProjectStalledApi(APIView):
    """Open tasks no worker left can answer: each with the reason, and the manager's way out
    (the project's ``stalled_action`` resolves them on its own after its grace period)."""

    permission_classes = [IsManager]

    @extend_schema(
        responses={200: StalledOut},
        description="Managers only: the open tasks no worker left can answer (up to 500), "
        "each with the reason, and what the project does with them after its grace period.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        return Response(stalled.stalled_report(project))

    @extend_schema(
        request=StalledIn,
        responses={200: StalledResolvedOut},
        description="Managers only: closes the stalled tasks (done, on the answers they have) "
        "or offers them again to the workers who passed them; then the report as GET gives it.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        data = StalledIn(data=request.data)
        data.is_valid(raise_exception=True)
        action, task_ids = data.validated_data["action"], data.validated_data.get("tasks")
        if action == "close":
            done = {"closed": stalled.stalled_close(project, task_ids)}
        else:
            done = {"reoffered": stalled.stalled_reoffer(project, task_ids)}
        return Response({**done, **stalled.stalled_report(project)})


class ProjectThroughputApi(APIView):
    """Answers submitted and tasks completed per minute, for the dashboard's chart."""

    permission_classes = [IsManagerOrClient]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "minutes",
                OpenApiTypes.INT,
                description="How many minutes back, 1 to "
                f"{selectors.THROUGHPUT_MAX_MINUTES} (default 60).",
            )
        ],
        responses={200: ThroughputOut},
        description="Managers and the project's clients: answers submitted and tasks "
        "completed per minute over the last `minutes` minutes, for a chart.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        raw = request.query_params.get("minutes", "60")
        limit = selectors.THROUGHPUT_MAX_MINUTES
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= limit:
            raise InvalidInput(errors={"minutes": [f"A whole number from 1 to {limit}."]})
        return Response(selectors.project_throughput(project, minutes=int(raw)))


class ProjectClientsApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=ClientGrantIn,
        responses={201: ClientGrantOut},
        description="Managers only: gives a client account read access to the project and "
        "its datasets. Granting it again changes nothing.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        username = request.data.get("username") if isinstance(request.data, dict) else None
        if not isinstance(username, str) or not username:
            raise InvalidInput(errors={"username": ["Give the client's username."]})
        member = services.project_client_add(project=project, username=username)
        return Response(
            {"project": project.pk, "username": member.user.username, "role": member.role},
            status=status.HTTP_201_CREATED,
        )


class _ImageFileApi(APIView):
    """Streams a stored image file to a user entitled to see it (404 to everyone else); with
    the files in a bucket, redirects them (302) to a short-lived presigned URL of it instead."""

    field = "file"

    @extend_schema(responses={(200, "image/*"): bytes, 302: None})
    def get(self, request: Request, image_id: int) -> HttpResponseBase:
        image = selectors.image_for_viewer(request_user(request), image_id)
        name = getattr(image, self.field).name
        if not name:
            raise NotFound("The image has no thumbnail yet.")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        url = storage.presigned_url(name, content_type=content_type)
        if url is not None:
            redirect = HttpResponseRedirect(url)
            # Asked again each time: the permission checks above run on every fetch, and the
            # URL outlives neither them nor its expiry.
            redirect["Cache-Control"] = "private, no-store"
            return redirect
        try:
            stored = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise NotFound("The image's file is missing from storage.") from None
        response = FileResponse(stored, content_type=content_type)
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response


@extend_schema_view(
    get=extend_schema(
        description="The image's file, to the project's managers and clients and to a worker "
        "while holding a lease on one of its tasks; 404 to everyone else."
    )
)
class ImageFileApi(_ImageFileApi):
    field = "file"


@extend_schema_view(
    get=extend_schema(
        description="The image's thumbnail, to those who may see the image; 404 before the "
        "thumbnail is made."
    )
)
class ImageThumbnailApi(_ImageFileApi):
    field = "thumbnail"


# --- Work -------------------------------------------------------------------------------------


def assignment_json(assignment: Assignment) -> dict[str, Any]:
    """What a worker sees of a leased task. Identical in shape for gold and real tasks."""
    task, project = assignment.task, assignment.project
    image = task.image
    return {
        "id": assignment.pk,
        "status": assignment.status,
        "expires_at": assignment.expires_at.isoformat(),
        "kind": project.kind,
        "mask_mode": project.mask_mode,
        "labels": project_labels(project),
        "instructions": project.instructions,
        "reward": format_amount(project.reward, project.currency),
        "currency": project.currency,
        "task": {
            "id": task.pk,
            "image": image.pk,
            "image_url": image_file_url(image.pk),
            "width": image.width,
            "height": image.height,
            "region": task.region,
        },
        "prelabels": prelabels.lease_prelabels(project, task),
    }


class SubmitIn(serializers.Serializer):
    annotations = AnnotationsField(
        help_text='Items may also carry "prelabel": the index of the lease\'s pre-label the '
        'object comes from (kept, moved or relabelled), and "outcome", checked against the '
        "one the server computes."
    )
    time_spent_ms = serializers.IntegerField(required=False, min_value=0, max_value=86_400_000)
    prelabel_version = serializers.CharField(
        required=False,
        max_length=200,
        help_text="The model_version of the lease's pre-labels, when the answer names them "
        "(default: the project's current one).",
    )


class AssignmentNextApi(APIView):
    permission_classes = [IsWorker]
    # Per worker: far above what a person annotating gets through, it stops a script that
    # hammers the queue (each call is a claim attempt with row locks).
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "next"

    @extend_schema(
        request=None,
        responses={201: LeaseOut, 204: None},
        description="Workers only: leases the next task of the project for this worker "
        "(201), to submit or skip before expires_at; 204 with no body when nothing is "
        "available to them now. 403 when suspended or not qualified.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        worker = request_user(request)
        project = selectors.project_for_worker(worker, project_id)
        assignment = routing.assignment_next(project=project, worker=worker)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        assignment.project = project
        return Response(assignment_json(assignment), status=status.HTTP_201_CREATED)


class AssignmentSubmitApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=SubmitIn,
        parameters=[
            SubmitQueryIn,
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Repeating a submission with the same key returns its first result.",
            ),
        ],
        responses={200: SubmitNextOut, 409: SubmitConflictOut},
        description="Workers only: the answer to a leased task. A repeat of the same "
        "submission returns the same result; 409 when the task was answered differently, "
        "skipped, or its lease expired and it no longer needs an answer. With `?next=1` the "
        "response also carries `next`, the next lease of the same project (or null), in the "
        "same round trip; a repeat hands over the same lease.",
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        want_next = False
        if "next" in request.query_params:  # the hot path parses no query it was not given
            query = SubmitQueryIn(data=request.query_params)
            query.is_valid(raise_exception=True)
            want_next = query.validated_data["next"]
        data = SubmitIn(data=request.data)
        data.is_valid(raise_exception=True)
        worker = request_user(request)
        assignment = routing.assignment_submit(
            assignment_id=assignment_id,
            worker=worker,
            annotations=data.validated_data["annotations"],
            idempotency_key=request.headers.get("Idempotency-Key", ""),
            time_spent_ms=data.validated_data.get("time_spent_ms"),
            prelabel_version=data.validated_data.get("prelabel_version"),
        )
        body: dict[str, Any] = {
            "id": assignment.pk,
            "status": assignment.status,
            "clipped": assignment.clipped,
        }
        if want_next:
            body.update(_next_after(worker, assignment.project))
        return Response(body)


def _next_after(worker: User, project: Project) -> dict[str, Any]:
    """``next`` (and why there is none, when the worker may not go on) for a submit's answer,
    on the project the submit read: the answer already counts, so a refusal here is reported,
    not raised."""
    try:
        selectors.project_open_to_workers(project)
        lease = routing.assignment_next(project=project, worker=worker, after_answer=True)
    except (NotFound, Forbidden) as exc:
        return {"next": None, "next_refused": {"detail": exc.detail, "code": exc.code}}
    if lease is None:
        return {"next": None}
    lease.project = project
    return {"next": assignment_json(lease)}


class AssignmentSkipApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=None,
        responses={200: SkipOut},
        description="Workers only: gives a leased task back; it is not offered to this worker "
        "again. Skipping again changes nothing; 409 once it was answered.",
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = routing.assignment_skip(
            assignment_id=assignment_id, worker=request_user(request)
        )
        return Response({"id": assignment.pk, "status": assignment.status})


class MyAssignmentsApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(
        operation_id="me_assignments_list",
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(AssignmentHistoryOut, "PaginatedAssignmentHistoryList")},
        description="Workers only: one page of the caller's assignments, newest first, with "
        "their status, reward and review.",
    )
    def get(self, request: Request) -> Response:
        rows = selectors.assignments_for_worker(request_user(request))
        return paginate(
            request,
            self,
            rows,
            lambda page: [
                {
                    "id": a.pk,
                    "project": a.project_id,
                    "project_name": a.project.name,
                    "task": a.task_id,
                    "status": a.status,
                    "leased_at": a.leased_at.isoformat(),
                    "submitted_at": a.submitted_at.isoformat() if a.submitted_at else None,
                    "time_spent_ms": a.time_spent_ms,
                    "reward": format_amount(a.project.reward, a.project.currency),
                    "currency": a.project.currency,
                    "reviewed_at": a.reviewed_at.isoformat() if a.reviewed_at else None,
                    "review_reason": a.review_reason or None,
                }
                for a in page
            ],
        )
