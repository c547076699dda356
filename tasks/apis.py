"""Projects, images and image files over HTTP. Thin: parse, call a service or selector, render."""

from __future__ import annotations

import mimetypes
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from crowd.errors import InvalidInput, NotFound, PayloadTooLarge
from crowd.models import Role, User
from crowd.money import format_amount
from crowd.permissions import IsManager, IsManagerOrClient, IsWorker, request_user
from tasks import ingest, routing, selectors, services, stalled
from tasks.hooks import progress_contributions
from tasks.models import Assignment, Image, Project, ProjectState, StalledAction
from tasks.schema import labels_load, project_labels


class ProjectIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(allow_blank=True, required=False, max_length=50_000)
    kind = serializers.CharField()
    labels = serializers.JSONField()
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
            created_at=project.created_at.isoformat(),
        )
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

    def get(self, request: Request) -> Response:
        user = request_user(request)
        projects = list(selectors.projects_for_user(user).select_related("owner"))
        labels_load(projects)
        if user.role != Role.WORKER:
            return Response([project_json(p, user) for p in projects])
        figures = selectors.work_figures([p.pk for p in projects])
        return Response([project_json(p, user, figures[p.pk]) for p in projects])

    @extend_schema(request=ProjectIn)
    def post(self, request: Request) -> Response:
        data = ProjectIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        project = services.project_create(owner=user, data=dict(data.validated_data))
        return Response(project_json(project, user), status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    def get_permissions(self) -> list[Any]:
        return [IsManager()] if self.request.method == "PATCH" else [IsAuthenticated()]

    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        return Response(project_json(project, request_user(request)))

    @extend_schema(request=ProjectIn(partial=True))
    def patch(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        data = ProjectIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = services.project_update(project=project, data=dict(data.validated_data))
        return Response(project_json(project, request_user(request)))


class _ProjectActionApi(APIView):
    permission_classes = [IsManager]
    action = ""

    @extend_schema(request=None)
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        project = services.project_transition(project=project, action=self.action)
        return Response(project_json(project, request_user(request)))


class ProjectStartApi(_ProjectActionApi):
    action = "start"


class ProjectPauseApi(_ProjectActionApi):
    action = "pause"


class ProjectImagesApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self) -> list[Any]:
        return [IsManager()] if self.request.method == "POST" else [IsManagerOrClient()]

    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(selectors.project_images(project), request, view=self)
        return paginator.get_paginated_response([image_json(i) for i in page or []])

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "ImageUpload", {"files": serializers.ListField(child=serializers.FileField())}
            )
        },
        responses={201: dict},
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


class ProjectProgressApi(APIView):
    permission_classes = [IsManagerOrClient]

    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_user(request_user(request), project_id)
        return Response(
            {**selectors.project_progress(project), **progress_contributions.collect(project)}
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

    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        return Response(stalled.stalled_report(project))

    @extend_schema(request=StalledIn)
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
        request=inline_serializer("ClientGrant", {"username": serializers.CharField()}),
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
    """Streams a stored image file to a user entitled to see it (404 to everyone else)."""

    field = "file"

    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, image_id: int) -> FileResponse:
        image = selectors.image_for_viewer(request_user(request), image_id)
        name = getattr(image, self.field).name
        if not name:
            raise NotFound("The image has no thumbnail yet.")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            stored = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise NotFound("The image's file is missing from storage.") from None
        response = FileResponse(stored, content_type=content_type)
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class ImageFileApi(_ImageFileApi):
    field = "file"


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
    }


class SubmitIn(serializers.Serializer):
    annotations = serializers.JSONField()
    time_spent_ms = serializers.IntegerField(required=False, min_value=0, max_value=86_400_000)


class AssignmentNextApi(APIView):
    permission_classes = [IsWorker]
    # Per worker: far above what a person annotating gets through, it stops a script that
    # hammers the queue (each call is a claim attempt with row locks).
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "next"

    @extend_schema(request=None, responses={201: dict, 204: None})
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

    @extend_schema(request=SubmitIn)
    def post(self, request: Request, assignment_id: int) -> Response:
        data = SubmitIn(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = routing.assignment_submit(
            assignment_id=assignment_id,
            worker=request_user(request),
            annotations=data.validated_data["annotations"],
            idempotency_key=request.headers.get("Idempotency-Key", ""),
            time_spent_ms=data.validated_data.get("time_spent_ms"),
        )
        return Response(
            {"id": assignment.pk, "status": assignment.status, "clipped": assignment.clipped}
        )


class AssignmentSkipApi(APIView):
    permission_classes = [IsWorker]

    @extend_schema(request=None)
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = routing.assignment_skip(
            assignment_id=assignment_id, worker=request_user(request)
        )
        return Response({"id": assignment.pk, "status": assignment.status})


class MyAssignmentsApi(APIView):
    permission_classes = [IsWorker]

    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        rows = selectors.assignments_for_worker(request_user(request))
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response(
            [
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
            ]
        )
