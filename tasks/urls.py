from django.urls import path

from tasks import apis, prediction_apis

urlpatterns = [
    # The worker's hot path first: Django tries the patterns in order, and these two are
    # most of the API's requests.
    path(
        "projects/<int:project_id>/assignments/next/",
        apis.AssignmentNextApi.as_view(),
        name="assignment-next",
    ),
    path(
        "assignments/<int:assignment_id>/submit/",
        apis.AssignmentSubmitApi.as_view(),
        name="assignment-submit",
    ),
    path("projects/", apis.ProjectListApi.as_view(), name="projects"),
    path("projects/<int:project_id>/", apis.ProjectDetailApi.as_view(), name="project"),
    path("projects/<int:project_id>/start/", apis.ProjectStartApi.as_view(), name="project-start"),
    path("projects/<int:project_id>/pause/", apis.ProjectPauseApi.as_view(), name="project-pause"),
    path(
        "projects/<int:project_id>/images/", apis.ProjectImagesApi.as_view(), name="project-images"
    ),
    path(
        "projects/<int:project_id>/images/<int:image_id>/",
        apis.ProjectImageApi.as_view(),
        name="project-image",
    ),
    path(
        "projects/<int:project_id>/images/import/",
        apis.ProjectImageImportApi.as_view(),
        name="project-images-import",
    ),
    path(
        "projects/<int:project_id>/images/import/<int:import_id>/",
        apis.ProjectImageImportDetailApi.as_view(),
        name="project-images-import-detail",
    ),
    path(
        "projects/<int:project_id>/progress/",
        apis.ProjectProgressApi.as_view(),
        name="project-progress",
    ),
    path(
        "projects/<int:project_id>/tasks/stalled/",
        apis.ProjectStalledApi.as_view(),
        name="project-stalled-tasks",
    ),
    path(
        "projects/<int:project_id>/throughput/",
        apis.ProjectThroughputApi.as_view(),
        name="project-throughput",
    ),
    path(
        "projects/<int:project_id>/clients/",
        apis.ProjectClientsApi.as_view(),
        name="project-clients",
    ),
    path(
        "projects/<int:project_id>/predictions/",
        prediction_apis.ProjectPredictionsApi.as_view(),
        name="project-predictions",
    ),
    path(
        "projects/<int:project_id>/predictions/file/",
        prediction_apis.ProjectPredictionsFileApi.as_view(),
        name="project-predictions-file",
    ),
    path(
        "projects/<int:project_id>/predictions/run/",
        prediction_apis.ProjectPredictionRunApi.as_view(),
        name="project-predictions-run",
    ),
    path(
        "projects/<int:project_id>/predictions/runs/<int:run_id>/",
        prediction_apis.ProjectPredictionRunDetailApi.as_view(),
        name="project-predictions-run-detail",
    ),
    path(
        "projects/<int:project_id>/predictions/runs/<int:run_id>/cancel/",
        prediction_apis.ProjectPredictionRunCancelApi.as_view(),
        name="project-predictions-run-cancel",
    ),
    path(
        "images/<int:image_id>/signed/",
        prediction_apis.ImageSignedApi.as_view(),
        name="image-signed",
    ),
    path("images/<int:image_id>/file/", apis.ImageFileApi.as_view(), name="image-file"),
    path(
        "images/<int:image_id>/thumbnail/", apis.ImageThumbnailApi.as_view(), name="image-thumbnail"
    ),
    path(
        "assignments/<int:assignment_id>/skip/",
        apis.AssignmentSkipApi.as_view(),
        name="assignment-skip",
    ),
    path("me/assignments/", apis.MyAssignmentsApi.as_view(), name="my-assignments"),
]
