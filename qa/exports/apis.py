"""Dataset versions over HTTP: request an export, follow it, download it (managers and the
project's clients; for anyone else the project and its exports do not exist)."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd.errors import Conflict, NotFound
from crowd.models import User
from crowd.permissions import IsManagerOrClient, request_user
from qa.exports.build import ExportIn, export_create
from qa.models import DatasetExport, RunStatus
from tasks.selectors import project_for_user, projects_for_user


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

    @extend_schema(request=ExportIn, responses={202: dict})
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        data = ExportIn(data=request.data, context={"project": project})
        data.is_valid(raise_exception=True)
        export = export_create(project=project, user=user, **data.validated_data)
        return Response(export_json(export, request), status=status.HTTP_202_ACCEPTED)

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        exports = DatasetExport.objects.filter(project=project).order_by("-version")
        return Response([export_json(e, request) for e in exports])


class ExportApi(APIView):
    permission_classes = [IsManagerOrClient]

    def get(self, request: Request, export_id: int) -> Response:
        user = request_user(request)
        return Response(export_json(export_for_user(user, export_id), request))


class ExportDownloadApi(APIView):
    """The version's file, streamed; its sha256 is the ETag."""

    permission_classes = [IsManagerOrClient]

    @extend_schema(
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,  # COCO without images
            (200, "application/zip"): OpenApiTypes.BINARY,
            304: None,
        }
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
        download = FileResponse(
            export.file.open("rb"), as_attachment=True, filename=export.file_name,
            content_type=content_type,
        )  # fmt: skip
        download["ETag"] = etag
        download["Content-Length"] = str(export.size_bytes)
        download["X-Content-SHA256"] = export.sha256
        return download
