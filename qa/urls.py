from django.urls import path

from qa import apis
from qa.exports import apis as export_apis
from qa.prelabel_effect import ProjectPrelabelEffectApi

urlpatterns = [
    path("projects/<int:project_id>/gold/", apis.GoldApi.as_view(), name="project-gold"),
    path(
        "projects/<int:project_id>/gold/bulk/",
        apis.GoldBulkApi.as_view(),
        name="project-gold-bulk",
    ),
    path(
        "projects/<int:project_id>/gold/file/",
        apis.GoldFileApi.as_view(),
        name="project-gold-file",
    ),
    path(
        "projects/<int:project_id>/gold/<int:image_id>/",
        apis.GoldDetailApi.as_view(),
        name="project-gold-detail",
    ),
    path(
        "projects/<int:project_id>/workers/",
        apis.ProjectWorkersApi.as_view(),
        name="project-workers",
    ),
    path(
        "projects/<int:project_id>/workers/<int:worker_id>/",
        apis.ProjectWorkerApi.as_view(),
        name="project-worker",
    ),
    path(
        "projects/<int:project_id>/workers/<int:worker_id>/suspend/",
        apis.WorkerSuspendApi.as_view(),
        name="project-worker-suspend",
    ),
    path(
        "projects/<int:project_id>/workers/<int:worker_id>/reinstate/",
        apis.WorkerReinstateApi.as_view(),
        name="project-worker-reinstate",
    ),
    path(
        "projects/<int:project_id>/agreement/",
        apis.ProjectAgreementApi.as_view(),
        name="project-agreement",
    ),
    path(
        "projects/<int:project_id>/models/",
        apis.ProjectModelsApi.as_view(),
        name="project-models",
    ),
    path(
        "projects/<int:project_id>/auto-accept/",
        apis.ProjectAutoAcceptApi.as_view(),
        name="project-auto-accept",
    ),
    path(
        "projects/<int:project_id>/auto-accept/reopen/",
        apis.ProjectAutoAcceptReopenApi.as_view(),
        name="project-auto-accept-reopen",
    ),
    path(
        "projects/<int:project_id>/consensus/",
        apis.ProjectConsensusApi.as_view(),
        name="project-consensus",
    ),
    path(
        "projects/<int:project_id>/tasks/<int:task_id>/reference/",
        apis.TaskReferenceApi.as_view(),
        name="task-reference",
    ),
    path(
        "projects/<int:project_id>/consensus/results/",
        apis.ProjectConsensusResultsApi.as_view(),
        name="project-consensus-results",
    ),
    path(
        "projects/<int:project_id>/prelabels/effect/",
        ProjectPrelabelEffectApi.as_view(),
        name="project-prelabel-effect",
    ),
    path(
        "projects/<int:project_id>/me/",
        apis.MyProjectStatusApi.as_view(),
        name="project-my-status",
    ),
    path(
        "projects/<int:project_id>/exports/",
        export_apis.ProjectExportsApi.as_view(),
        name="project-exports",
    ),
    # Every version the caller may download; the routes of one version follow.
    path("exports/", export_apis.ExportsApi.as_view(), name="exports"),
    path("exports/<int:export_id>/", export_apis.ExportApi.as_view(), name="export"),
    path(
        "exports/<int:export_id>/retry/",
        export_apis.ExportRetryApi.as_view(),
        name="export-retry",
    ),
    path(
        "exports/<int:export_id>/download/",
        export_apis.ExportDownloadApi.as_view(),
        name="export-download",
    ),
]
