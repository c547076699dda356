"""Quality over HTTP: gold answers, workers' scores and status, agreement (managers); a
worker's own standing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiTypes,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd.apis import MoneyOut
from crowd.errors import NotFound
from crowd.fields import (
    ID_MAX,
    ID_MIN,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    messages,
)
from crowd.models import Role
from crowd.pagination import PAGE_PARAMETERS, page_of, paginate
from crowd.parsers import JSONParser
from crowd.permissions import IsManager, IsManagerOrClient, IsWorker, request_user
from crowd.schema import AnnotationsField
from crowd.uploads import (
    Import,
    format_field,
    json_body_import,
    json_file_import,
    strict_field,
)
from qa import auto_accept, merge, model_scores, selectors, services
from qa.models import ConsensusRun, GoldAnswer
from tasks.models import Task
from tasks.prediction_formats import FORMATS
from tasks.selectors import project_for_manager, project_for_user, project_for_worker

# --- Output shapes (what the views render, for the schema) ------------------------------------
# Statuses, kinds and sources are documented as strings naming their values rather than as
# enums: the same field names carry other value sets elsewhere in the API.


def _text(help_text: str = "", **kwargs: Any) -> serializers.CharField:
    return serializers.CharField(help_text=help_text, **kwargs)


def _rate(help_text: str, **kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, help_text=help_text, **kwargs)


class GoldOut(serializers.Serializer):
    image = serializers.IntegerField(help_text="The image the gold answer is for.")
    annotations = AnnotationsField(help_text="The expert answer, in full-image pixels.")
    tasks = serializers.IntegerField(help_text="The image's tasks (its tiles), all gold now.")
    updated_at = serializers.DateTimeField()


class GoldSetOut(GoldOut):
    created = serializers.BooleanField(
        help_text="True when the image had no gold answer before; false when it was replaced."
    )


class GoldDetailsOut(serializers.Serializer):
    """How an answer compared with the gold answer: counts and rates, no coordinates."""

    kind = _text("The project's kind.", required=False)
    score = serializers.FloatField(required=False)
    precision = serializers.FloatField(required=False)
    recall = serializers.FloatField(required=False)
    f1 = serializers.FloatField(required=False)
    mean_iou = _rate("Mean IoU of the same-label matches (not for keypoints).", required=False)
    mean_oks = _rate("keypoints: mean OKS of the same-label matches.", required=False)
    matched = serializers.IntegerField(required=False)
    missed = serializers.IntegerField(required=False)
    extra = serializers.IntegerField(required=False)
    wrong_label = serializers.IntegerField(required=False)
    gold_objects = serializers.IntegerField(required=False)
    answer_objects = serializers.IntegerField(required=False)


class GoldResultOut(serializers.Serializer):
    assignment = serializers.IntegerField()
    image = serializers.IntegerField()
    score = serializers.FloatField()
    passed = serializers.BooleanField()
    exam = serializers.BooleanField(help_text="Whether the answer was part of the exam.")
    details = GoldDetailsOut()
    created_at = serializers.DateTimeField()


class TooFastFlag(serializers.Serializer):
    signal = _text("too_fast")
    detail = _text("The evidence, in words.")
    worker_median_ms = serializers.IntegerField()
    project_median_ms = serializers.IntegerField()
    answers = serializers.IntegerField(help_text="The worker's timed answers looked at.")


class IdenticalAnswersFlag(serializers.Serializer):
    signal = _text("identical_answers")
    detail = _text("The evidence, in words.")
    share = serializers.FloatField(help_text="Share of their answers that are the same one.")
    answers = serializers.IntegerField(help_text="The worker's answers looked at.")
    answer = AnnotationsField(allow_null=True, help_text="The answer they keep giving.")


class EmptyOnGoldFlag(serializers.Serializer):
    signal = _text("empty_on_gold")
    detail = _text("The evidence, in words.")
    count = serializers.IntegerField(help_text="Gold images with objects they marked nothing on.")
    of = serializers.IntegerField(help_text="Gold images with objects they answered.")


WorkerFlag = PolymorphicProxySerializer(
    component_name="WorkerFlag",
    serializers={
        "too_fast": TooFastFlag,
        "identical_answers": IdenticalAnswersFlag,
        "empty_on_gold": EmptyOnGoldFlag,
    },
    resource_type_field_name="signal",
    many=True,
)


class WorkerModelOut(serializers.Serializer):
    method = _text("The model that learnt it: dawid_skene, box_em, polygon_em or keypoint_em.")
    answers = serializers.IntegerField(help_text="Answers of theirs the model rests on.")
    accuracy = serializers.FloatField(
        help_text="Expected accuracy, 0..1: classification, the chance their label is right; "
        "shapes, the F1 of their answer to a typical picture. It stands in for agreement in "
        "`score`."
    )
    recall = serializers.FloatField(
        required=False, help_text="Shapes: chance they mark an object that is there."
    )
    false_marks = serializers.FloatField(
        required=False, help_text="Shapes: objects a picture they draw where nothing is."
    )
    noise = serializers.FloatField(
        required=False,
        help_text="Shapes: spread of their placement (boxes: root mean square distance of their "
        "edges from the merged box, a share of its side; polygons: of their outline around its "
        "bias, a share of the radius; keypoints: in units of the OKS tolerance).",
    )
    label_accuracy = serializers.FloatField(
        required=False, help_text="Boxes, polygons: chance their label of an object is right."
    )
    shift = serializers.ListField(
        child=serializers.FloatField(),
        required=False,
        help_text="Boxes: systematic shift of each edge (x0, y0, x1, y1), a share of the side.",
    )
    confusion = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        required=False,
        help_text="confusion[k][l]: chance they give labels[l] to an object of labels[k].",
    )
    labels = serializers.ListField(
        child=_text(), required=False, help_text="The labels `confusion` is over, in order."
    )
    bias = serializers.FloatField(
        required=False,
        help_text="Polygons: mean outward offset of their outline (negative: inward), a share "
        "of the object's radius.",
    )
    swaps = serializers.FloatField(
        required=False,
        help_text="Keypoints: chance an instance of theirs is mirrored left to right.",
    )
    visibility = serializers.FloatField(
        required=False, help_text="Keypoints: share of their keypoints with the right visibility."
    )


class WorkerOut(serializers.Serializer):
    worker = serializers.IntegerField()
    username = _text()
    score = serializers.FloatField(
        help_text="Reliability from gold and agreement (or, once fitted, the worker model), 0..1."
    )
    gold_seen = serializers.IntegerField()
    gold_passed = serializers.IntegerField()
    agreement = _rate("Mean agreement with the consensus of completed tasks, 0..1.")
    agreement_seen = serializers.IntegerField()
    status = _text("exam, probation, active or suspended.")
    status_reason = _text("Why the worker is suspended (or on exam), or null.", allow_null=True)
    suspended_at = serializers.DateTimeField(allow_null=True)
    suspended_by = _text("The manager who suspended them, or null.", allow_null=True)
    submitted = serializers.IntegerField(help_text="Answers given in this project.")
    earned = MoneyOut(help_text="What the project paid them.")
    flags = WorkerFlag
    model = WorkerModelOut(
        allow_null=True,
        help_text="What the project's worker model, learnt from all answers by the last "
        "consensus run or refit, says of them; null before it has been fitted.",
    )


class ExamOut(serializers.Serializer):
    seen = serializers.IntegerField(help_text="Exam tasks the worker has answered.")
    size = serializers.IntegerField(help_text="Exam tasks the project has.")


class WorkerDetailOut(WorkerOut):
    exam = ExamOut(allow_null=True, help_text="Null when the project has no exam.")
    gold_history = GoldResultOut(many=True, help_text="Their gold results, newest first.")


class MyProjectStatusOut(serializers.Serializer):
    project = serializers.IntegerField()
    status = _text("exam, probation, active or suspended.")
    reason = _text("Why the worker may not work here, or null.", allow_null=True)
    score = _rate("The score shown to the worker, or null until it is known.")


# Agreement: one shape for classification, one for the kinds of shapes.
class KappaPairOut(serializers.Serializer):
    workers = serializers.ListField(child=serializers.IntegerField())
    usernames = serializers.ListField(child=_text(allow_null=True))
    kappa = _rate("Cohen's kappa of the pair, null when undefined.")
    tasks = serializers.IntegerField(help_text="Tasks both answered.")


class KappaWorkerOut(serializers.Serializer):
    worker = serializers.IntegerField()
    username = _text(allow_null=True)
    mean_kappa = _rate("Mean of the worker's pairwise kappas.")
    pairs = serializers.IntegerField()


class ClassificationAgreementOut(serializers.Serializer):
    kind = _text("classification")
    tasks = serializers.IntegerField(help_text="Tasks with two answers or more.")
    answers = serializers.IntegerField()
    fleiss_kappa = _rate("Null without tasks, or when undefined.")
    krippendorff_alpha = _rate("Null without tasks, or when undefined.")
    mean_pairwise_kappa = _rate("Null without pairs.")
    pairs = KappaPairOut(many=True)
    workers = KappaWorkerOut(many=True)


class ConfusionOut(serializers.Serializer):
    labels = serializers.ListField(
        child=_text(), help_text="Row and column names: the labels, then (nothing)."
    )
    nothing = serializers.IntegerField(help_text="Index of (nothing): an object one missed.")
    matrix = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="Coincidences, rows and columns in the order of labels.",
    )


class ShapeWorkerOut(serializers.Serializer):
    worker = serializers.IntegerField()
    username = _text(allow_null=True)
    mean_f1 = _rate("Mean F1 of the worker's answers against others' to the same task.")
    pairs = serializers.IntegerField()


class ShapeAgreementOut(serializers.Serializer):
    kind = _text("bbox, polygon or keypoints.")
    tasks = serializers.IntegerField()
    mean_pairwise_iou = _rate("Null without matches.")
    mean_pairwise_f1 = _rate("Null without pairs.")
    confusion = ConfusionOut()
    workers = ShapeWorkerOut(many=True)


Agreement = PolymorphicProxySerializer(
    component_name="Agreement",
    serializers=[ClassificationAgreementOut, ShapeAgreementOut],
    resource_type_field_name=None,
)


class ConsensusParamsOut(serializers.Serializer):
    quorum = serializers.FloatField(
        required=False, help_text="Shapes merged by a fixed quorum (before a worker model)."
    )
    model = serializers.CharField(
        required=False,
        help_text="Shapes merged by the project's worker model: box_em, polygon_em or keypoint_em.",
    )
    iou_threshold = serializers.FloatField(required=False)


class ConsensusRunOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = _text("queued, running, done or failed.")
    method = _text("The method that merged the answers, once known.", allow_null=True)
    params = ConsensusParamsOut(help_text="Empty until the run has started.")
    images_total = serializers.IntegerField()
    images_done = serializers.IntegerField()
    error = _text("Why the run failed, or null.", allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class TaskReferenceOut(serializers.Serializer):
    task = serializers.IntegerField()
    # The metaclass takes declared fields off the class, so this shadows no Field attribute.
    source = _text("gold or consensus.")  # type: ignore[assignment]
    annotations = AnnotationsField()
    confidence = _rate("The consensus's confidence; null for gold or without answers.")
    answers = serializers.IntegerField(
        allow_null=True, help_text="Answers merged into the consensus; null for gold."
    )


class ContributorAnswerOut(serializers.Serializer):
    assignment = serializers.IntegerField()
    worker = serializers.IntegerField()
    label = _text()  # type: ignore[assignment]  # a declared field, as source above
    weight = serializers.FloatField(help_text="The worker's vote weight.")


class ContributorModelOut(serializers.Serializer):
    weight = serializers.FloatField(help_text="The model's vote weight.")
    agreed = serializers.IntegerField(help_text="Labels of the image it agreed with.")
    rests_on_model = serializers.IntegerField(help_text="Labels it and at most one worker gave.")
    label = _text("Classification: its label.", required=False)  # type: ignore[assignment]


class ContributorsOut(serializers.Serializer):
    """Who contributed what: ``answers`` (classification), ``weights`` and ``objects``
    (shapes), or ``gold``."""

    answers = ContributorAnswerOut(many=True, required=False)
    weights = serializers.DictField(
        child=serializers.FloatField(), required=False, help_text="Worker id -> vote weight."
    )
    objects = serializers.ListField(
        child=serializers.ListField(child=serializers.ListField(child=serializers.IntegerField())),
        required=False,
        help_text="Per merged object, its members as [assignment, item index] pairs "
        "(assignment 0: the project's model).",
    )
    model = ContributorModelOut(
        required=False,
        help_text="When the project's model voted: its weight, whether it agreed (objects it "
        "shared with the consensus) and how many labels rest on it (it and at most one "
        "worker); classification also its label.",
    )
    gold = serializers.BooleanField(required=False, help_text="The image's gold answer.")


class ConsensusResultOut(serializers.Serializer):
    image = serializers.IntegerField()
    method = _text("How the image's answers were merged (gold: the gold answer).")
    annotations = AnnotationsField(help_text="The merged objects, with score and num_votes.")
    confidence = _rate("0..1, null when not known.")
    votes = serializers.IntegerField()
    low_confidence = serializers.BooleanField()
    contributors = ContributorsOut(required=False, help_text="Managers only.")


# --- Gold -------------------------------------------------------------------------------------


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


class AnnotationListField(AnnotationsField):
    """A list of annotation objects. Its items are checked by the serializer, which names a
    fault by its place (``annotations[0]``), as the checks of the items' content do."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, list):
            self.fail("not_a_list")
        return super().to_internal_value(data)


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

    @extend_schema(
        request=GoldIn,
        responses={201: GoldSetOut},
        description="Set an image's gold answer (managers of the project): every task of the "
        "image becomes a gold task. Sending it again replaces the answer; `created` tells "
        "which happened.",
    )
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
            {**gold_json(gold, gold.image.tasks.count()), "created": created},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        operation_id="projects_gold_list",
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(GoldOut, "PaginatedGoldList")},
        description="The project's gold answers, oldest first, paginated (managers of the "
        "project).",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return paginate(
            request,
            self,
            selectors.gold_list(project),
            lambda page: [gold_json(g, g.task_count) for g in page],
        )


class GoldItemIn(serializers.Serializer):
    image = serializers.IntegerField(
        required=False, help_text="The image's id, as the image list shows it; or file_name."
    )
    file_name = serializers.CharField(
        required=False, help_text="The image's file name (matched as predictions' are)."
    )
    annotations = AnnotationsField(
        help_text="Items as in an answer of the project's kind, in full-image pixels."
    )


class GoldImportIn(serializers.Serializer):
    gold = GoldItemIn(many=True)
    strict = strict_field("item")


class GoldFileIn(serializers.Serializer):
    file = serializers.FileField(
        help_text="A JSON file: ours (as the JSON body), a COCO dataset (images matched by "
        "file_name) or results list (image_id and category_id as this server numbers them), "
        "or Label Studio tasks (images matched by the file name of data.image; each task's "
        "one annotation is its gold)."
    )
    format = format_field(FORMATS)
    strict = strict_field("item")


class RejectedGoldOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="The item's position in its list of the input.")
    item = serializers.CharField(help_text='Where it is, e.g. "gold[3]", "images[0]".')
    error = serializers.CharField()


class GoldImportOut(serializers.Serializer):
    created = serializers.IntegerField(help_text="Images that had no gold answer and have one.")
    replaced = serializers.IntegerField(help_text="Images whose gold answer was replaced.")
    rejected = RejectedGoldOut(many=True, help_text="strict=false: the items not stored.")


_GOLD_IMPORT_RULES = (
    "Each item is checked as POST gold/ checks one (labels, bounds, the kind's rules), scores "
    "are ignored, and each image becomes gold as POST gold/ makes it (an image with gold has "
    "it replaced). 400 invalid_gold names every invalid item and stores nothing (strict, the "
    "default); with strict=false the valid ones are stored and the others listed under "
    "rejected."
)


def _gold_imported(project: Any, user: Any, read: Import) -> Response:
    report = services.gold_import(
        project=project,
        data=read.data,
        user=user,
        format_name=read.format_name,
        strict=read.strict,
    )
    return Response(report, status=status.HTTP_201_CREATED)


class GoldBulkApi(APIView):
    permission_classes = [IsManager]
    parser_classes = [JSONParser]  # files go to .../gold/file/

    @extend_schema(
        request=GoldImportIn,
        responses={201: GoldImportOut},
        description="Managers of the project only: makes many images gold at once, each "
        "named by id or file name, in a JSON body up to DATA_UPLOAD_MAX_MEMORY_SIZE (larger "
        f"sets, and COCO or Label Studio files, go to .../gold/file/). {_GOLD_IMPORT_RULES}",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        read = json_body_import(request, shape='{"gold": [...]}', code="invalid_gold_file")
        return _gold_imported(project, user, read)


class GoldFileApi(APIView):
    permission_classes = [IsManager]
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="projects_gold_file_create",
        request={"multipart/form-data": GoldFileIn},
        responses={201: GoldImportOut},
        description="Managers of the project only: makes many images gold at once from a file "
        "(up to MAX_PREDICTIONS_BYTES) in any format predictions/file/ reads, by the same "
        'readers: ours ({"gold": [{"image" or "file_name", "annotations"}]}, as gold/bulk/ '
        "takes it), COCO (images matched by file_name), or Label Studio tasks (each task's "
        f"one annotation, never its predictions). {_GOLD_IMPORT_RULES} A file that cannot "
        "be read (not JSON, an unknown shape) is a 400 invalid_gold_file either way.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        read = json_file_import(
            request,
            limit=settings.MAX_PREDICTIONS_BYTES,
            what="gold file",
            formats=FORMATS,
        )
        return _gold_imported(project, user, read)


class GoldDetailApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={204: None},
        description="Remove an image's gold answer (managers of the project): its tasks are "
        "ordinary tasks again.",
    )
    def delete(self, request: Request, project_id: int, image_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        services.gold_remove(project=project, image_id=image_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Workers ----------------------------------------------------------------------------------


class ProjectWorkersApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        operation_id="projects_workers_list",
        responses={200: WorkerOut(many=True)},
        description="Every worker who has worked on the project, with score, status, earnings "
        "and spam signals, lowest score first (managers of the project). A bare array, as "
        "the public contract fixes it: not paginated, no `?limit`/`?offset`.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return Response(selectors.project_workers(project))


class ProjectWorkerApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: WorkerDetailOut},
        description="One worker of the project as the worker list shows them, plus their "
        "exam progress and recent gold results (managers of the project); 404 if they have "
        "not worked on it.",
    )
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

    @extend_schema(
        request=SuspendIn,
        responses={200: WorkerDetailOut},
        description="Suspend a worker from the project (managers of the project): they get "
        "no more tasks and their answers stop counting in consensus. Answers the worker as "
        "`GET .../workers/{worker_id}/` does.",
    )
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

    @extend_schema(
        request=None,
        responses={200: WorkerDetailOut},
        description="Lift a worker's suspension (managers of the project); 409 if they are "
        "not suspended. Answers the worker as `GET .../workers/{worker_id}/` does.",
    )
    def post(self, request: Request, project_id: int, worker_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        services.worker_reinstate(project=project, worker_id=worker_id, by=user)
        return Response(selectors.project_worker(project, worker_id))


class ModelGoldOut(serializers.Serializer):
    matched = serializers.IntegerField(help_text="Gold objects the model found, label right.")
    missed = serializers.IntegerField(help_text="Gold objects it did not find.")
    extra = serializers.IntegerField(help_text="Objects it gave where gold has none.")
    wrong_label = serializers.IntegerField(help_text="Gold objects found with another label.")
    min_score = serializers.FloatField(
        help_text="Objects scoring below this were not part of its answer."
    )
    recall = _rate("matched over the gold's objects.")
    precision = _rate("matched over its answer's objects.")


class CalibrationBinOut(serializers.Serializer):
    lower = serializers.FloatField()
    upper = serializers.FloatField()
    count = serializers.IntegerField(help_text="Predicted objects scoring in [lower, upper).")
    mean_score = _rate("Their mean score.")
    accuracy = _rate("The share of them that are right.")


class CalibrationOut(serializers.Serializer):
    objects = serializers.IntegerField(
        help_text="Scored objects of its predictions of gold images, whatever their score."
    )
    ece = _rate(
        "Expected calibration error: mean |score - accuracy| over the bins, weighted by "
        "their objects."
    )
    mce = _rate("The largest gap of a bin.")
    brier = _rate("Mean squared difference of score and outcome.")
    mean_score = _rate("Mean score of all objects.")
    accuracy = _rate("Share of all objects that are right; below mean_score: over-confident.")
    bins = CalibrationBinOut(many=True)


class ModelVersionOut(serializers.Serializer):
    model_version = _text()
    current = serializers.BooleanField(help_text="The version of the newest prediction.")
    votes = serializers.BooleanField(help_text="Whether it counts in consensus now.")
    not_voting_reason = _text("Why it does not vote, or null.", allow_null=True)
    gold_seen = serializers.IntegerField(help_text="Gold images it has a prediction of.")
    gold_passed = serializers.IntegerField(help_text="Of them, scored at gold_pass_score.")
    gold_score = _rate("Mean gold score, as a worker's answers are scored.")
    score = serializers.FloatField(help_text="Reliability, as a worker's score is computed.")
    weight = serializers.FloatField(help_text="Its weight in consensus, as a worker's.")
    gold = ModelGoldOut()
    calibration = CalibrationOut()
    model = WorkerModelOut(
        allow_null=True,
        help_text="What the project's worker model learnt of it, as of a worker, once a fit "
        "counted it; null before.",
    )
    computed_at = serializers.DateTimeField()


class ProjectModelsOut(serializers.Serializer):
    current_version = _text("The version that votes when allowed; null without predictions.",
                            allow_null=True)  # fmt: skip
    min_score = serializers.FloatField(help_text="The object score a model's answer is cut at.")
    minimum_accuracy = serializers.FloatField(
        help_text="A model confidently below this gold accuracy does not vote."
    )
    versions = ModelVersionOut(many=True, help_text="Newest first.")


class ProjectModelsApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: ProjectModelsOut},
        description="Each model version with predictions in the project, scored on the gold "
        "images like a worker (gold score, reliability, weight in consensus) with the "
        "calibration of its scores (managers of the project).",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return Response(model_scores.project_models(project))


class AutoAcceptSpotChecksOut(serializers.Serializer):
    checked = serializers.IntegerField(
        help_text="Spot-checked images at or above the threshold that people answered."
    )
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    lower_bound = serializers.FloatField()
    upper_bound = serializers.FloatField(
        help_text="Under the target: auto-accept stops (the spot-checks show it falls short)."
    )


class AutoAcceptSettingsOut(serializers.Serializer):
    target_accuracy = serializers.FloatField()
    confidence = serializers.FloatField()
    spot_check_rate = serializers.FloatField()
    min_checked = serializers.IntegerField()


class AutoAcceptOut(serializers.Serializer):
    settings = AutoAcceptSettingsOut(
        allow_null=True, help_text="The project's auto_accept with defaults; null: off."
    )
    enabled = serializers.BooleanField(help_text="Whether the model labels images alone now.")
    model_version = _text("The version calibrated.", allow_null=True)
    threshold = serializers.FloatField(
        allow_null=True, help_text="The lowest confidence that passes; null: none does."
    )
    reason = _text("Why auto-accept is off; null when it is on.", allow_null=True)
    images_checked = serializers.IntegerField(
        help_text="Human-checked images (gold or consensus) with a prediction of the version."
    )
    checked = serializers.IntegerField(help_text="Of them, at or above the threshold.")
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    lower_bound = serializers.FloatField(
        allow_null=True, help_text="One-sided Clopper-Pearson bound at the set confidence."
    )
    gold_images = serializers.IntegerField()
    consensus_run = serializers.IntegerField(allow_null=True)
    spot_checks = AutoAcceptSpotChecksOut(allow_null=True)
    images_auto_accepted = serializers.IntegerField(
        help_text="Images the model labelled alone (flagged machine_labelled in exports)."
    )
    computed_at = serializers.DateTimeField(allow_null=True)


class ProjectAutoAcceptApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: AutoAcceptOut},
        description="Auto-accept's calibration as last computed and the images the model "
        "labelled alone (managers of the project).",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return Response(auto_accept.project_auto_accept(project))

    @extend_schema(
        request=None,
        responses={202: AutoAcceptOut},
        description="Calibrate and apply again now, in a job (it also runs after predictions "
        "are stored, after a consensus run, and when the setting changes); nothing is queued "
        "while auto-accept is off.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        auto_accept.auto_accept_request(project.pk)
        return Response(auto_accept.project_auto_accept(project), status=status.HTTP_202_ACCEPTED)


MAX_REOPEN_IMAGES = 10_000


class AutoAcceptReopenIn(serializers.Serializer):
    images = serializers.ListField(
        child=StrictIntegerField(), min_length=1, max_length=MAX_REOPEN_IMAGES, required=False,
        help_text="Images the model labelled alone, to send back to the crowd.",
    )  # fmt: skip
    all = StrictBooleanField(
        required=False, help_text="true: every image the model labelled alone."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("images" in attrs) == bool(attrs.get("all")):
            raise serializers.ValidationError('Give either "images" or "all": true.')
        return attrs


class AutoAcceptReopenOut(serializers.Serializer):
    reopened = serializers.IntegerField(help_text="Images sent back to the crowd.")
    images_auto_accepted = serializers.IntegerField(help_text="Images the model still labels.")


class ProjectAutoAcceptReopenApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        request=AutoAcceptReopenIn,
        responses={200: AutoAcceptReopenOut},
        description="Managers of the project only: sends images the model labelled alone "
        "(auto-accept) back to the crowd: their tasks are open again with no answer, routed "
        "like any other, and auto-accept never labels them again. 400 naming the images "
        "that are not the project's or were not labelled by the model alone; nothing is "
        "reopened then.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_for_manager(request_user(request), project_id)
        body = AutoAcceptReopenIn(data=request.data)
        body.is_valid(raise_exception=True)
        return Response(
            auto_accept.auto_accepted_reopen(
                project=project, image_ids=body.validated_data.get("images")
            )
        )


class ProjectAgreementApi(APIView):
    permission_classes = [IsManager]

    @extend_schema(
        responses={200: Agreement},
        description="Inter-annotator agreement over the project's recently completed tasks "
        "(managers of the project): kappas per pair of workers for classification, IoU, F1 "
        "and a label confusion matrix for shapes.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        return Response(selectors.project_agreement(project))


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 2)


class MyProjectStatusApi(APIView):
    """A worker's own standing in a project: whether they may work, and why not."""

    permission_classes = [IsWorker]

    @extend_schema(
        responses={200: MyProjectStatusOut},
        description="The calling worker's standing in the project: their status, why they "
        "may not work if so, and their score (workers).",
    )
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

    @extend_schema(
        request=None,
        responses={202: ConsensusRunOut},
        description="Start computing the project's consensus (managers of the project). The "
        "run is queued and answered at once; follow it with GET.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_manager(user, project_id)
        run = merge.consensus_run_request(project=project, user=user)
        return Response(run_json(run), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={200: ConsensusRunOut},
        description="The project's latest consensus run, finished or not, as POST answers it "
        "(managers and the project's clients); 404 if none was ever started.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        run = selectors.consensus_run_last(project)
        if run is None:
            raise NotFound("This project has no consensus run yet.", code="no_consensus_run")
        return Response(run_json(run))


class TaskReferenceApi(APIView):
    """What a reviewer compares a task's answers with: gold, or the consensus so far."""

    permission_classes = [IsManager]

    @extend_schema(
        responses={200: TaskReferenceOut},
        description="What a reviewer compares a task's answers with (managers of the "
        "project): the gold answer of a gold task, else the consensus of its counted answers "
        "so far.",
    )
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

    @extend_schema(
        operation_id="projects_consensus_results_list",
        parameters=PAGE_PARAMETERS,
        responses={200: page_of(ConsensusResultOut, "PaginatedConsensusResultList")},
        description="The merged answer of each image in the latest finished consensus run, "
        "by image id, paginated (managers and the project's clients; only managers see "
        "`contributors`).",
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = project_for_user(user, project_id)
        manager = user.role == Role.MANAGER
        return paginate(
            request,
            self,
            merge.current_results(project).order_by("image_id"),
            lambda page: [
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
            ],
        )
