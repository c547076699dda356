"""Quality over HTTP: gold answers, workers' scores and status, agreement (managers); a
worker's own standing."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from drf_spectacular.utils import OpenApiTypes, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd.errors import NotFound
from crowd.fields import ID_MAX, ID_MIN, StrictCharField, messages
from crowd.models import Role
from crowd.permissions import IsManager, IsManagerOrClient, IsWorker, request_user
from qa import merge, selectors, services
from qa.models import ConsensusRun, GoldAnswer
from tasks.models import Task
from tasks.selectors import project_for_manager, project_for_user, project_for_worker


def gold_json(gold: GoldAnswer, tasks: int) -> dict[str, object]:
    return {
        "image": gold.image_id,
        "annotations": gold.annotations,
        "tasks": tasks,
        "updated_at": gold.updated_at.isoformat(),
    }


@extend_schema_field(OpenApiTypes.INT)
class ImageRefField(serializers.Field):
    """An image id. A value that is not an integer names no image: it reads as None, which
    the service answers like an id of no image of the project (404)."""

    def to_internal_value(self, data: Any) -> int | None:
        if isinstance(data, bool) or not isinstance(data, int) or not ID_MIN <= data <= ID_MAX:
            return None
        return data


class AnnotationListField(serializers.ListField):
    """A list of annotation objects. Its items are checked by the serializer, which names a
    fault by its place (``annotations[0]``), as the checks of the items' content do."""

    child = serializers.DictField()

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        return list(data)


class GoldIn(serializers.Serializer):
    default_error_messages = messages('Send {"image": id, "annotations": [...]}.', "invalid")

    image = ImageRefField(required=False, default=None, allow_null=True)
    annotations = AnnotationListField(
        error_messages=messages("Give the annotations as a list.", "not_a_list", "null"),
        help_text="Items as in an answer of the project's kind, in full-image pixels.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors = {
            f"annotations[{index}]": ["Each annotation is a JSON object."]
            for index, item in enumerate(attrs["annotations"])
            if not isinstance(item, dict)
        }
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class GoldApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(request=GoldIn)
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = GoldIn(data=request.data)
        data.is_valid(raise_exception=True)
        gold, created = services.gold_set(
            project=project,
            image_id=data.validated_data["image"],
            annotations=data.validated_data["annotations"],
            user=user,
        )
        return Response(
            gold_json(gold, gold.image.tasks.count()),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        golds = (
            GoldAnswer.objects.filter(project=project)
            .annotate(task_count=Count("image__tasks"))
            .order_by("pk")
        )
        return Response([gold_json(g, g.task_count) for g in golds])


class GoldDetailApi(APIView):
    permission_classes = [IsManager]

    def delete(self, request: Request, project_id: int, image_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        services.gold_remove(project=project, image_id=image_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Workers ----------------------------------------------------------------------------------


class ProjectWorkersApi(APIView):
    permission_classes = [IsManager]

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return Response(selectors.project_workers(project))


class ProjectWorkerApi(APIView):
    permission_classes = [IsManager]

    def get(self, request: Request, project_id: int, worker_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = selectors.project_worker(project, worker_id)
        if data is None:
            raise NotFound("This worker has not worked on this project.")
        return Response(data)


class SuspendIn(serializers.Serializer):
    reason = StrictCharField(
        required=False, default="", allow_blank=True, trim_whitespace=False,
        error_messages=messages("Give the reason as text.", "invalid", "null"),
        help_text="Shown to the worker; by default that the project's manager suspended them.",
    )  # fmt: skip


class WorkerSuspendApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(request=SuspendIn)
    def post(self, request: Request, project_id: int, worker_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        data = SuspendIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.worker_suspend(
            project=project, worker_id=worker_id, by=user, reason=data.validated_data["reason"]
        )
        return Response(selectors.project_worker(project, worker_id))


class WorkerReinstateApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(request=None)
    def post(self, request: Request, project_id: int, worker_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        services.worker_reinstate(project=project, worker_id=worker_id, by=user)
        return Response(selectors.project_worker(project, worker_id))


class ProjectAgreementApi(APIView):
    permission_classes = [IsManager]

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return Response(selectors.project_agreement(project))


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 2)


class MyProjectStatusApi(APIView):
    """A worker's own standing in a project: whether they may work, and why not."""

    permission_classes = [IsWorker]

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_worker(user, project_id)
        row = services.worker_score_get(project=project, worker_id=user.pk)
        return Response(
            {
                "project": project.pk,
                "status": row.status,
                "reason": row.status_reason or None,
                "score": _rounded(services.shown_score(row)),
            }
        )


# --- Consensus --------------------------------------------------------------------------------


def run_json(run: ConsensusRun) -> dict[str, object]:
    return {
        "id": run.pk,
        "status": run.status,
        "method": run.method or None,
        "params": run.params,
        "images_total": run.images_total,
        "images_done": run.images_done,
        "error": run.error or None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


class ProjectConsensusApi(APIView):
    """The project's consensus runs: start one (managers), see the latest (managers, clients)."""

    def get_permissions(self) -> list[Any]:
        return [IsManager()] if self.request.method == "POST" else [IsManagerOrClient()]

    @extend_schema(request=None, responses={202: dict})
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        run = merge.consensus_run_request(project=project, user=user)
        return Response(run_json(run), status=status.HTTP_202_ACCEPTED)

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        run = ConsensusRun.objects.filter(project=project).order_by("-pk").first()
        return Response({"run": run_json(run) if run else None})


class TaskReferenceApi(APIView):
    """What a reviewer compares a task's answers with: gold, or the consensus so far."""

    permission_classes = [IsManager]

    def get(self, request: Request, project_id: int, task_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        task = Task.objects.filter(pk=task_id, project=project).select_related("image").first()
        if task is None:
            raise NotFound("No such task.")
        return Response({"task": task.pk, **merge.task_reference(project, task)})


class ProjectConsensusResultsApi(APIView):
    """Merged answers per image; managers also see who contributed what."""

    permission_classes = [IsManagerOrClient]

    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        rows = merge.current_results(project).order_by("image_id")
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(rows, request, view=self) or []
        manager = user.role == Role.MANAGER
        return paginator.get_paginated_response(
            [
                {
                    "image": r.image_id,
                    "method": r.method,
                    "annotations": r.annotations,
                    "confidence": r.confidence,
                    "votes": r.votes,
                    "low_confidence": r.low_confidence,
                    **({"contributors": r.contributors} if manager else {}),
                }
                for r in page
            ]
        )
