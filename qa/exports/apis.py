"""Dataset versions over HTTP: request an export, follow it, list and download them (managers
and the project's clients; for anyone else the project and its exports do not exist)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import FileResponse, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd import storage
from crowd.errors import Conflict, NotFound
from crowd.fields import ID_MAX, ID_MIN
from crowd.models import User
from crowd.pagination import PAGE_PARAMETERS, page_of, paginate
from crowd.permissions import IsManagerOrClient, request_user
from qa.exports.build import ExportIn, export_create, export_retry
from qa.models import DatasetExport, ExportFormat, RunStatus
from qa.selectors import exports_for_user
from tasks.selectors import project_for_user, projects_for_user

# --- Output shapes (what the views render, for the schema) ------------------------------------


class SplitOut(serializers.Serializer):
    train = serializers.FloatField()
    val = serializers.FloatField()
    test = serializers.FloatField()
    seed = serializers.IntegerField()


class ExportOptionsOut(serializers.Serializer):
    """The export's settings as validated from the request."""

    min_confidence = serializers.FloatField()
    low_confidence = serializers.CharField(help_text="include or exclude.")
    include_images = serializers.BooleanField()
    segmentation = serializers.CharField(help_text="polygon or rle.")
    split = SplitOut(required=False, help_text="YOLO and Pascal VOC only, when asked for.")


class ExportParamsOut(serializers.Serializer):
    """The consensus run's parameters and the export's options; empty until the build starts."""

    quorum = serializers.FloatField(required=False)
    model = serializers.CharField(required=False, help_text="The run's worker model, if any.")
    iou_threshold = serializers.FloatField(required=False)
    min_confidence = serializers.FloatField(required=False)
    low_confidence = serializers.CharField(required=False)
    include_images = serializers.BooleanField(required=False)
    segmentation = serializers.CharField(required=False)
    split = SplitOut(required=False)


class ExportCountsOut(serializers.Serializer):
    """What the file holds, once built."""

    images = serializers.IntegerField(required=False)
    annotations = serializers.IntegerField(required=False)
    empty_images = serializers.IntegerField(required=False)
    per_label = serializers.DictField(
        child=serializers.IntegerField(), required=False, help_text="Label -> objects."
    )
    per_subset = serializers.DictField(
        child=serializers.IntegerField(), required=False, help_text="Subset -> images."
    )


class ExportOut(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.IntegerField()
    status = serializers.CharField(help_text="queued, running, done or failed.")
    format = serializers.CharField(help_text="coco, yolo, voc, cityscapes, csv or raw.")
    version = serializers.IntegerField(help_text="The project's versions are 1, 2, 3, ...")
    options = ExportOptionsOut()
    sha256 = serializers.CharField(allow_null=True, help_text="The file's hash, once done.")
    size_bytes = serializers.IntegerField(allow_null=True, help_text="Once done.")
    file_name = serializers.CharField(allow_null=True, help_text="Once done.")
    download_url = serializers.URLField(allow_null=True, help_text="Once done.")
    consensus_run = serializers.IntegerField(
        allow_null=True, help_text="The run the version is built from, once known."
    )
    method = serializers.CharField(allow_null=True, help_text="The consensus's method.")
    params = ExportParamsOut()
    counts = ExportCountsOut()
    card = serializers.CharField(allow_null=True, help_text="The dataset card (Markdown).")
    images_total = serializers.IntegerField()
    images_done = serializers.IntegerField()
    error = serializers.CharField(allow_null=True, help_text="Why the build failed, or null.")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class ExportListedOut(ExportOut):
    project_name = serializers.CharField()


class ExportsQuery(serializers.Serializer):
    project = serializers.IntegerField(
        required=False, min_value=ID_MIN, max_value=ID_MAX, help_text="Only this project's."
    )
    format = serializers.ChoiceField(ExportFormat.values, required=False)
    status = serializers.ChoiceField(RunStatus.values, required=False)


# A COCO file (shared/API.md): the download of a coco export that ships no images.
_NUMBERS = {"type": "array", "items": {"type": "number"}}
COCO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A standard COCO file; annotations also carry score and num_votes, and a "
    "classification's images their label, score and num_votes.",
    "properties": {
        "info": {
            "type": "object",
            "properties": {
                name: {"type": "string"}
                for name in ("description", "version", "contributor", "url")
            },
        },
        "licenses": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "url": {"type": "string"},
                },
            },
        },
        "categories": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "supercategory": {"type": "string"},
                    "keypoints": {"type": "array", "items": {"type": "string"}},
                    "skeleton": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "integer"}},
                    },
                },
                "required": ["id", "name"],
            },
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "file_name": {"type": "string"},
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "label": {"type": "string"},
                    "score": {"type": "number"},
                    "num_votes": {"type": "integer"},
                },
                "required": ["id", "file_name", "width", "height"],
            },
        },
        "annotations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "image_id": {"type": "integer"},
                    "category_id": {"type": "integer"},
                    "bbox": _NUMBERS,
                    "area": {"type": "number"},
                    "segmentation": {
                        "oneOf": [
                            {"type": "array", "items": _NUMBERS},
                            {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "array", "items": {"type": "integer"}},
                                    "counts": {"type": "string"},
                                },
                                "required": ["size", "counts"],
                            },
                        ]
                    },
                    "keypoints": _NUMBERS,
                    "num_keypoints": {"type": "integer"},
                    "iscrowd": {"type": "integer"},
                    "score": {"type": "number"},
                    "num_votes": {"type": "integer"},
                },
                "required": ["id", "image_id", "category_id", "score", "num_votes"],
            },
        },
    },
    "required": ["info", "licenses", "categories", "images", "annotations"],
}


def export_json(export: DatasetExport, request: Request) -> dict[str, Any]:
    done = export.status == RunStatus.DONE
    return {
        "id": export.pk,
        "project": export.project_id,
        "status": export.status,
        "format": export.format,
        "version": export.version,
        "options": export.options,
        "sha256": export.sha256 or None,
        "size_bytes": export.size_bytes if done else None,
        "file_name": export.file_name or None,
        "download_url": request.build_absolute_uri(reverse("export-download", args=[export.pk]))
        if done
        else None,
        "consensus_run": export.consensus_run_id,
        "method": export.method or None,
        "params": export.params,
        "counts": export.counts,
        "card": export.card or None,
        "images_total": export.images_total,
        "images_done": export.images_done,
        "error": export.error or None,
        "created_at": export.created_at.isoformat(),
        "finished_at": export.finished_at.isoformat() if export.finished_at else None,
    }


def export_for_user(user: User, export_id: int) -> DatasetExport:
    export = (
        DatasetExport.objects.filter(pk=export_id, project__in=projects_for_user(user))
        .select_related("project")
        .first()
    )
    if export is None:
        raise NotFound("No such export.")
    return export


class ProjectExportsApi(APIView):
    """A project's dataset versions: list them, or request a new one."""

    permission_classes = [IsManagerOrClient]

    @extend_schema(
        request=ExportIn,
        responses={202: ExportOut},
        description="Request a new dataset version of the project (managers and the "
        "project's clients). It is numbered and queued at once and built in the background: "
        "follow it with `GET /exports/{id}/`.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        data = ExportIn(data=request.data, context={"project": project})
        data.is_valid(raise_exception=True)
        export = export_create(project=project, user=user, **data.validated_data)
        return Response(export_json(export, request), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="projects_exports_list",
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(ExportOut, "PaginatedExportList")},
        description="The project's dataset versions, newest version first, paginated "
        "(managers and the project's clients).",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        exports = DatasetExport.objects.filter(project=project).order_by("-version")
        return paginate(
            request, self, exports, lambda page: [export_json(e, request) for e in page]
        )


class FormatIsAFilter(DefaultContentNegotiation):
    """Content negotiation where ``?format=`` is a filter (an export format), not DRF's choice
    of renderer: only the Accept header chooses one."""

    def filter_renderers(
        self, renderers: Iterable[BaseRenderer], format: str
    ) -> list[BaseRenderer]:
        return list(renderers)


class ExportsApi(APIView):
    """Every dataset version the caller may download, across projects."""

    permission_classes = [IsManagerOrClient]
    content_negotiation_class = FormatIsAFilter

    @extend_schema(
        operation_id="exports_list",
        parameters=[ExportsQuery, *PAGE_PARAMETERS],
        responses={200: page_of(ExportListedOut, "PaginatedExportListedList")},
        description="Every dataset version the caller may download, newest first, paginated: "
        "a manager's of the projects they manage, a client's of the projects shared with them "
        "(workers: 403). Each is as `GET /exports/{id}/` renders it, plus the project's name; "
        "`?project`, `?format` and `?status` narrow the list.",
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        query = ExportsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        exports = exports_for_user(
            user,
            project_id=query.validated_data.get("project"),
            fmt=query.validated_data.get("format"),
            status=query.validated_data.get("status"),
        )
        return paginate(
            request,
            self,
            exports,
            lambda page: [
                {**export_json(e, request), "project_name": e.project.name} for e in page
            ],
        )


class ExportApi(APIView):
    permission_classes = [IsManagerOrClient]

    @extend_schema(
        responses={200: ExportOut},
        description="One dataset version: its status while it builds, then its hash, size, "
        "counts, dataset card and download URL (managers and the project's clients).",
    )
    def get(self, request: Request, export_id: int) -> Response:
        user = request_user(request)
        return Response(export_json(export_for_user(user, export_id), request))


class ExportRetryApi(APIView):
    permission_classes = [IsManagerOrClient]

    @extend_schema(
        request=None,
        responses={202: ExportOut},
        description="Build a failed version again (managers and the project's clients): same "
        "number, options and consensus run. A build that fails is retried automatically "
        "first (the version stays `queued`, with the reason in `error`); this is for one that "
        "failed for good, for instance after the file store was down longer than the "
        "retries last. 409 (export_not_failed) for any other version.",
    )
    def post(self, request: Request, export_id: int) -> Response:
        export = export_for_user(request_user(request), export_id)
        export = export_retry(export=export)
        return Response(export_json(export, request), status=status.HTTP_202_ACCEPTED)


class ExportDownloadApi(APIView):
    """The version's file, streamed; its sha256 is the ETag."""

    permission_classes = [IsManagerOrClient]

    @extend_schema(
        responses={
            (200, "application/json"): COCO_SCHEMA,  # COCO without images
            (200, "application/zip"): OpenApiTypes.BINARY,
            302: None,
            304: None,
        },
        description="The version's file (managers and the project's clients): a COCO export "
        "without images is a `.json` file, any other a `.zip`. 409 until it is done; its "
        "sha256 is the ETag, so `If-None-Match` answers 304. With the files in a bucket, 302 to "
        "a short-lived presigned URL of the file instead.",
    )
    def get(self, request: Request, export_id: int) -> Any:
        user = request_user(request)
        export = export_for_user(user, export_id)
        if export.status != RunStatus.DONE:
            raise Conflict(f"The export is {export.status}, not done.", code="export_not_ready")
        etag = f'"{export.sha256}"'
        if request.headers.get("If-None-Match") == etag:
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
            response["ETag"] = etag
            return response
        content_type = (
            "application/json" if export.file_name.endswith(".json") else "application/zip"
        )
        url = storage.presigned_url(
            export.file.name, content_type=content_type, download_name=export.file_name
        )
        if url is not None:
            redirect = HttpResponseRedirect(url)
            redirect["ETag"] = etag
            redirect["X-Content-SHA256"] = export.sha256
            redirect["Cache-Control"] = "private, no-store"
            return redirect
        download = FileResponse(
            export.file.open("rb"), as_attachment=True, filename=export.file_name,
            content_type=content_type,
        )  # fmt: skip
        download["ETag"] = etag
        download["Content-Length"] = str(export.size_bytes)
        download["X-Content-SHA256"] = export.sha256
        return download
