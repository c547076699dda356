"""Model predictions over HTTP: imports, the list, runs of the ML backend, and the signed
image URLs backends fetch. Thin: parse, call a service or selector, render."""

from __future__ import annotations

import mimetypes
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd import storage
from crowd.errors import Forbidden, InvalidInput, NotFound
from crowd.pagination import PAGE_PARAMETERS, page_of, paginate
from crowd.parsers import JSONParser
from crowd.permissions import IsManager, request_user
from crowd.schema import ANNOTATIONS_SCHEMA, ErrorOut
from crowd.uploads import (
    Import,
    format_field,
    json_body_import,
    json_file_import,
    strict_field,
)
from tasks import predictions, selectors
from tasks.apis import PredictionRunDetailOut
from tasks.ml_backend import image_signed_check
from tasks.models import Image, ImageStatus
from tasks.prediction_formats import FORMATS

SCORED_ANNOTATIONS = {
    **ANNOTATIONS_SCHEMA,
    "description": "The model's objects, items as the project's kind has them, each with "
    '"score" (0..1; an item without one takes the prediction\'s score, else null).',
}


@extend_schema_field(SCORED_ANNOTATIONS)
class ScoredAnnotationsField(serializers.JSONField):
    """``annotations`` of a prediction, checked by the project's validator."""


class PredictionIn(serializers.Serializer):
    image = serializers.IntegerField(
        required=False, help_text="The image's id, as the image list shows it; or file_name."
    )
    file_name = serializers.CharField(
        required=False,
        help_text="The image's file name (the whole name, else its last part when only one "
        "image has it).",
    )
    annotations = ScoredAnnotationsField()
    score = serializers.FloatField(
        required=False, allow_null=True, help_text="A score of the whole image, 0..1."
    )


class PredictionsImportIn(serializers.Serializer):
    model_version = serializers.CharField(max_length=200)
    predictions = PredictionIn(many=True)
    strict = strict_field("prediction")


class PredictionsFileIn(serializers.Serializer):
    file = serializers.FileField(
        help_text="A JSON file: ours (as the JSON body), a COCO dataset (images matched by "
        "file_name) or results list (image_id and category_id as this server numbers them), "
        "or Label Studio tasks with predictions (images matched by the file name of "
        "data.image)."
    )
    format = format_field(FORMATS)
    model_version = serializers.CharField(
        required=False,
        max_length=200,
        help_text="COCO: required; Label Studio: for predictions that name none.",
    )
    strict = strict_field("prediction")


class RejectedPredictionOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="The item's position in its list of the input.")
    item = serializers.CharField(help_text='Where it is, e.g. "predictions[3]", "images[0]".')
    error = serializers.CharField()


class PredictionsImportOut(serializers.Serializer):
    created = serializers.IntegerField(help_text="Predictions stored (replacing older ones).")
    rejected = RejectedPredictionOut(many=True, help_text="strict=false: those not stored.")


class PredictionOut(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField()
    model_version = serializers.CharField()
    annotations = ScoredAnnotationsField()
    score = serializers.FloatField(allow_null=True, help_text="Of the whole image, if given.")
    source = serializers.CharField(help_text="import or backend.")  # type: ignore[assignment]
    run = serializers.IntegerField(allow_null=True, help_text="backend: the run that made it.")
    created_at = serializers.DateTimeField()


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput(errors={name: ["An id: a whole number."]})
    return int(raw)


class ProjectPredictionsApi(APIView):
    permission_classes = [IsManager]
    parser_classes = [JSONParser]  # files go to .../predictions/file/

    @extend_schema(
        operation_id="projects_predictions_list",
        parameters=[
            *PAGE_PARAMETERS,
            OpenApiParameter("image", OpenApiTypes.INT, description="Only this image's."),
            OpenApiParameter("model_version", OpenApiTypes.STR, description="Only this version's."),
        ],
        responses={200: page_of(PredictionOut, "PaginatedPredictionList")},
        description="Managers of the project only: one page of its predictions, oldest first.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        rows = predictions.predictions_for(
            project,
            image=_int_param(request, "image"),
            model_version=request.query_params.get("model_version"),
        )
        return paginate(
            request, self, rows, lambda page: [predictions.prediction_json(p) for p in page]
        )

    @extend_schema(
        request=PredictionsImportIn,
        responses={201: PredictionsImportOut},
        description="Managers of the project only: stores a model's predictions per image and "
        "model version, replacing any earlier prediction of the same image and version; "
        "items are checked like answers. 400 names every invalid item and stores nothing "
        "(strict, the default); with strict=false the valid ones are stored and the others "
        "listed under rejected. Up to DATA_UPLOAD_MAX_MEMORY_SIZE: larger sets, and COCO or "
        "Label Studio files, go to .../predictions/file/.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        read = json_body_import(
            request,
            shape='{"model_version", "predictions": [...]}',
            code="invalid_predictions_file",
        )
        return _predictions_imported(project, read)


def _predictions_imported(project: Any, read: Import, model_version: str | None = None) -> Response:
    report = predictions.predictions_import(
        project=project,
        data=read.data,
        format_name=read.format_name,
        model_version=model_version,
        strict=read.strict,
    )
    return Response(report, status=status.HTTP_201_CREATED)


class ProjectPredictionsFileApi(APIView):
    permission_classes = [IsManager]
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="projects_predictions_file_create",
        request={"multipart/form-data": PredictionsFileIn},
        responses={201: PredictionsImportOut},
        description="Managers of the project only: imports a predictions file (up to "
        "MAX_PREDICTIONS_BYTES): ours, COCO or Label Studio JSON, read as the JSON import "
        "reads ours (the same checks, strict by default). A file that cannot be read (not "
        "JSON, an unknown shape) is a 400 invalid_predictions_file either way.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        read = json_file_import(
            request,
            limit=settings.MAX_PREDICTIONS_BYTES,
            what="predictions file",
            formats=FORMATS,
        )
        return _predictions_imported(project, read, read.fields.get("model_version") or None)


class ProjectPredictionRunApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: PredictionRunDetailOut},
        description="Managers of the project only: the latest run of its ML backend, with "
        "progress and per-image errors; 404 before the first.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        run = project.prediction_runs.order_by("-pk").first()
        if run is None:
            raise NotFound("The ML backend has not been run for this project.")
        return Response(predictions.run_json(run))

    @extend_schema(
        request=None,
        responses={202: PredictionRunDetailOut},
        description="Managers of the project only: queues a job asking the project's ML "
        "backend (health, setup, then predict in batches) for every ready image without a "
        "prediction of its current model version. 409 no_ml_backend, no_public_url, or "
        "prediction_run_active (errors.run names it); 400 ml_backend_not_allowed when the "
        "backend's host is no longer in ML_BACKEND_HOSTS.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        run = predictions.prediction_run_request(project=project, user=request_user(request))
        return Response(predictions.run_json(run), status=status.HTTP_202_ACCEPTED)


class ProjectPredictionRunDetailApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: PredictionRunDetailOut},
        description="Managers of the project only: one run of its ML backend, with progress "
        "and per-image errors.",
    )
    def get(self, request: Request, project_id: int, run_id: int) -> Response:
        project = selectors.project_for_manager(request_user(request), project_id)
        run = project.prediction_runs.filter(pk=run_id).first()
        if run is None:
            raise NotFound("No such run of this project.")
        return Response(predictions.run_json(run))


class ProjectPredictionRunCancelApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=None,
        responses={200: PredictionRunDetailOut},
        description="Managers of the project only: cancels a queued or running run of its ML "
        "backend. A queued run never starts; a running one keeps the batch the backend is "
        "answering and stops before the next (a new run may start once it has stopped: "
        "until then prediction_run_active). 409 prediction_run_finished when the run is "
        "done, failed or canceled already.",
    )
    def post(self, request: Request, project_id: int, run_id: int) -> Response:
        user = request_user(request)
        project = selectors.project_for_manager(user, project_id)
        run = predictions.prediction_run_cancel(project=project, run_id=run_id, user=user)
        return Response(predictions.run_json(run))


class ImageSignedApi(APIView):
    """An image file for a holder of a signed link, with no credentials: what ML backends
    fetch. The link is bound to the image and expires after ML_IMAGE_URL_SECONDS."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        auth=[],
        parameters=[
            OpenApiParameter(
                "token", OpenApiTypes.STR, required=True, description="The link's signature."
            )
        ],
        responses={(200, "image/*"): bytes, 302: None, 403: ErrorOut, 404: ErrorOut},
        description="The image's file for whoever holds a link the server signed for an ML "
        "backend (no credentials); 403 when the signature is wrong, for another image or "
        "expired; 404 when the image is gone. May answer 302 to a presigned bucket URL.",
    )
    def get(self, request: Request, image_id: int) -> HttpResponseBase:
        problem = image_signed_check(image_id, request.query_params.get("token", ""))
        if problem:
            raise Forbidden(problem, code="bad_signature")
        image = Image.objects.filter(pk=image_id, status=ImageStatus.READY).first()
        if image is None or not image.file.name:
            raise NotFound("No such image.")
        name = image.file.name
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        url = storage.presigned_url(name, content_type=content_type)
        if url is not None:
            redirect = HttpResponseRedirect(url)
            redirect["Cache-Control"] = "private, no-store"
            return redirect
        try:
            stored = default_storage.open(name, "rb")
        except FileNotFoundError:
            raise NotFound("The image's file is missing from storage.") from None
        response = FileResponse(stored, content_type=content_type)
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response
