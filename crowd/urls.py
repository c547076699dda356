"""Root URLs: the API under /api/v1/, its schema and docs, health, admin and the pages."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from crowd.health import healthz

api_v1 = [
    path("", include("tasks.urls")),  # first: it begins with the worker's hot path
    path("", include("crowd.api_urls")),
    path("", include("qa.urls")),
    path("", include("payouts.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (?script), not inline.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="crowd/redoc.html"),
        name="api-redoc",
    ),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]

handler404 = "crowd.errors.not_found"
handler500 = "crowd.errors.server_error"
