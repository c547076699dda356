"""Dataset exports: request a version, build its file from one consensus run, describe it.

An export is a numbered, immutable dataset version. The job (``qa.jobs.export_build``)
computes a fresh consensus run unless the request named the project's current one, then
streams that run's results, ordered by image, through a writer of ``qa.exports.formats`` into
a temporary file, hashes it and stores it. A run's results are never changed (see
``ConsensusResult``), so the version is a snapshot even while work goes on. Its dataset card
is made once per build, from that run (its results and the figures it recorded when it was
computed), stored with the version and shipped, the same text, inside zipped formats. A
retried job starts the file over; a finished version is never rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, NotRequired, TypedDict

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crowd import claims, storage
from crowd.claims import ClaimLost
from crowd.errors import Conflict, InvalidInput
from crowd.fields import StrictBooleanField, StrictFloatField, StrictIntegerField, messages
from crowd.models import User
from qa import merge
from qa.auto_accept import METHOD as AUTO_ACCEPT_METHOD
from qa.exports import formats
from qa.exports.formats import Counts, Label, Record, Splitter
from qa.models import (
    ConsensusResult,
    ConsensusRun,
    DatasetExport,
    ExportFormat,
    RunStatus,
)
from qa.services import suspended_workers
from tasks.imaging import FORMATS
from tasks.models import Assignment, AssignmentStatus, Image, Kind, MaskMode, Project
from tasks.schema import project_labels
from tasks.services import stored_files_delete_on_commit

logger = logging.getLogger(__name__)

# Unfinished exports a project may have at once: each reads a whole project.
MAX_ACTIVE_EXPORTS = 3
READ_CHUNK = 2000
PROGRESS_EVERY = 2000
NEAR_DUPLICATES_LISTED = 10

KINDS = {
    ExportFormat.COCO: {Kind.CLASSIFICATION, Kind.BBOX, Kind.POLYGON, Kind.KEYPOINTS, Kind.MASK},
    ExportFormat.YOLO: {Kind.CLASSIFICATION, Kind.BBOX, Kind.POLYGON, Kind.KEYPOINTS, Kind.MASK},
    ExportFormat.VOC: {Kind.BBOX, Kind.POLYGON, Kind.MASK},
    ExportFormat.CSV: {Kind.CLASSIFICATION},
    ExportFormat.RAW: {Kind.CLASSIFICATION, Kind.BBOX, Kind.POLYGON, Kind.KEYPOINTS, Kind.MASK},
    ExportFormat.CITYSCAPES: {Kind.MASK},
}
# Formats that ship the images unless told not to, and may be split into subsets.
IMAGE_FORMATS = (ExportFormat.YOLO, ExportFormat.VOC, ExportFormat.CITYSCAPES)
FORMAT_NAMES = {
    ExportFormat.COCO: "COCO",
    ExportFormat.YOLO: "YOLO (Ultralytics)",
    ExportFormat.VOC: "Pascal VOC",
    ExportFormat.CSV: "CSV",
    ExportFormat.RAW: "raw worker answers (JSON Lines)",
    ExportFormat.CITYSCAPES: "Cityscapes (gtFine)",
}


# --- Request -----------------------------------------------------------------------------------


class Split(TypedDict):
    train: float
    val: float
    test: float
    seed: int


class ExportOptions(TypedDict):
    """An export's settings as validated: ``DatasetExport.options``."""

    min_confidence: float
    low_confidence: str  # "include" or "exclude"
    include_images: bool
    segmentation: str  # "polygon" or "rle"
    split: NotRequired[Split]


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            **{name: {"type": "number", "minimum": 0, "maximum": 1} for name in formats.SUBSETS},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
        "additionalProperties": False,
    }
)
class SplitField(serializers.Field):
    """Train/val/test fractions adding up to 1 (a subset left out has none), and a seed."""

    SHAPE = 'Send {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0}.'

    def to_internal_value(self, data: Any) -> Split:
        if not isinstance(data, dict) or set(data) - {*formats.SUBSETS, "seed"}:
            raise serializers.ValidationError(self.SHAPE)
        fractions = {}
        for name in formats.SUBSETS:
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise serializers.ValidationError(f"{name} must be a fraction from 0 to 1.")
            fractions[name] = float(value)
        if abs(sum(fractions.values()) - 1) > 1e-6:
            raise serializers.ValidationError("The fractions must add up to 1.")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise serializers.ValidationError("seed must be a non-negative integer.")
        return Split(
            train=fractions["train"], val=fractions["val"], test=fractions["test"], seed=seed
        )


class ExportIn(serializers.Serializer):
    """A dataset version to build: its format, its options and, optionally, the consensus run
    to build it from."""

    # Checked against the kind of ``context["project"]``; the valid data are the arguments of
    # ``export_create``: ``fmt``, ``options`` and ``consensus_run_id``.

    default_error_messages = messages(
        'Send {"format": "coco" | "yolo" | "voc" | "cityscapes" | "csv" | "raw", ...}.', "invalid"
    )

    format = serializers.ChoiceField(
        ExportFormat.values,
        error_messages=messages(
            f"Must be one of: {', '.join(ExportFormat.values)}.",
            "required",
            "null",
            "invalid_choice",
        ),
    )
    min_confidence = StrictFloatField(
        required=False, default=0.0, min_value=0, max_value=1,
        error_messages=messages(
            "Must be a number from 0 to 1.", "null", "invalid", "overflow", "min_value",
            "max_value",
        ),
        help_text="Leave out shapes (classification: images) of lower confidence.",
    )  # fmt: skip
    low_confidence = serializers.ChoiceField(
        ["include", "exclude"], default="include",
        error_messages=messages('Must be "include" or "exclude".', "null", "invalid_choice"),
        help_text="Whether images whose answers disagreed at the overlap cap are exported.",
    )  # fmt: skip
    include_images = StrictBooleanField(
        required=False,
        error_messages=messages("Must be true or false.", "null", "invalid"),
        help_text="Ship the image files (default: YOLO, Pascal VOC and Cityscapes do, others "
        "do not).",
    )
    split = SplitField(
        required=False, allow_null=True, help_text="YOLO, Pascal VOC and Cityscapes only."
    )
    segmentation = serializers.ChoiceField(
        ["polygon", "rle"], default="polygon",
        error_messages=messages('Must be "polygon" or "rle".', "null", "invalid_choice"),
        help_text="Polygon masks as RLE: COCO exports of polygon projects only (mask "
        "projects' COCO exports are RLE whatever this says).",
    )  # fmt: skip
    consensus_run = StrictIntegerField(
        required=False, allow_null=True,
        error_messages=messages("The id of a consensus run.", "invalid", "min_value", "max_value"),
        help_text="Build from the project's latest finished consensus run (its id) instead "
        "of a fresh one.",
    )  # fmt: skip

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, Mapping) else []
        errors = {key: ["Unknown option."] for key in unknown}
        try:
            values = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **errors}) from None
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return values

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = self.context["project"].kind
        fmt = ExportFormat(attrs["format"])
        if kind not in KINDS[fmt]:
            only = " (Cityscapes is for mask projects)" if fmt == ExportFormat.CITYSCAPES else ""
            raise serializers.ValidationError(
                {"format": [f"A {kind} project cannot be exported as {fmt}{only}."]}
            )
        errors: dict[str, list[str]] = {}
        include_images = attrs.get("include_images", fmt in IMAGE_FORMATS)
        if fmt in (ExportFormat.CSV, ExportFormat.RAW) and include_images:
            errors["include_images"] = [f"A {fmt} export carries no images."]
        if fmt == ExportFormat.YOLO and kind == Kind.CLASSIFICATION and not include_images:
            errors["include_images"] = ["A YOLO classification dataset is its images, by folder."]
        split = attrs.get("split")
        if split is not None and fmt not in IMAGE_FORMATS:
            errors["split"] = ["Only YOLO, Pascal VOC and Cityscapes exports are split."]
        segmentation = attrs["segmentation"]
        if segmentation == "rle" and (
            fmt != ExportFormat.COCO or kind not in (Kind.POLYGON, Kind.MASK)
        ):
            errors["segmentation"] = [
                "Masks as RLE are for COCO exports of polygon and mask projects."
            ]
        if fmt == ExportFormat.VOC and kind == Kind.MASK:
            labels = len(project_labels(self.context["project"]))
            if labels > formats.MAX_SEGMENTATION_INDEX:
                errors["format"] = [
                    f"A Pascal VOC segmentation PNG holds at most "
                    f"{formats.MAX_SEGMENTATION_INDEX} classes; this project has {labels} labels."
                ]
        if fmt == ExportFormat.CITYSCAPES:
            project = self.context["project"]
            labels = len(project_labels(project))
            if labels > formats.MAX_SEGMENTATION_INDEX:
                errors["format"] = [
                    f"A Cityscapes labelIds PNG holds at most {formats.MAX_SEGMENTATION_INDEX} "
                    f"classes; this project has {labels} labels."
                ]
            elif (
                project.mask_mode == MaskMode.INSTANCE
                and labels > formats.MAX_CITYSCAPES_INSTANCE_CLASSES
            ):
                errors["format"] = [
                    f"Cityscapes instance ids (class x 1000 + instance, 16 bits) hold at most "
                    f"{formats.MAX_CITYSCAPES_INSTANCE_CLASSES} classes; this instance-mask "
                    f"project has {labels} labels."
                ]
        if errors:
            raise serializers.ValidationError(errors)
        options = ExportOptions(
            min_confidence=float(attrs["min_confidence"]),
            low_confidence=attrs["low_confidence"],
            include_images=include_images,
            segmentation=segmentation,
        )
        if split is not None:
            options["split"] = split
        return {"fmt": fmt, "options": options, "consensus_run_id": attrs.get("consensus_run")}


def _validated(project: Project, data: object) -> dict[str, Any]:
    request = ExportIn(data=data, context={"project": project})
    if not request.is_valid():
        raise InvalidInput(errors=request.errors)
    return request.validated_data


def export_options(
    project: Project, data: Mapping[str, object]
) -> tuple[ExportFormat, ExportOptions]:
    """The format and options of an export request as a client sends it, validated as the
    API validates it (InvalidInput otherwise)."""
    spec = _validated(project, data)
    return spec["fmt"], spec["options"]


def export_request(
    *, project: Project, user: User | None, data: Mapping[str, object]
) -> DatasetExport:
    """An export requested as a client sends it (``{"format": "coco", ...}``): for scripts
    and the demo, validated by :class:`ExportIn` as the API request is, then queued by
    :func:`export_create`."""
    return export_create(project=project, user=user, **_validated(project, data))


def export_create(
    *,
    project: Project,
    user: User | None,
    fmt: ExportFormat,
    options: ExportOptions,
    consensus_run_id: int | None = None,
) -> DatasetExport:
    """Number the version and queue its build after commit: built from ``consensus_run_id``
    (which must be the project's latest finished run), or from a fresh run."""
    from crowd.jobs import send_on_commit
    from qa.jobs import export_build

    with transaction.atomic():
        # One version number per request, even for concurrent requests.
        project.lock()
        run = None
        if consensus_run_id is not None:
            run = merge.latest_run(project)
            if run is None or run.pk != consensus_run_id:
                raise Conflict(
                    "Only the project's latest finished consensus run can be exported; "
                    "leave consensus_run out to compute a fresh one.",
                    code="stale_consensus_run",
                )
        active = DatasetExport.objects.filter(
            project=project, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        ).count()
        if active >= MAX_ACTIVE_EXPORTS:
            raise Conflict(
                f"This project already has {active} exports in progress; wait for one to finish.",
                code="too_many_exports",
            )
        last = DatasetExport.objects.filter(project=project).aggregate(v=Max("version"))["v"]
        export = DatasetExport.objects.create(
            project=project, version=(last or 0) + 1, format=fmt, options=options,
            consensus_run=run, requested_by=user,
        )  # fmt: skip
        send_on_commit(export_build, export.pk)
    return export


# --- Build -------------------------------------------------------------------------------------


def export_build(*, export_id: int) -> DatasetExport | None:
    """Build the version's file. Safe to run twice, even at once: the copy that claims the
    version builds it (see ``crowd.claims``); another finds it done, or leaves it to the live
    copy that holds it, and returns the version as it stands."""
    claim = claims.claim(
        DatasetExport,
        export_id,
        done=RunStatus.DONE,
        fields=lambda: {
            "status": RunStatus.RUNNING, "started_at": timezone.now(), "error": "",
            "attempts": F("attempts") + 1,
        },
    )  # fmt: skip
    if claim is None:
        return DatasetExport.objects.filter(pk=export_id).first()
    with claim:
        export = DatasetExport.objects.select_related("project").get(pk=export_id)
        _progress_event(export)
        try:
            _build(export, claim)
        except ClaimLost as exc:
            logger.warning("%s; this copy stops, the version left to the other", exc)
            export.refresh_from_db()
            return export
        except Exception as exc:
            export.status, export.error, export.finished_at = (
                RunStatus.FAILED, _failure_reason(exc)[:500], timezone.now(),
            )  # fmt: skip
            if not claim.release(
                status=export.status, error=export.error, finished_at=export.finished_at
            ):
                logger.warning("dataset export %s failed in a copy that had lost it", export_id)
                export.refresh_from_db()
                return export
            _progress_event(export)
            raise
        finally:
            merge.results_prune(export.project)
    export.refresh_from_db()
    _progress_event(export)
    return export


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, storage.STORAGE_ERRORS):
        return f"The file store could not be reached or refused the file: {exc}"
    return str(exc) or type(exc).__name__


def export_retry_pending(*, export_id: int, attempt: int, attempts: int) -> None:
    """The build failed and its job runs again after a back-off: the version shows
    ``queued`` again, with the failure as its ``error``, rather than a ``failed`` that its
    readers would take as final. Called by the job, after the failure was recorded."""
    export = DatasetExport.objects.filter(
        pk=export_id, status=RunStatus.FAILED, claim_token=""
    ).first()
    if export is None:
        return
    error = (
        f"Attempt {attempt} of {attempts} failed; it is retried automatically. {export.error}"
    )[:500]
    if DatasetExport.objects.filter(pk=export_id, status=RunStatus.FAILED, claim_token="").update(
        status=RunStatus.QUEUED, error=error, finished_at=None
    ):
        export.refresh_from_db()
        _progress_event(export)


def export_retry(*, export: DatasetExport) -> DatasetExport:
    """Build a failed version again, as it was requested (same number, options and consensus
    run when it had one): what a manager or client does once the automatic retries have
    given up, for instance after the file store was down for long. Conflict for a version
    that did not fail, or when the project has its maximum of exports in progress."""
    from crowd.jobs import send_on_commit
    from qa.jobs import export_build

    with transaction.atomic():
        export.project.lock()
        active = DatasetExport.objects.filter(
            project=export.project, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        ).count()
        if active >= MAX_ACTIVE_EXPORTS:
            raise Conflict(
                f"This project already has {active} exports in progress; wait for one to finish.",
                code="too_many_exports",
            )
        requeued = DatasetExport.objects.filter(pk=export.pk, status=RunStatus.FAILED).update(
            status=RunStatus.QUEUED, error="", attempts=0, started_at=None, finished_at=None,
            claim_token="", lease_expires_at=None,
        )  # fmt: skip
        if not requeued:
            export.refresh_from_db()
            raise Conflict(
                f"The export is {export.status}; only a failed export is built again.",
                code="export_not_failed",
            )
        send_on_commit(export_build, export.pk)
    export.refresh_from_db()
    _progress_event(export)
    return export


def _build(export: DatasetExport, claim: claims.Claim) -> None:
    """Write, store and record the version's file; ClaimLost, with nothing of it stored or
    recorded, if another copy takes the version over meanwhile."""
    project = export.project
    run = _consensus_for(export, claim)
    export.method, export.params = run.method, {**run.params, **export.options}
    export.images_total = ConsensusResult.objects.filter(run=run).count()
    claim.fence(method=export.method, params=export.params, images_total=export.images_total)
    with tempfile.TemporaryFile() as out:
        counts, card = _write(export, run, out, claim)
        out.seek(0)
        sha256 = _sha256(out)
        out.seek(0)
        ext = "json" if export.format == ExportFormat.COCO and not _zipped(export) else "zip"
        slug = re.sub(r"[^a-z0-9]+", "-", project.name.lower()).strip("-")[:60] or "dataset"
        export.file_name = f"{slug}-v{export.version}-{export.format}.{ext}"
        folder = f"exports/{project.pk}/{export.pk}"
        claim.fence()
        assert export.started_at is not None  # set by the claim
        _files_remove(folder, before=export.started_at)
        export.file = default_storage.save(f"{folder}/{export.file_name}", File(out))
    stored = export.file.name
    try:
        export.size_bytes = default_storage.size(stored)
        export.sha256 = sha256
        export.counts = counts.as_json()
        export.card = card
    except BaseException:
        default_storage.delete(stored)
        raise
    export.status, export.finished_at = RunStatus.DONE, timezone.now()
    export.images_done = export.images_total
    recorded = claim.release(
        file=stored, file_name=export.file_name, size_bytes=export.size_bytes, sha256=sha256,
        counts=export.counts, card=export.card, status=export.status,
        finished_at=export.finished_at, images_done=export.images_done,
    )  # fmt: skip
    if not recorded:
        # Taken over since the check before storing: the file is no version's.
        default_storage.delete(stored)
        raise ClaimLost(f"dataset export {export.pk} was taken over before it was recorded")


def exports_files_delete(sender: type[Project], instance: Project, **kwargs: Any) -> None:
    """``post_delete`` of a project, whatever deleted it: the files of its dataset versions
    go from the store after the commit (the rows went with the project)."""
    stored_files_delete_on_commit(prefixes=[f"exports/{instance.pk}/"])


def _files_remove(folder: str, *, before: datetime) -> None:
    """Delete the files an earlier attempt stored in the version's folder: a build killed
    after storing its file but before recording it would otherwise leave a second file
    behind. Only files from before this attempt started: never those of a copy that lost its
    claim to this one and stored its file just after, which deletes it itself."""
    try:
        _, names = default_storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        path = f"{folder}/{name}"
        if default_storage.get_modified_time(path) < before:
            default_storage.delete(path)


def _consensus_for(export: DatasetExport, claim: claims.Claim) -> ConsensusRun:
    """The run the version is built from: the one named, or a fresh one (computed here, so a
    retried build reuses the run its first attempt started or finished). A copy of the run's
    own job may hold it (a build of this version that lost the version to this one, and is
    still computing): this waits for that copy to finish it, or for its claim to lapse."""
    run = export.consensus_run
    if run is None:
        # Created and recorded together: a build killed in between leaves no orphan run.
        with transaction.atomic():
            run = ConsensusRun.objects.create(
                project=export.project, requested_by=export.requested_by
            )
            claim.fence(consensus_run=run)
            export.consensus_run = run
    while run.status != RunStatus.DONE:
        merge.consensus_compute(run_id=run.pk)
        run.refresh_from_db()
        if run.status != RunStatus.DONE:
            claim.fence()
            time.sleep(min(1.0, claim.lease / 10))
    return run


def _zipped(export: DatasetExport) -> bool:
    return export.format != ExportFormat.COCO or bool(export.options.get("include_images"))


def _sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(formats.COPY_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _labels(project: Project) -> list[Label]:
    return [
        Label(name=x["name"], color=x["color"], keypoints=tuple(x.get("keypoints", ())))
        for x in project_labels(project)
    ]


def _write(
    export: DatasetExport, run: ConsensusRun, out: IO[bytes], claim: claims.Claim
) -> tuple[Counts, str]:
    """Write the version's file to ``out``; returns what it holds and its dataset card. The
    card is made once, when the writer knows the counts: a zipped format ships that very text
    as its README.md, and the version records it."""
    cards: list[str] = []

    def card(counts: Counts) -> str:
        cards.append(dataset_card(export, run, counts))
        return cards[-1]

    counts = _write_file(export, run, out, claim, card)
    return counts, cards[-1] if cards else card(counts)


def _write_file(
    export: DatasetExport,
    run: ConsensusRun,
    out: IO[bytes],
    claim: claims.Claim,
    card: Callable[[Counts], str],
) -> Counts:
    project = export.project
    labels = _labels(project)
    if export.format == ExportFormat.RAW:
        return formats.write_raw(out, raw_answers(export, run), card=card)
    records = export_records(export, run, claim)
    kind = project.kind
    if export.format == ExportFormat.COCO:
        rle = export.options.get("segmentation") == "rle"
        if export.options.get("include_images"):
            return formats.write_coco_zip(
                out, records, kind=kind, labels=labels, description=project.name, card=card,
                rle=rle,
            )  # fmt: skip
        return formats.write_coco(
            out, records, kind=kind, labels=labels, description=project.name, rle=rle
        )
    if export.format == ExportFormat.YOLO:
        split = export.options.get("split") or {}
        subsets = [s for s in formats.SUBSETS if split.get(s, 0) > 0]
        return formats.write_yolo(
            out, records, kind=kind, labels=labels, card=card, subsets=subsets
        )
    if export.format == ExportFormat.VOC:
        return formats.write_voc(out, records, labels=labels, card=card, kind=kind)
    if export.format == ExportFormat.CITYSCAPES:
        return formats.write_cityscapes(
            out, records, labels=labels, card=card,
            instances=project.mask_mode == MaskMode.INSTANCE,
        )  # fmt: skip
    return formats.write_csv(out, records, card=card)


@dataclass(frozen=True)
class _Names:
    """Unique, path-safe file names: the uploaded name when it is unique (by stem, ignoring
    case), else with the image id added."""

    taken: frozenset[str]

    @staticmethod
    def clean(name: str, image_id: int, fmt: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("\\", "/").rsplit("/", 1)[-1])
        base = base.lstrip(".")[:150] or f"image-{image_id}"
        ext = FORMATS.get(fmt, "")
        if ext and not base.lower().endswith(ext):
            base += ext
        return base

    def __call__(self, name: str, image_id: int, fmt: str) -> str:
        base = self.clean(name, image_id, fmt)
        if formats.stem(base).lower() in self.taken:
            head, _, ext = base.rpartition(".")
            return f"{head}-{image_id}.{ext}"
        return base


def _names(run: ConsensusRun) -> _Names:
    stems = Counter(
        formats.stem(_Names.clean(name, image_id, fmt)).lower()
        for image_id, name, fmt in ConsensusResult.objects.filter(run=run).values_list(
            "image_id", "image__name", "image__format"
        )
    )
    return _Names(frozenset(s for s, n in stems.items() if n > 1))


def export_records(
    export: DatasetExport, run: ConsensusRun, claim: claims.Claim | None = None
) -> Iterator[Record]:
    """The run's results as records, by image id, with the export's filters applied. With
    the build's claim, its progress is recorded while the claim holds (ClaimLost otherwise)."""
    options = export.options
    minimum = float(options.get("min_confidence", 0.0))
    exclude_low = options.get("low_confidence") == "exclude"
    shapes = export.project.kind != Kind.CLASSIFICATION
    splitter = None
    if split := options.get("split"):
        splitter = Splitter({s: split.get(s, 0) for s in formats.SUBSETS}, int(split["seed"]))
    names = _names(run)
    done = 0
    for (image_id, name, fmt, width, height, file, items, confidence, votes, low,
         method) in _result_rows(run):  # fmt: skip
        done += 1
        if done % PROGRESS_EVERY == 0:
            if claim is not None:
                claim.fence(images_done=done)
            export.images_done = done
            _progress_event(export)
        if exclude_low and low:
            continue
        if shapes:
            items = [a for a in items if a.get("score", 1.0) >= minimum]
        elif minimum and (confidence is None or confidence < minimum):
            continue
        yield Record(
            id=image_id, file_name=names(name, image_id, fmt), width=width, height=height,
            annotations=items, confidence=confidence, votes=votes, method=method,
            machine_labelled=method == AUTO_ACCEPT_METHOD,
            subset=splitter.assign(image_id, formats.stratum(items)) if splitter else "",
            open=_opener(file) if options.get("include_images") else None,
        )  # fmt: skip


def _result_rows(run: ConsensusRun) -> Iterator[tuple[Any, ...]]:
    """The run's results by image id, ``READ_CHUNK`` at a time, each chunk its own short
    query (keyset pagination on the image id, one result an image a run). Not one cursor
    held open over the whole export: on SQLite an open read keeps its snapshot, and the
    build's progress write (its claim's fence) then fails with "database is locked" as soon
    as the claim's heartbeat has renewed the lease since the read began."""
    last = 0
    while True:
        chunk = list(
            ConsensusResult.objects.filter(run=run, image_id__gt=last)
            .order_by("image_id")
            .values_list(
                "image_id", "image__name", "image__format", "image__width", "image__height",
                "image__file", "annotations", "confidence", "votes", "low_confidence", "method",
            )[:READ_CHUNK]
        )  # fmt: skip
        yield from chunk
        if len(chunk) < READ_CHUNK:
            return
        last = chunk[-1][0]


def _opener(name: str) -> Any:
    return lambda: default_storage.open(name, "rb")


def raw_answers(export: DatasetExport, run: ConsensusRun) -> Iterator[dict[str, Any]]:
    """Every worker answer to the project's real tasks, workers numbered by first appearance
    in this export (``w1``, ``w2``, ...): the client can tell workers apart, not who they are."""
    project = export.project
    suspended = suspended_workers(project_id=project.pk)
    pseudonyms: dict[int, str] = {}
    rows = (
        Assignment.objects.filter(
            project=project,
            task__is_gold=False,
            status__in=[
                AssignmentStatus.SUBMITTED,
                AssignmentStatus.APPROVED,
                AssignmentStatus.REJECTED,
            ],
        )
        .order_by("task__image_id", "task_id", "pk")
        .values_list(
            "task__image_id",
            "task__image__name",
            "task_id",
            "task__x",
            "task__y",
            "task__width",
            "task__height",
            "worker_id",
            "status",
            "answer",
            "time_spent_ms",
            "submitted_at",
        )
    )
    for (image_id, name, task_id, x, y, w, h, worker, status, answer, spent,
         submitted) in rows.iterator(chunk_size=READ_CHUNK):  # fmt: skip
        if worker not in pseudonyms:
            pseudonyms[worker] = f"w{len(pseudonyms) + 1}"
        yield {
            "image": image_id,
            "image_name": name,
            "task": task_id,
            "region": [x, y, w, h],
            "worker": pseudonyms[worker],
            "status": status,
            "counted": worker not in suspended and status != AssignmentStatus.REJECTED,
            "annotations": answer or [],
            "time_spent_ms": spent,
            "submitted_at": submitted.isoformat() if submitted else None,
            "machine_labelled": False,
        }
    # The images the model labelled alone: its answer, as the run shipped it.
    machine = (
        ConsensusResult.objects.filter(run=run, method=AUTO_ACCEPT_METHOD)
        .order_by("image_id")
        .values_list("image_id", "image__name", "annotations", "contributors")
    )
    for image_id, name, items, contributors in machine.iterator(chunk_size=READ_CHUNK):
        yield {
            "image": image_id,
            "image_name": name,
            "task": None,
            "region": None,
            "worker": "model",
            "model_version": (contributors.get("auto_accepted") or {}).get("model_version"),
            "status": "auto_accepted",
            "counted": True,
            "annotations": [
                {k: v for k, v in item.items() if k != "num_votes"} for item in items or []
            ],
            "time_spent_ms": None,
            "submitted_at": None,
            "machine_labelled": True,
        }


def _progress_event(export: DatasetExport) -> None:
    from qa.events import export_changed

    export_changed(export)


# --- Dataset card ------------------------------------------------------------------------------


def dataset_card(export: DatasetExport, run: ConsensusRun, counts: Counts) -> str:
    """The version's card, in Markdown: made once per build (see :func:`_write`), stored
    in ``DatasetExport.card`` and shipped as README.md in zipped formats.

    It describes the version from what it was built from: the export's options, what the
    writer wrote (``counts``), and the consensus run: its method and parameters, its results
    (low-confidence and near-duplicate images) and the figures recorded when it was computed
    (``ConsensusRun.tally``: answers, workers, suspensions, gold, agreement, images). It
    reads no live counts of the project, so later work on the project does not change it;
    only the project's name, kind and labels are read from the project as they are."""
    project = export.project
    options = export.options
    lines = [
        f"# {project.name}: dataset card",
        "",
        f"- Kind: {project.kind}; format: {FORMAT_NAMES[ExportFormat(export.format)]}",
        f"- Consensus: {run.method or 'none'}"
        + "".join(f", {k} {v}" for k, v in sorted(run.params.items())),
        f"- Options: minimum confidence {options.get('min_confidence', 0.0)}, low-confidence "
        f"images {'excluded' if options.get('low_confidence') == 'exclude' else 'included'}, "
        f"images {'included' if options.get('include_images') else 'not included'}"
        + (f", split {_split_text(options['split'])}" if options.get("split") else ""),
        "",
        "## Contents",
        "",
        "| | count |",
        "|---|---:|",
    ]
    if export.format == ExportFormat.RAW:
        lines += [f"| images | {counts.images} |", f"| worker answers | {counts.annotations} |"]
        lines += [f"| images labelled by the model alone | {counts.machine_labelled} |"]
    else:
        lines += [
            f"| images | {counts.images} |",
            f"| annotations | {counts.annotations} |",
            f"| images without annotations | {counts.empty_images} |",
            f"| images labelled by the model alone (auto-accept) | {counts.machine_labelled} |",
        ]
        lines += ["", "| label | annotations |", "|---|---:|"]
        lines += [f"| {_cell(name)} | {counts.per_label.get(name, 0)} |" for name in
                  (label["name"] for label in project_labels(project))]  # fmt: skip
        if counts.per_subset:
            lines += ["", "| subset | images |", "|---|---:|"]
            lines += [f"| {s} | {n} |" for s, n in sorted(counts.per_subset.items())]
    lines += ["", "## Quality", "", *_quality(project, run), "", "## Known issues", ""]
    lines += _known_issues(run)
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _split_text(split: dict[str, Any]) -> str:
    parts = [f"{s} {split[s]:g}" for s in formats.SUBSETS if split.get(s)]
    return " / ".join(parts) + f" (seed {split['seed']}, stratified by label)"


NOT_TALLIED = "- Not recorded for this consensus run (computed before runs recorded them)"


def _quality(project: Project, run: ConsensusRun) -> list[str]:
    """The run's figures as it recorded them, and its low-confidence results."""
    low = ConsensusResult.objects.filter(run=run, low_confidence=True).count()
    tally = run.tally
    if not tally:
        return [NOT_TALLIED, f"- Low-confidence images (answers disagreed at the cap): {low}"]
    gold, agreement = tally["gold"], tally["agreement"]
    lines = [
        f"- Workers: {tally['workers']} answered; {tally['suspended']} suspended "
        "(their answers do not count)",
        f"- Answers counted: {tally['answers']}",
    ]
    if gold["results"]:
        lines.append(
            f"- Gold: {gold['results']} gold answers, mean score {gold['mean_score']:.3f}, "
            f"{gold['passed'] / gold['results']:.1%} passed"
        )
    else:
        lines.append("- Gold: no gold answers yet")
    if project.kind == Kind.CLASSIFICATION:
        lines.append(
            f"- Agreement over {agreement['tasks']} tasks: Fleiss' kappa "
            f"{_fmt(agreement.get('fleiss_kappa'))}, Krippendorff's alpha "
            f"{_fmt(agreement.get('krippendorff_alpha'))}"
        )
    else:
        lines.append(
            f"- Agreement over {agreement['tasks']} tasks: mean pairwise "
            f"{'OKS' if project.kind == Kind.KEYPOINTS else 'IoU'} "
            f"{_fmt(agreement.get('mean_pairwise_iou'))}, mean pairwise F1 "
            f"{_fmt(agreement.get('mean_pairwise_f1'))}"
        )
    lines.append(f"- Low-confidence images (answers disagreed at the cap): {low}")
    model = tally.get("model")
    if model:
        gold_score = model["gold_score"]
        lines.append(
            f"- Model `{model['version']}`"
            f" voted in consensus as one more member of the crowd (weight {model['weight']:.3f}"
            f" from {model['gold_seen']} gold images"
            + (f", mean gold score {gold_score:.3f}" if gold_score is not None else "")
            + f"): of {model['labels']} labels it agreed with {model['agreed']}, and "
            f"{model['rests_on_model']} rest on it (it and at most one worker gave them)"
        )
    accepted = tally.get("auto_accepted")
    if accepted:
        config = accepted.get("settings") or {}
        lines.append(
            f"- Auto-accept: {accepted['images']} images ({accepted['labels']} labels) were "
            f"labelled by the model alone (`{', '.join(accepted['versions'])}`), without a "
            "human answer, where its confidence passed "
            + (
                f"{accepted['threshold']:.4f}"
                if accepted.get("threshold") is not None
                else "a threshold since withdrawn"
            )
            + (
                f", calibrated on {accepted['checked']} human-checked images to reach "
                f"{float(config['target_accuracy']):.1%} accuracy at "
                f"{float(config['confidence']):.0%} confidence (measured {accepted['accuracy']}, "
                f"lower bound {accepted['lower_bound']})"
                if config and accepted.get("checked")
                else ""
            )
            + "; each format flags them (`machine_labelled`)"
        )
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _known_issues(run: ConsensusRun) -> list[str]:
    exported = ConsensusResult.objects.filter(run=run)
    near = (
        Image.objects.filter(pk__in=exported.values("image_id"), near_duplicate_of__isnull=False)
        .order_by("pk")
        .values_list("name", "near_duplicate_of__name", "near_duplicate_distance")
    )
    lines = []
    total = near.count()
    if total:
        lines.append(f"- Near-duplicate images: {total}")
        lines += [
            f"  - `{a}` looks like `{b}` (hash distance {d})"
            for a, b, d in near[:NEAR_DUPLICATES_LISTED]
        ]
    images = run.tally.get("images")
    if images:
        missing = images["ready"] - exported.count()
        if missing > 0:
            lines.append(f"- Images not in this version (no finished answers yet): {missing}")
        if images["failed"]:
            lines.append(f"- Uploads rejected as unreadable: {images['failed']}")
    return lines or ["- None found."]
