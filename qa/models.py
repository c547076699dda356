from __future__ import annotations

from django.conf import settings
from django.db import models

from tasks.models import Image, Project


class GoldAnswer(models.Model):
    """The expert answer for an image, in full-image pixels. Never shown to workers."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_answers")
    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="gold_answer")
    annotations = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)


class WorkerStatus(models.TextChoices):
    EXAM = "exam"  # taking the project's qualification exam: gold tasks only
    PROBATION = "probation"  # fewer gold answers than it takes to judge them
    ACTIVE = "active"
    SUSPENDED = "suspended"  # no tasks; their answers stop counting in consensus


class WorkerScore(models.Model):
    """A worker's standing in one project: the evidence behind their score, and their status.

    The counts are the evidence (see ``qa.reliability``); ``score`` is derived from them and
    stored so lists can sort by it. ``review_*`` hold the evidence at the manager's last
    reinstatement: automatic suspension judges only what came after it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="worker_scores")
    worker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="worker_scores"
    )
    status = models.CharField(max_length=16, choices=WorkerStatus.choices)
    status_reason = models.CharField(max_length=300, blank=True, default="")
    score = models.FloatField(default=0.5)
    # What the worker is shown of ``score``: a copy taken every SCORE_SHOWN_EVERY answers
    # (see ``qa.services.shown_scores``), and their answer count when it was taken.
    shown_score = models.FloatField(null=True, blank=True)
    shown_answers = models.PositiveIntegerField(default=0)
    gold_seen = models.PositiveIntegerField(default=0)
    gold_passed = models.PositiveIntegerField(default=0)
    gold_score_sum = models.FloatField(default=0.0)
    exam_seen = models.PositiveSmallIntegerField(default=0)
    exam_score_sum = models.FloatField(default=0.0)
    agreement_seen = models.PositiveIntegerField(default=0)
    agreement_sum = models.FloatField(default=0.0)
    review_gold_seen = models.PositiveIntegerField(default=0)
    review_gold_score_sum = models.FloatField(default=0.0)
    review_agreement_seen = models.PositiveIntegerField(default=0)
    review_agreement_sum = models.FloatField(default=0.0)
    # The worker model learnt from all of the project's answers (``qa.worker_model``): how
    # many answers it rests on, the expected accuracy it gives times that many (the evidence
    # that stands in for agreement in the score), and its parameters for the manager.
    model_seen = models.FloatField(default=0.0)
    model_sum = models.FloatField(default=0.0)
    model_params = models.JSONField(default=dict)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # Null when the score suspended them; the manager otherwise.
    suspended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reinstated_at = models.DateTimeField(null=True, blank=True)
    reinstated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "worker"], name="worker_score_unique"),
        ]
        indexes = [models.Index(fields=["project", "status"], name="worker_score_status")]

    @property
    def agreement(self) -> float | None:
        return self.agreement_sum / self.agreement_seen if self.agreement_seen else None


class WorkerModelFit(models.Model):
    """The project's last worker model fit (``qa.worker_model``): when, on how many answers,
    by which method, and the crowd's own parameters. ``requested_answers`` is the answer count
    at which a refit was last asked for, so the periodic sweep asks once per growth step."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")
    method = models.CharField(max_length=32, blank=True, default="")
    answers = models.PositiveIntegerField(default=0)
    workers = models.PositiveIntegerField(default=0)
    requested_answers = models.PositiveIntegerField(default=0)
    requested_at = models.DateTimeField(null=True, blank=True)
    crowd = models.JSONField(default=dict)
    fitted_at = models.DateTimeField(null=True, blank=True)


class GoldResult(models.Model):
    """How one answer to a gold task scored against the gold answer."""

    assignment = models.OneToOneField(
        "tasks.Assignment", on_delete=models.CASCADE, related_name="gold_result"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    passed = models.BooleanField()
    exam = models.BooleanField(default=False)
    # Precision, recall, F1, mean IoU and the match counts: evidence for the manager.
    details = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "worker", "created_at"], name="gold_result_worker"),
        ]


class ConsensusResult(models.Model):
    """The merged answer of one image in one consensus run: what a dataset export ships.

    ``annotations`` are API items plus ``score`` and ``num_votes`` (classification: one item
    with the label). ``contributors`` makes it traceable: per object, which assignment's
    which item went into it, and the weight of every worker who voted.

    A run's rows are never changed: a new run writes its own, and older runs' rows are
    dropped once no export still reads them, so an export is a snapshot of one run.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(
        "ConsensusRun", null=True, on_delete=models.CASCADE, related_name="results"
    )
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="consensus")
    method = models.CharField(max_length=32)
    annotations = models.JSONField(default=list)
    confidence = models.FloatField(null=True, blank=True)
    votes = models.PositiveIntegerField(default=0)
    low_confidence = models.BooleanField(default=False)
    contributors = models.JSONField(default=dict)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "image"], name="consensus_run_image_unique")
        ]


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ConsensusRun(models.Model):
    """One computation of a project's consensus (a job); the results replace earlier ones.

    One copy of the job at a time computes it: the one holding its claim (``claim_token``).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    method = models.CharField(max_length=32, blank=True, default="")
    params = models.JSONField(default=dict)
    images_total = models.PositiveIntegerField(default=0)
    images_done = models.PositiveIntegerField(default=0)
    # What the run counted, as it stood when the run read its answers (``qa.merge.run_tally``):
    # answers, workers, suspensions, gold results, agreement, images. A dataset card reports
    # these, so a version describes its run whatever the project does afterwards.
    tally = models.JSONField(default=dict)
    error = models.CharField(max_length=500, blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The copy of the job building it (crowd/claims.py): its token, and until when its claim
    # holds unless renewed.
    claim_token = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)


class ExportFormat(models.TextChoices):
    COCO = "coco"
    YOLO = "yolo"
    VOC = "voc"
    CSV = "csv"
    RAW = "raw"
    CITYSCAPES = "cityscapes"


class DatasetExport(models.Model):
    """One dataset version: an immutable file built from one consensus run.

    ``version`` numbers a project's exports 1, 2, 3, ...; once ``done``, the file, its
    ``sha256``, the consensus method and parameters and the dataset ``card`` never change.
    ``options`` are the export's settings as validated (filters, split, images or labels).
    One copy of the build job at a time writes it: the one holding its claim (``claim_token``).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    version = models.PositiveIntegerField()
    format = models.CharField(max_length=16, choices=ExportFormat.choices)
    options = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    consensus_run = models.ForeignKey(
        ConsensusRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="exports"
    )
    method = models.CharField(max_length=32, blank=True, default="")
    params = models.JSONField(default=dict)
    file = models.FileField(max_length=255, blank=True, default="")
    file_name = models.CharField(max_length=255, blank=True, default="")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    card = models.TextField(blank=True, default="")
    counts = models.JSONField(default=dict)
    images_total = models.PositiveIntegerField(default=0)
    images_done = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The copy of the job building it (crowd/claims.py): its token, and until when its claim
    # holds unless renewed.
    claim_token = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="export_version_unique")
        ]


class ModelScore(models.Model):
    """A model version's standing in one project, as a worker's ``WorkerScore`` is theirs:
    its answers to the gold images (its predictions of them, scored by the same functions as
    a worker's gold answers), the calibration of its scores against them, and what the
    project's worker model learnt of it (``model_*``, when the last fit counted it).

    Computed from the predictions and gold answers by ``qa.model_scores``; ``fingerprint``
    names the state of those inputs it was computed from, so a stale row is recomputed on
    read. A model is never a worker: no ``WorkerScore``, no assignment, no pay.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_scores")
    model_version = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=200, blank=True, default="")
    gold_seen = models.PositiveIntegerField(default=0)
    gold_passed = models.PositiveIntegerField(default=0)
    gold_score_sum = models.FloatField(default=0.0)
    # Summed match counts over the gold images (matched, missed, extra, wrong_label) and
    # the minimum object score the model's answer was cut at.
    details = models.JSONField(default=dict)
    calibration = models.JSONField(default=dict)
    model_seen = models.FloatField(default=0.0)
    model_sum = models.FloatField(default=0.0)
    model_params = models.JSONField(default=dict)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model_version"], name="model_score_version_unique"
            ),
        ]


class AutoAcceptState(models.Model):
    """A project's auto-accept calibration as last computed (``qa.auto_accept``): the
    threshold (null: off, ``reason`` says why), the human-checked images it was chosen on,
    and the spot-checks' figures. Computed again by the ``auto_accept_run`` job whenever
    predictions, the consensus or the setting change."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")
    model_version = models.CharField(max_length=200, blank=True, default="")
    threshold = models.FloatField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True, default="")
    # checked, correct, accuracy, lower_bound (of the images at or above the threshold),
    # images (all checked), consensus_run, spot_checks {...}, settings as used.
    figures = models.JSONField(default=dict)
    computed_at = models.DateTimeField(auto_now=True)
