from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce


class Kind(models.TextChoices):
    CLASSIFICATION = "classification"
    BBOX = "bbox"
    POLYGON = "polygon"
    KEYPOINTS = "keypoints"
    MASK = "mask"


class MaskMode(models.TextChoices):
    # Instance: any number of masks a label, which may overlap (each object its own mask).
    INSTANCE = "instance"
    # Semantic: each pixel has at most one label; an answer's masks must not overlap.
    SEMANTIC = "semantic"


class ProjectState(models.TextChoices):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class StalledAction(models.TextChoices):
    # What becomes of a task no worker left can answer (every worker not barred from the
    # project has answered or skipped it) once it has been so for ``stalled_grace_minutes``.
    CLOSE = "close"  # done, with low confidence, on the answers it has
    WAIT = "wait"  # stays open for workers who join later


class TaskOrder(models.TextChoices):
    # Which claimable task routing offers first, after "closest to done" and priority.
    DEFAULT = "default"  # the oldest
    # Active learning: the task whose image the current model version is least sure of
    # (``Task.model_confidence``), tasks of images without a prediction last.
    UNCERTAIN_FIRST = "uncertain_first"


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(
        max_length=16, choices=ProjectState.choices, default=ProjectState.DRAFT
    )

    # Routing and consensus: a task starts at min_overlap answers and grows one at a time up to
    # max_overlap while its answers agree with less confidence than agreement_threshold.
    min_overlap = models.PositiveSmallIntegerField(default=3)
    max_overlap = models.PositiveSmallIntegerField(default=5)
    agreement_threshold = models.FloatField(default=0.7)
    gold_rate = models.FloatField(default=0.1)
    assignment_seconds = models.PositiveIntegerField(default=600)
    min_worker_score = models.FloatField(default=0.0)
    # Quality: shapes match gold and each other at iou_threshold (box or mask IoU; OKS for
    # keypoints); a gold answer passes at gold_pass_score; keypoint names without a COCO
    # sigma use keypoint_sigma. A worker must first pass an exam of exam_tasks gold tasks
    # (mean gold score >= exam_pass_score) when exam_tasks > 0.
    iou_threshold = models.FloatField(default=0.5)
    gold_pass_score = models.FloatField(default=0.7)
    keypoint_sigma = models.FloatField(default=0.05)
    exam_tasks = models.PositiveSmallIntegerField(default=0)
    exam_pass_score = models.FloatField(default=0.8)
    # Masks only (see MaskMode); fixed once the project has tasks.
    mask_mode = models.CharField(
        max_length=8, choices=MaskMode.choices, default=MaskMode.INSTANCE,
        db_default=MaskMode.INSTANCE,
    )  # fmt: skip

    # Pay per approved assignment, in integer minor units of `currency` (cents for USD).
    reward = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="USD")
    # Submitted answers are approved automatically review_delay_hours after submission
    # unless a manager rejects them first; with auto_reject_failed_gold a gold answer that
    # fails its gold check is rejected at once instead.
    review_delay_hours = models.PositiveIntegerField(default=72)
    auto_reject_failed_gold = models.BooleanField(default=False)
    # Optional spending cap in minor units: no task is handed out when approved, submitted
    # and leased work at the reward, plus bonuses, would pass it.
    budget = models.BigIntegerField(null=True, blank=True)
    # Optional automatic bonus: once per project, to a worker whose score reaches
    # auto_bonus_min_score after at least auto_bonus_min_answers answers.
    auto_bonus_amount = models.BigIntegerField(default=0)
    auto_bonus_min_score = models.FloatField(default=0.9)
    auto_bonus_min_answers = models.PositiveIntegerField(default=50)

    # Tasks no worker left can answer (see StalledAction).
    stalled_action = models.CharField(
        max_length=8, choices=StalledAction.choices, default=StalledAction.CLOSE,
        db_default=StalledAction.CLOSE,
    )  # fmt: skip
    stalled_grace_minutes = models.PositiveIntegerField(default=60, db_default=60)

    # Images wider or taller than tile_size are split into tiles overlapping by tile_overlap
    # pixels; 0 disables tiling. Classification never tiles. A mask answer on a tile is still an
    # RLE of the full image, painted inside the tile only.
    tile_size = models.PositiveIntegerField(default=2048)
    tile_overlap = models.PositiveIntegerField(default=256)

    # Model in the loop: the project's ML backend (a Label Studio ML backend; empty: none),
    # whose host:port must be in ML_BACKEND_HOSTS, the score below which its objects are not
    # offered as pre-labels, and whether workers get pre-labels at all.
    ml_backend_url = models.CharField(max_length=500, blank=True, default="", db_default="")
    ml_backend_min_score = models.FloatField(null=True, blank=True)
    prelabels = models.BooleanField(default=False, db_default=False)
    # The share of tasks (all tasks, gold ones alike) drawn to get no pre-labels, so that the
    # crowd's gold scores and times with and without them can be compared (see
    # ``tasks.prelabels``): the draw is a keyed hash of the task, fixed for its life.
    prelabel_holdout = models.FloatField(default=0.1, db_default=0.1)
    # Auto-accept (null: off): {"target_accuracy", "confidence", "spot_check_rate",
    # "min_checked"}. The model alone labels an image whose confidence passes a threshold
    # calibrated on human-checked images to reach the target accuracy at that confidence,
    # except a share drawn for spot-checks (``qa.auto_accept``).
    auto_accept = models.JSONField(null=True, blank=True)
    # The order among claimable tasks of equal need and priority (see TaskOrder).
    task_order = models.CharField(
        max_length=16, choices=TaskOrder.choices, default=TaskOrder.DEFAULT,
        db_default=TaskOrder.DEFAULT,
    )  # fmt: skip

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(min_overlap__gte=1) & Q(max_overlap__gte=F("min_overlap")),
                name="project_overlap_order",
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lt=1), name="project_gold_rate_range"
            ),
            models.CheckConstraint(condition=Q(reward__gte=0), name="project_reward_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tiles(self) -> bool:
        return self.kind != Kind.CLASSIFICATION and self.tile_size > 0

    def lock(self) -> None:
        """Hold this project's row lock until the transaction ends: what reads a project-wide
        total and then writes by it (a claim or a bonus against the budget, the next version
        number) runs one at a time. Call inside ``transaction.atomic``."""
        Project.objects.select_for_update().filter(pk=self.pk).values_list("pk").first()


class MemberRole(models.TextChoices):
    MANAGER = "manager"
    CLIENT = "client"


class ProjectMember(models.Model):
    """Who may manage a project, or download its datasets as a client."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=16, choices=MemberRole.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="project_member_unique")
        ]
        indexes = [models.Index(fields=["user", "role"], name="project_member_user_role")]


class Label(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=100)
    color = models.CharField(max_length=7)
    # Keypoint projects: the ordered names of this label's keypoints ("nose", "left_eye", ...).
    keypoints = models.JSONField(default=list, blank=True)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="label_name_unique"),
        ]


class ImageStatus(models.TextChoices):
    PENDING = "pending"  # stored and checked; the processing job has not run yet
    READY = "ready"  # decoded, thumbnailed, hashed and split into tasks
    FAILED = "failed"  # rejected by the processing job; `error` says why


class Image(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    name = models.CharField(max_length=255)
    file = models.FileField(max_length=255)
    thumbnail = models.FileField(max_length=255, blank=True, default="")
    # Of the bytes as uploaded: what exact de-duplication compares.
    sha256 = models.CharField(max_length=64)
    # 64-bit perceptual hash (DCT), signed to fit a BIGINT; near-duplicates differ in few bits.
    phash = models.BigIntegerField(null=True, blank=True)
    near_duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    near_duplicate_distance = models.PositiveSmallIntegerField(null=True, blank=True)
    near_duplicate_checked = models.BooleanField(default=False)
    format = models.CharField(max_length=16)
    # Of the upright image: EXIF orientation is applied once, at ingestion.
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    orientation = models.PositiveSmallIntegerField(default=1)  # EXIF, of the upload
    size_bytes = models.BigIntegerField()
    status = models.CharField(
        max_length=16, choices=ImageStatus.choices, default=ImageStatus.PENDING
    )
    error = models.CharField(max_length=300, blank=True, default="")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The bucket key an import read it from (empty for uploads): a re-run skips such keys
    # without reading them again. S3 keys are at most 1024 bytes.
    source_key = models.CharField(max_length=1024, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="image_sha256_unique"),
        ]
        indexes = [
            models.Index(fields=["project", "status"], name="image_project_status"),
            models.Index(fields=["project", "source_key"], name="image_project_source_key"),
            models.Index(
                fields=["project", "near_duplicate_checked"], name="image_near_duplicate_checked"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ImportStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImageImport(models.Model):
    """Every object under a prefix of the file bucket, ingested like an upload by a job."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    prefix = models.CharField(max_length=1024)
    status = models.CharField(
        max_length=16, choices=ImportStatus.choices, default=ImportStatus.QUEUED
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # One result per object, as an upload reports its files, plus the object's "key"; written
    # in batches while the job runs, with the counts beside it (read without the list).
    files = models.JSONField(default=list, blank=True)
    files_done = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"import {self.prefix!r} into project {self.project_id}"


class TaskState(models.TextChoices):
    OPEN = "open"  # needs more answers
    DONE = "done"  # has its answers (and, for non-gold tasks, a consensus decision)


class Task(models.Model):
    """A microtask: one region (the whole image or a tile) of one image."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="tasks")
    # Region of the image to annotate, in pixels of the upright image: COCO [x, y, w, h].
    x = models.PositiveIntegerField(default=0)
    y = models.PositiveIntegerField(default=0)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    is_gold = models.BooleanField(default=False)
    state = models.CharField(max_length=8, choices=TaskState.choices, default=TaskState.OPEN)
    priority = models.IntegerField(default=0)
    # The answers this task needs now; starts at the project's min_overlap, may grow.
    required_overlap = models.PositiveSmallIntegerField()
    # Denormalised counters kept by the routing services in the same transaction as the
    # assignment rows they count; tests recount them.
    open_leases = models.PositiveSmallIntegerField(default=0)
    answers = models.PositiveSmallIntegerField(default=0)
    # Set when the task completes: the consensus confidence, and whether max_overlap was
    # reached without the answers agreeing at the project's threshold.
    confidence = models.FloatField(null=True, blank=True)
    low_confidence = models.BooleanField(default=False)
    # Since when no worker left can answer this open task (set and cleared by the sweep);
    # kept on a task closed for it, as the reason it closed with what it had.
    stalled_at = models.DateTimeField(null=True, blank=True)
    # The model version whose prediction completed this task without a human answer
    # (auto-accept); empty for tasks people answered.
    auto_accepted_version = models.CharField(max_length=200, blank=True, default="", db_default="")
    # A manager sent this task's image back to the crowd after the model had labelled it
    # alone: auto-accept never labels it again.
    people_only = models.BooleanField(default=False, db_default=False)
    # How sure the project's current model version is of this task's image (0..1,
    # ``prelabel_core.confidence``); null without a prediction of it. Kept by
    # ``tasks.task_order`` whenever predictions are stored; ``uncertain_first`` routes by it.
    model_confidence = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(open_leases__gte=0)
                & Q(answers__gte=0)
                & Q(required_overlap__gte=F("open_leases") + F("answers")),
                name="task_no_over_assignment",
            ),
        ]
        indexes = [
            # The routing order among claimable tasks: closest to done (fewest answers still
            # needed), then priority, then age; only open, non-gold tasks are in it.
            models.Index(
                F("project"),
                F("required_overlap") - F("answers"),
                F("priority").desc(),
                F("id"),
                condition=Q(state="open", is_gold=False),
                name="task_routing_order",
            ),
            # The same with ``uncertain_first``: the least sure model confidence before the
            # age (tasks without one, as 2, after every other).
            models.Index(
                F("project"),
                F("required_overlap") - F("answers"),
                F("priority").desc(),
                Coalesce(F("model_confidence"), Value(2.0)),
                F("id"),
                condition=Q(state="open", is_gold=False),
                name="task_uncertain_order",
            ),
            models.Index(fields=["project", "id"], condition=Q(is_gold=True), name="task_gold"),
            models.Index(fields=["image"], name="task_image"),
        ]

    @property
    def region(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


class AssignmentStatus(models.TextChoices):
    LEASED = "leased"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SKIPPED = "skipped"

    @classmethod
    def answered(cls) -> tuple[str, ...]:
        """The statuses of an assignment that holds the worker's answer (a rejected one
        too: it was given, and is kept as evidence)."""
        return (cls.SUBMITTED.value, cls.APPROVED.value, cls.REJECTED.value)


class Assignment(models.Model):
    """One worker's lease on, and answer to, one task."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    worker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments"
    )
    status = models.CharField(
        max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.LEASED
    )
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    answer = models.JSONField(null=True, blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    # Pre-labels (null when the project offered none): the model version the task's image
    # had, whether the task was held out, and per object of the answer and per pre-label
    # what became of it (kept, moved, relabelled, deleted, added), as the server computed it
    # at submission (``tasks.prelabels.answer_record``).
    prelabels = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, blank=True, default="")
    # Whether this assignment holds a slot in its task's overlap counters (false for gold
    # tasks, which every worker may answer once and which never complete, and for rejected
    # answers, which stop counting).
    counted = models.BooleanField(default=True)
    # The review: who approved or rejected the answer (None: the automatic rules), when, and
    # the reason the worker is shown.
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A database default too: PostgreSQL's claim inserts leases with raw SQL.
    review_reason = models.CharField(max_length=500, blank=True, default="", db_default="")
    # Whether the worker was told the lease is about to expire (once per lease).
    expiry_warned = models.BooleanField(default=False, db_default=False)

    # Not stored: how many objects of the answer just submitted had coordinates clipped to
    # the image's edge (the submit response says so).
    clipped: int = 0

    class Meta:
        constraints = [
            # A worker never gets a task twice.
            models.UniqueConstraint(fields=["task", "worker"], name="assignment_once_per_worker"),
            # Never more than one open lease per worker per project.
            models.UniqueConstraint(
                fields=["worker", "project"],
                condition=Q(status="leased"),
                name="assignment_one_lease_per_project",
            ),
        ]
        indexes = [
            models.Index(fields=["worker", "status"], name="assignment_worker_status"),
            models.Index(fields=["project", "worker"], name="assignment_project_worker"),
            models.Index(
                fields=["project", "expires_at"],
                condition=Q(status="leased"),
                name="assignment_open_leases",
            ),
            models.Index(fields=["task", "status"], name="assignment_task_status"),
        ]


class PredictionSource(models.TextChoices):
    IMPORT = "import"  # a file or JSON body a manager posted
    BACKEND = "backend"  # a run of the project's ML backend


class Prediction(models.Model):
    """One model version's objects on one image: items as answers have them, each with its
    ``score`` (0..1, or null when the model gave none), and optionally a score of the whole
    image. Importing or predicting the same image and model version again replaces it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="predictions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.CharField(max_length=200)
    annotations = models.JSONField(default=list)
    score = models.FloatField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=PredictionSource.choices)
    run = models.ForeignKey(
        "PredictionRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version"], name="prediction_image_version_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "model_version", "id"], name="prediction_version"),
            models.Index(fields=["project", "id"], name="prediction_project"),
        ]


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


class PredictionRun(models.Model):
    """A job asking the project's ML backend for the images without a prediction of its
    current model version; progress and errors are written while it runs. A manager may
    cancel it: a queued run never starts, a running one stops before its next batch."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prediction_runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    backend_url = models.CharField(max_length=500)
    model_version = models.CharField(max_length=200, blank=True, default="")
    images_total = models.PositiveIntegerField(default=0)
    images_done = models.PositiveIntegerField(default=0)
    predicted = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Per image: [{"image", "error"}], the first MAX_RUN_ERRORS of them.
    errors = models.JSONField(default=list, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    # The claim of the copy of the job building it (crowd/claims.py).
    claim_token = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"prediction run {self.pk} of project {self.project_id}"
