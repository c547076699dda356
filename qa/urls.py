from django.urls import path

from qa import apis

urlpatterns = [
    path("projects/<int:project_id>/gold/", apis.GoldApi.as_view(), name="project-gold"),
    path(
        "projects/<int:project_id>/gold/<int:image_id>/",
        apis.GoldDetailApi.as_view(),
        name="project-gold-detail",
    ),
]
